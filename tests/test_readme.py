"""README.md stays complete while it gets shorter: every key, flag, /api path and MCP tool is named in it,
and every relative link points to a file or heading that exists."""

from __future__ import annotations

import argparse
import re
import unicodedata
from pathlib import Path

import pytest

from tests.conftest import ROOT

README = ROOT / "README.md"
_SEC_CALL = re.compile(r'\bsec\.[a-z_]+\(\s*"([a-z][a-z0-9_]*)"')
_SAMPLE_KEY = re.compile(r"^[;#]?\s*([a-z][a-z0-9_]*)\s*=", re.MULTILINE)
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _readme() -> str:
    return README.read_text(encoding="utf-8")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\[|\]", "", heading.strip().lower())
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a markdown text (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = _slug(line.lstrip("#"))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def config_keys() -> set[str]:
    """Every key a section parser reads (a literal first argument of sec.<reader>("key")), and every key
    of config.sample.ini, commented-out ones included."""
    keys: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        keys.update(_SEC_CALL.findall(path.read_text(encoding="utf-8")))
    from app import config

    for section_keys in config._section_keys().values():
        keys.update(section_keys)
    keys.update(_SAMPLE_KEY.findall((ROOT / "app" / "config.sample.ini").read_text(encoding="utf-8")))
    return keys


class _Built(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser built")
        self.parser = parser


def cli_flags() -> set[str]:
    """Every long option of app/main.py's argument parser (caught as parse_args is called on it)."""
    from app import main

    def catch(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        raise _Built(self)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(_Built) as built:
            main.parse_args([])
    return {opt for action in built.value.parser._actions for opt in action.option_strings
            if opt.startswith("--") and opt != "--help"}


def test_the_key_collection_finds_keys() -> None:
    keys = config_keys()
    assert {"source", "on_when", "spool_dir", "tasmota_map", "min_daily", "deadman", "unit_id"} <= keys
    assert len(keys) > 120


@pytest.mark.parametrize("key", sorted(config_keys()))
def test_every_config_key_is_named(key: str) -> None:
    assert re.search(rf"(?<![A-Za-z0-9_]){re.escape(key)}(?![A-Za-z0-9_])", _readme()), \
        f"config key {key!r} is not named in README.md"


def test_every_cli_flag_is_named() -> None:
    text = _readme()
    missing = sorted(f for f in cli_flags() if not re.search(rf"{re.escape(f)}(?![a-z-])", text))
    assert not missing, f"flags not named in README.md: {missing}"


def test_every_api_path_is_named() -> None:
    from app.web.openapi import openapi_document

    text = _readme()
    missing = []
    for path in openapi_document(True)["paths"]:
        pattern = re.sub(r"\\\{[a-z_]+\\\}", r"[A-Za-z0-9_{}.-]+", re.escape(path))
        if not re.search(rf"{pattern}(?![A-Za-z0-9/-])", text):
            missing.append(path)
    assert not missing, f"/api paths of the OpenAPI document not named in README.md: {missing}"


def test_every_mcp_tool_is_named() -> None:
    from app.web.mcp import TOOL_NAMES

    text = _readme()
    assert TOOL_NAMES and not [t for t in TOOL_NAMES if t not in text]


@pytest.mark.parametrize("doc", ["README.md", *sorted(p.relative_to(ROOT).as_posix()
                                                          for p in (ROOT / "docs").glob("*.md"))])
def test_relative_links_resolve(doc: str) -> None:
    path = ROOT / doc
    text = path.read_text(encoding="utf-8")
    bad = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target}: no file {file_part}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text(encoding="utf-8")):
            bad.append(f"{target}: no heading #{anchor} in {dest.name}")
    assert not bad, f"broken links in {doc}: {bad}"


def test_slugs_follow_github() -> None:
    assert _slug("Several meters: `[meter:NAME]`, Modbus, roles") == "several-meters-metername-modbus-roles"
    assert _slug("Install, update, uninstall") == "install-update-uninstall"
    assert anchors("# A\n## A\n```\n# not\n```\n") == {"a", "a-1"}


def test_quick_start_is_near_the_top() -> None:
    lines = _readme().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("## Quick start"))
    assert start < 60, "the quick start should be within the first screens"


def _quick_start_block() -> str:
    text = _readme()
    start = text.index("## Quick start")
    body = text[start:text.index("\n## ", start + 5)]
    return body[body.index("```\n") + 4:body.index("\n```", body.index("```\n") + 4)]


def test_the_quick_start_works_when_pasted(tmp_path: Path) -> None:
    """The quick start's config (the sample install.sh copies + the block it appends) passes --check-config,
    and a sunny quarter-hour replayed through it gives CSV rows in which the boiler relay switches on.
    Only /var/lib/smartmeter is moved into a temp dir (the test does not write to this machine)."""
    import csv
    import os
    import subprocess
    import sys
    from datetime import datetime

    from app.simulator import BRUSSELS, SimulatedMeter

    block = _quick_start_block()
    assert block.count("\n") <= 20, "the quick start should stay about 15 lines"
    appended = block[block.index("<<'INI'\n") + 8:block.index("\nINI\n")] + "\n"
    assert "[relay:boiler]" in appended
    data = tmp_path / "var-lib-smartmeter"
    ini = tmp_path / "smartmeter.ini"
    sample = (ROOT / "config.sample.ini").read_text(encoding="utf-8")
    ini.write_text((sample + appended).replace("/var/lib/smartmeter", str(data)), encoding="utf-8")
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock")
    main = str(ROOT / "app" / "main.py")
    checked = subprocess.run([sys.executable, main, "-c", str(ini), "--check-config"], capture_output=True,
                             text=True, timeout=120, env=env, check=False)
    assert checked.returncode == 0, checked.stderr
    assert '"relay:boiler"' in checked.stdout

    capture = tmp_path / "capture.txt"
    meter = SimulatedMeter(datetime(2026, 6, 21, 12, 0, tzinfo=BRUSSELS), step_s=1.0, seed=3)
    capture.write_bytes(b"".join(meter.telegrams(900)))
    replay = subprocess.run([sys.executable, main, "-c", str(ini), "--replay", str(capture), "--replay-speed", "0"],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    assert replay.returncode == 0, replay.stderr[-3000:]
    (day,) = sorted((data / "csv").glob("*.csv"))
    with day.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) >= 14 and "relay_boiler" in rows[0]
    assert {r["relay_boiler"] for r in rows} == {"0", "1"}, [r["relay_boiler"] for r in rows]
