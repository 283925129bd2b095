"""`pip install .` gives a working `smartmeter` command: a wheel built and installed into a fresh venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

from app import __version__
from tests.conftest import FIXTURES, ROOT

_SKIP = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*.pyc", ".mypy_cache", ".ruff_cache",
                               ".hypothesis", ".pytest_cache", "build", "dist", "*.egg-info", "demo-data",
                               "bench", "tests", "test-artifacts", "node_modules")


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, **kw)  # type: ignore[call-overload]


def test_dependencies_are_the_runtime_set_as_ranges() -> None:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = [line.split("==")[0].split(">=")[0].strip().lower()
              for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    names = [d.split(">")[0].split("<")[0].split("=")[0].strip().lower() for d in deps]
    assert sorted(names) == sorted(pinned)
    assert not any("==" in d for d in deps)


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of this checkout, built from a copy (the build leaves build/ and *.egg-info behind)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=_SKIP, symlinks=True)
    wheels = tmp_path / "wheels"
    built = _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                  "--disable-pip-version-check", "-w", str(wheels), str(src)])
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("smartmeter-*.whl")
    return wheel


def test_wheel_installs_a_working_smartmeter_command(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert "app/config.sample.ini" in names and "app/main.py" in names and "app/tools/ports.py" in names
    static = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "app" / "web" / "static").rglob("*")
                    if p.is_file()) if (ROOT / "app" / "web" / "static").is_dir() else []
    assert set(static) <= set(names), "the dashboard's files must be in the wheel"
    assert not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    vpy = venv / "bin" / "python"
    site = _run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    # the dependencies come from the shared venv (no network in tests): a .pth points there
    Path(site, "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    inst = _run([sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps", "--no-index",
                 "--disable-pip-version-check", str(wheel)])
    assert inst.returncode == 0, inst.stderr

    cmd = venv / "bin" / "smartmeter"
    version = _run([str(cmd), "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"smartmeter {__version__}"
    helped = _run([str(cmd), "--help"], cwd=tmp_path)
    assert helped.returncode == 0
    for flag in ("--config", "--check-config", "--decode", "--replay", "--list-ports", "--probe", "--capture"):
        assert flag in helped.stdout
    decoded = _run([str(cmd), "--decode", str(FIXTURES / "dsmr" / "fluvius_be_p1v50217_1.txt")], cwd=tmp_path)
    assert decoded.returncode == 0 and '"crc_ok": true' in decoded.stdout, decoded.stderr
    where = _run([str(vpy), "-c", "import app, importlib.resources as r; print(app.__file__); "
                  "print(r.files('app').joinpath('config.sample.ini').read_text()[:40])"], cwd=tmp_path)
    assert str(venv) in where.stdout and "smartmeter configuration" in where.stdout
    sample = _run([str(cmd), "-c", str(Path(where.stdout.splitlines()[0]).parent / "config.sample.ini"),
                   "--check-config"], cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
