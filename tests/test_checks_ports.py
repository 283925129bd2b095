"""`--check-config` lists the Pi's UART among the ports present: /dev/serial0, /dev/ttyAMA*, /dev/ttyS*."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app import checks


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A /dev and a /sys/class/tty as on a Pi 4 with Bluetooth on: serial0 -> ttyS0 (the mini UART), the
    PL011 ttyAMA0 with Bluetooth, and a ttyS1 node with no UART behind it (type 0)."""
    dev, sys_tty = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for name, uart_type in (("ttyS0", "4"), ("ttyS1", "0"), ("ttyS10", "4"), ("ttyS2", "4"), ("ttyAMA0", "")):
        (dev / name).write_text("")
        if uart_type:
            (sys_tty / name).mkdir(parents=True)
            (sys_tty / name / "type").write_text(uart_type + "\n")
    os.symlink(dev / "ttyS0", dev / "serial0")
    return dev, sys_tty


def _globs(dev: Path) -> tuple[str, ...]:
    return tuple(p.replace("/dev", str(dev), 1) for p in checks.SERIAL_GLOBS if p.startswith("/dev/tty")
                 or (p.startswith("/dev/serial") and "by-id" not in p))


def test_the_pi_uart_is_a_port_present(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    dev, sys_tty = _tree(tmp_path)
    monkeypatch.setattr(checks, "SERIAL_GLOBS", _globs(dev))
    monkeypatch.setattr(checks, "SYS_TTY", str(sys_tty))
    assert checks.present_ports() == [f"{dev}/serial0 (-> {dev}/ttyS0)", f"{dev}/ttyAMA0", f"{dev}/ttyS0",
                                      f"{dev}/ttyS2", f"{dev}/ttyS10"]
    warning = checks.serial_warning("/dev/ttyUSB0")
    assert warning is not None and warning.endswith(f"ports present: {dev}/serial0 (-> {dev}/ttyS0), "
                                                    f"{dev}/ttyAMA0, {dev}/ttyS0, {dev}/ttyS2, {dev}/ttyS10")


def test_a_missing_pi_uart_gets_the_raspi_config_hint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(checks, "SERIAL_GLOBS", (str(tmp_path / "ttyUSB*"),))
    warning = checks.serial_warning("/dev/serial0") if not os.path.exists("/dev/serial0") else None
    if warning is not None:
        assert "no serial port is present" in warning
        assert "sudo raspi-config nonint do_serial_hw 0" in warning
    other = checks.serial_warning(str(tmp_path / "ttyUSB7"))
    assert other is not None and "raspi-config" not in other


def test_ttys_without_sysfs_is_listed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "ttyS0").write_text("")
    monkeypatch.setattr(checks, "SERIAL_GLOBS", (str(tmp_path / "ttyS*"),))
    monkeypatch.setattr(checks, "SYS_TTY", str(tmp_path / "no-sysfs"))
    assert checks.present_ports() == [str(tmp_path / "ttyS0")]


def test_this_machines_ttys_follow_sysfs() -> None:
    """On the real /dev and /sys: every ttyS listed has a UART type other than 0, and every ttyS with one is
    listed (a PC's 32 empty ttyS nodes stay out)."""
    listed = checks.present_ports()
    for name in sorted(os.listdir("/dev")):
        if not name.startswith("ttyS") or not name[4:].isdigit():
            continue
        type_file = Path("/sys/class/tty", name, "type")
        if not type_file.exists():
            continue
        real = int(type_file.read_text().strip()) != 0
        assert (f"/dev/{name}" in listed) == real, (name, listed)
