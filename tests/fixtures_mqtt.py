"""pytest fixture `mosquitto`: a real broker on 127.0.0.1 with an ephemeral port, in a tmp dir."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MOSQUITTO = "/usr/sbin/mosquitto"
START_TIMEOUT_S = 10.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Broker:
    """A mosquitto process that can be stopped and started again on the same port."""

    def __init__(self, directory: Path, listener_conf: str = "") -> None:
        """`listener_conf`: extra lines for the listener (TLS: cafile, certfile, keyfile, ...)."""
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.directory = directory
        self.conf = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        self.conf.write_text(
            f"listener {self.port} {self.host}\n"
            f"{listener_conf}"
            "allow_anonymous true\n"
            "persistence false\n"
            # run as root, mosquitto would drop to user `mosquitto`, which cannot read the tmp dir
            f"user {getpass.getuser()}\n"
            f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start mosquitto (same port as before) and wait until it accepts connections."""
        if self.proc is not None and self.proc.poll() is None:
            return
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}: {err}{log}")
            if _port_open(self.host, self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"mosquitto did not open port {self.port} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Stop mosquitto (SIGTERM, then SIGKILL after 5 s); idempotent."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stderr:
            proc.stderr.close()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A running mosquitto broker for one test."""
    if not os.path.exists(MOSQUITTO):
        msg = f"{MOSQUITTO} not found: apt-get install -y mosquitto"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    broker = Broker(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
