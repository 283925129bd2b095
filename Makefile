# smartmeter: `make demo` runs the appliance on the simulated meter, `make test` sets up and runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages whose servers the tests start for real: see tools/test-servers.

.PHONY: venv servers check-tree test lint demo bench fuzz clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements.dev.txt
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements.dev.txt
	touch $(STAMP)

servers:
	@sh tools/test-servers

lint: venv
	$(BIN)/ruff check app tests bench
	$(BIN)/mypy app

# Nothing built may be tracked: a committed venv breaks every clone on another machine or path.
check-tree:
	@built=$$(git ls-files 2>/dev/null | grep -E '(^|/)(\.venv|venv|node_modules|__pycache__|\.mypy_cache|\.ruff_cache|\.hypothesis|\.pytest_cache|demo-data)(/|$$)' | head -3); \
	if [ -n "$$built" ]; then echo "built files are tracked by git (e.g. $$built): git rm -r --cached them"; exit 1; fi

test: check-tree venv servers lint
	$(BIN)/python -m pytest -p no:cacheprovider -q --timeout=300 tests

demo: venv
	$(BIN)/python -m app.demo

bench: venv servers
	$(BIN)/python bench/run.py

# The fuzz targets of tests/test_fuzz.py, longer than in `make test` (FUZZ_EXAMPLES per target).
FUZZ_EXAMPLES ?= 20000
fuzz: venv
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -p no:cacheprovider -q --timeout=0 tests/test_fuzz.py

clean:
	rm -rf $(VENV) demo-data .mypy_cache .ruff_cache .hypothesis
