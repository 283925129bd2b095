"""tools/install.sh, container-free: into a temp root twice (idempotent), then --uninstall."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.test_packaging import build_wheel

INSTALL = ROOT / "tools" / "install.sh"


def _install(root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHON=sys.executable)
    return subprocess.run(["sh", str(INSTALL), "--root", str(root), "--no-users", *extra], capture_output=True,
                          text=True, timeout=600, env=env, check=False)


def _tree(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mode for p in root.rglob("*")
            if "/venv/" not in p.as_posix() and not p.is_symlink()}


def test_install_twice_then_uninstall(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    root = tmp_path / "root"
    args = ("--wheel", str(wheel), "--pip-args", "--no-deps --no-index")
    first = _install(root, *args)
    assert first.returncode == 0, first.stdout + first.stderr
    unit = (root / "etc/systemd/system/smartmeter.service").read_text()
    assert "User=smartmeter" in unit and "User=pi" not in unit
    assert "SupplementaryGroups=dialout gpio" in unit
    assert "ExecStart=/opt/smartmeter/venv/bin/smartmeter -c /etc/smartmeter/smartmeter.ini" in unit
    ini = root / "etc/smartmeter/smartmeter.ini"
    assert ini.read_text() == (ROOT / "config.sample.ini").read_text()
    rotate = (root / "etc/logrotate.d/smartmeter").read_text()
    assert rotate.startswith("/var/lib/smartmeter/smartmeter.log {") and "copytruncate" in rotate
    assert "su smartmeter smartmeter" in rotate  # logrotate refuses a directory writable by a non-root user else
    assert ini.stat().st_mode & 0o777 == 0o640
    for d in ("var/lib/smartmeter/csv", "var/lib/smartmeter/spool", "opt/smartmeter/venv"):
        assert (root / d).is_dir(), d
    smartmeter = root / "opt/smartmeter/venv/bin/smartmeter"
    assert subprocess.run([str(smartmeter), "--version"], capture_output=True, text=True, timeout=60,
                          check=True).stdout.startswith("smartmeter ")
    assert "installed smartmeter" in first.stdout
    assert "not enabled" in first.stdout  # --root never touches this machine's systemd

    ini.write_text(ini.read_text() + "\n; my edit\n")
    before = _tree(root)
    second = _install(root, *args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "my edit" in ini.read_text()  # an update keeps the user's config
    assert _tree(root) == before
    assert "created" not in second.stdout

    (root / "var/lib/smartmeter/csv/2026-06-21.csv").write_text("time\n")
    gone = _install(root, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not (root / "opt/smartmeter").exists()
    assert not (root / "etc/systemd/system/smartmeter.service").exists()
    assert not (root / "etc/logrotate.d/smartmeter").exists()
    assert (root / "var/lib/smartmeter/csv/2026-06-21.csv").exists() and ini.exists()  # data and config kept
    purged = _install(root, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "var/lib/smartmeter").exists() and not (root / "etc/smartmeter").exists()


def test_install_refuses_unknown_options(tmp_path: Path) -> None:
    bad = _install(tmp_path / "r", "--frobnicate")
    assert bad.returncode == 2 and "unknown option --frobnicate" in bad.stderr
    assert shutil.which("sh")


def _etc(root: Path) -> None:
    """A Pi's user database, small: root, and the dialout and gpio groups."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\ngpio:x:993:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\ngpio:*::\n")
    for f in ("shadow", "gshadow"):
        (etc / f).chmod(0o640)


def test_install_makes_the_service_user_in_dialout_and_gpio(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("useradd --prefix and chown need root")
    wheel = build_wheel(tmp_path)
    root = tmp_path / "root"
    _etc(root)
    env = dict(os.environ, PYTHON=sys.executable)
    cmd = ["sh", str(INSTALL), "--root", str(root), "--wheel", str(wheel), "--pip-args", "--no-deps --no-index"]
    for _ in range(2):  # the second run changes nothing
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    passwd = (root / "etc/passwd").read_text().splitlines()
    (user,) = [line for line in passwd if line.startswith("smartmeter:")]
    _name, _x, uid, gid, _gecos, home, shell = user.split(":")
    assert home == "/var/lib/smartmeter" and shell == "/usr/sbin/nologin"
    groups = {line.split(":")[0]: line.split(":")[3] for line in (root / "etc/group").read_text().splitlines()}
    assert groups["dialout"] == "smartmeter" and groups["gpio"] == "smartmeter"
    for d in ("var/lib/smartmeter", "var/lib/smartmeter/csv", "var/lib/smartmeter/spool"):
        st = (root / d).stat()
        assert (st.st_uid, st.st_gid) == (int(uid), int(gid)), d
    ini = (root / "etc/smartmeter/smartmeter.ini").stat()
    assert (ini.st_uid, ini.st_gid, ini.st_mode & 0o777) == (0, int(gid), 0o640)
    purge = subprocess.run(["sh", str(INSTALL), "--root", str(root), "--uninstall", "--purge"], capture_output=True,
                           text=True, timeout=120, check=False)
    assert purge.returncode == 0, purge.stderr
    assert "smartmeter" not in (root / "etc/passwd").read_text() + (root / "etc/group").read_text()
