"""Helpers to run the whole appliance as a subprocess behind a real pseudo-terminal."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tty
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from app.simulator import BRUSSELS, SimulatedMeter
from tests.conftest import ROOT

MAIN = str(ROOT / "app" / "main.py")


def ini_template(stale_after: str, *, protocol: str = "dsmr", log_level: bool = True, csv: bool = True,
                 on_when: str = "export > 1500 W", meter_extra: str = "", extra: str = "") -> str:
    """The INI the whole-appliance tests start from, `{source}` (and `{csv}`) left to fill in: a DSMR meter
    that reconnects within 1 s, the boiler relay on GPIO17, CSV a row per reading flushed every 200 ms."""
    text = "\n[general]\nlog_level = info\n" if log_level else "\n"
    text += (f"[meter]\nsource = {{source}}\nprotocol = {protocol}\nreconnect_max = 1 s\n{meter_extra}"
             f"[control]\nsettle = 0 s\nstale_after = {stale_after}\n"
             f"[relay:boiler]\npin = GPIO17\non_when = {on_when}\noff_when = export < 200 W\n")
    if csv:
        text += ("[csv]\nenabled = yes\ndirectory = {csv}\ninterval = 0\ndelimiter = semicolon\n"
                 "flush_interval = 200 ms\n")
    return text + extra


def simulated_meter(hour: int = 12, seed: int = 3, day: int = 21, step_s: float = 1.0) -> SimulatedMeter:
    """The simulated Fluvius meter from `hour` o'clock on June `day` 2026 in Brussels (noon: the house exports)."""
    return SimulatedMeter(datetime(2026, 6, day, hour, 0, tzinfo=BRUSSELS), step_s=step_s, seed=seed)


def free_port() -> int:
    """A loopback TCP port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Pty:
    """A pseudo-terminal standing in for a P1 cable; `link` is a stable path like /dev/ttyUSB0."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master = -1
        self.slave = -1
        self.plug()

    def plug(self) -> None:
        """A new pty behind the same path (USB plugged in)."""
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        tmp = self.link.with_suffix(".new")
        if tmp.exists() or tmp.is_symlink():
            tmp.unlink()
        tmp.symlink_to(os.ttyname(self.slave))
        tmp.replace(self.link)

    def unplug(self) -> None:
        """Close both ends: the reader's port reports an error (USB pulled)."""
        if self.master >= 0:
            os.close(self.master)
            os.close(self.slave)
        self.master = self.slave = -1
        self.link.unlink(missing_ok=True)

    def write(self, data: bytes) -> None:
        """Bytes from the meter."""
        os.write(self.master, data)

    def close(self) -> None:
        """Release both ends."""
        self.unplug()


class Appliance:
    """`python app/main.py -c INI` with mock pins, stderr captured to a file."""

    def __init__(self, ini: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = ini.with_suffix(".log")
        self.log_fh = self.log_path.open("w")
        self.proc = subprocess.Popen([*self.command(ini), *args], stdout=self.log_fh,
                                     stderr=subprocess.STDOUT, env=self.environment(env), cwd=ROOT)

    @staticmethod
    def command(ini: Path) -> list[str]:
        """The command line that runs the appliance with this config (its history store beside the INI)."""
        isolate_history(ini)
        return [sys.executable, MAIN, "-c", str(ini)]

    @staticmethod
    def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment: gpiozero's MockFactory for pins, unbuffered output."""
        return {**os.environ, "GPIOZERO_PIN_FACTORY": "mock", "PYTHONUNBUFFERED": "1", **(extra or {})}

    def log(self) -> str:
        """Everything logged so far."""
        return self.log_path.read_text()

    def wait_log(self, pattern: str, timeout_s: float = 20.0) -> re.Match[str]:
        """Wait until the log matches `pattern`."""
        m = wait_for(lambda: re.search(pattern, self.log()), timeout_s)
        if m is None:
            raise AssertionError(f"{pattern!r} not logged in {timeout_s} s; log:\n{self.log()}")
        return m

    def pid_of(self, role: str) -> int:
        """PID of the reader or the post-processor, from its start line."""
        return int(self.wait_log(rf"{role} process started \(pid (\d+)\)").group(1))

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> int:
        """Send a signal and wait for the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self.log_fh.close()

    def kill(self) -> None:
        """Make sure it is gone."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.log_fh.close()


def isolate_history(ini: Path) -> None:
    """Give a test config without a [history] section a store in its own directory, never /var/lib."""
    text = ini.read_text()
    if "[history]" not in text:
        ini.write_text(text.rstrip("\n") + f"\n\n[history]\npath = {ini.parent / 'history.sqlite'}\n")


def wait_for(check: Callable[[], object], timeout_s: float = 20.0, every_s: float = 0.05) -> object:
    """Poll `check` until it returns something truthy (returned) or the time is up (None)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        result = check()
        if result:
            return result
        time.sleep(every_s)
    return None


def csv_rows(directory: Path) -> list[list[str]]:
    """All data rows of all day files (header rows dropped), split on ';'."""
    rows: list[list[str]] = []
    for f in sorted(directory.glob("*.csv")):
        lines = f.read_text().splitlines()
        rows += [line.split(";") for line in lines[1:]]
    return rows


def process_alive(pid: int) -> bool:
    """Whether a PID still runs (zombies count as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped between open() and read() (ESRCH)
        return False


def pty_feeder(pty: Pty, meter: SimulatedMeter, stop: threading.Event, every_s: float = 0.25) -> threading.Thread:
    """A daemon thread (not started) writing the meter's telegrams into the pty every `every_s` until `stop`."""

    def feed() -> None:
        while not stop.is_set():
            try:
                pty.write(meter.next())
            except OSError:
                return
            time.sleep(every_s)

    return threading.Thread(target=feed, daemon=True)
