"""Main's supervision: heartbeats (a hung child is killed), systemd's watchdog fed only while every child
ticks, a killed main named as such, a queue writer killed mid-message, replays on simulated relays."""

from __future__ import annotations

import multiprocessing
import os
import signal
import socket
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import config, pipeline
from app.supervision import HUNG_S, Notifier
from tests.appliance import Appliance, Pty, csv_rows, ini_template, process_alive, simulated_meter, wait_for

INI = ini_template("60 s")


@pytest.fixture()
def live(tmp_path: Path) -> Iterator[tuple[Path, Path, Pty]]:
    pty = Pty(tmp_path / "ttyP1")
    ini = tmp_path / "app.ini"
    ini.write_text(INI.format(source=tmp_path / "ttyP1", csv=tmp_path / "csv"))
    yield ini, tmp_path / "csv", pty
    pty.close()


class NotifySocket:
    """A fake systemd: the unix datagram socket NOTIFY_SOCKET names."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="sdn")  # short: unix socket paths are limited to 107 bytes
        self.path = os.path.join(self.dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []

    def collect(self) -> list[str]:
        """Everything received so far, in order."""
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                return self.messages

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def test_hung_post_processor_is_killed_and_the_watchdog_stops(live: tuple[Path, Path, Pty]) -> None:
    ini, _csv, _pty = live
    notify = NotifySocket()
    app = Appliance(ini, env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    post = app.pid_of("post-processor")
    try:
        reader = app.pid_of("reader")
        assert wait_for(lambda: notify.collect().count("WATCHDOG=1") >= 2, 30), notify.messages
        assert notify.messages[0] == "READY=1"
        os.kill(post, signal.SIGSTOP)  # hung, with the meter silent: nothing else would notice
        code = app.proc.wait(timeout=HUNG_S + 20)
        assert code == 1, app.log()
        assert wait_for(lambda: not process_alive(post) and not process_alive(reader), 5)
    finally:
        _kill(post)
        app.kill()
        messages = notify.collect()
        notify.close()
    assert "post-processor hung (no heartbeat for" in app.log()
    silent = next(i for i, m in enumerate(messages) if m.startswith("STATUS=post-processor: no heartbeat"))
    assert "WATCHDOG=1" in messages[:silent]
    assert "WATCHDOG=1" not in messages[silent:], messages  # never again once a child stopped ticking
    assert messages[-1] == "STOPPING=1"


def test_hung_reader_is_killed_and_relays_go_safe(live: tuple[Path, Path, Pty]) -> None:
    ini, _csv, pty = live
    app = Appliance(ini)
    reader = app.pid_of("reader")
    try:
        app.wait_log(r"reading .*ttyP1")
        meter = simulated_meter()
        for _ in range(3):
            pty.write(meter.next())
        app.wait_log(r"relay boiler -> on")
        os.kill(reader, signal.SIGSTOP)
        code = app.proc.wait(timeout=HUNG_S + 20)
        assert code == 1, app.log()
    finally:
        _kill(reader)
        app.kill()
    log = app.log()
    assert "reader hung (no heartbeat for" in log
    assert "relay boiler -> off (reader process died" in log


def test_killed_main_is_the_reason_the_relays_give(live: tuple[Path, Path, Pty]) -> None:
    ini, _csv, pty = live
    app = Appliance(ini)
    try:
        reader, post = app.pid_of("reader"), app.pid_of("post-processor")
        app.wait_log(r"reading .*ttyP1")
        meter = simulated_meter()
        for _ in range(3):
            pty.write(meter.next())
        app.wait_log(r"relay boiler -> on")
        app.proc.send_signal(signal.SIGKILL)
        app.proc.wait(5)
        assert wait_for(lambda: not process_alive(reader) and not process_alive(post), 10)
    finally:
        app.kill()
    log = app.log()
    assert "relay boiler -> off (main process died" in log
    assert "(shutdown" not in log


def test_a_writer_killed_mid_message_does_not_block_the_post_processor(tmp_path: Path) -> None:
    """What main SIGKILLed during a fast replay leaves: the reader exits with a batch half written.
    The post-processor must see EOF (it holds no write end), not wait forever for the rest."""
    cfg = config.loads(f"[meter]\nsource = replay:/dev/null\n[csv]\nenabled = yes\ndirectory = {tmp_path}\n")
    ctx = multiprocessing.get_context("fork")
    q: multiprocessing.Queue[object] = ctx.Queue()
    stop, failed = ctx.Event(), ctx.Event()
    child = ctx.Process(target=pipeline.run, args=(cfg, q, stop, failed, "warning"), name="post-processor")
    child.start()
    try:
        writer = q._writer  # type: ignore[attr-defined]
        os.write(writer.fileno(), struct.pack("!i", 1 << 20) + b"\x80" * 4000)  # 4 KB of a 1 MB message
        time.sleep(0.5)  # the post-processor is inside the read now
        writer.close()  # the writer dies: this was the last write end but the child's own
        q._reader.close()  # type: ignore[attr-defined]
        child.join(15)
        assert not child.is_alive(), "the post-processor is blocked on a message cut short"
        assert child.exitcode == 1
    finally:
        if child.is_alive():
            child.kill()
            child.join(5)


def _capture(tmp_path: Path, n: int = 40) -> Path:
    path = tmp_path / "noon.txt"
    path.write_bytes(b"".join(simulated_meter().telegrams(n)))
    return path


def test_replay_simulates_relays_and_touches_no_pin(tmp_path: Path) -> None:
    ini = tmp_path / "r.ini"
    ini.write_text(INI.format(source="/dev/null", csv=tmp_path / "csv"))
    # No usable pin library at all (as if the service held every line): a replay must not need one.
    env = {"GPIOZERO_PIN_FACTORY": "nosuchfactory"}
    app = Appliance(ini, "--replay", str(_capture(tmp_path)), "--replay-speed", "0", env=env)
    code = app.proc.wait(timeout=60)
    app.kill()
    assert code == 0, app.log()
    rows = csv_rows(tmp_path / "csv")
    assert len(rows) == 40
    assert "1" in {r[-1] for r in rows}  # the relay column shows what it would have done
    log = app.log()
    assert "relays simulated" in log
    assert "relay boiler -> on" in log and "[simulated]" in log
    assert " lag " not in log  # a replay's lag is the capture's age, not transport delay


def test_replay_relays_drives_the_real_pins(tmp_path: Path) -> None:
    ini = tmp_path / "r.ini"
    ini.write_text(INI.format(source="/dev/null", csv=tmp_path / "csv"))
    env = {"GPIOZERO_PIN_FACTORY": "nosuchfactory"}
    app = Appliance(ini, "--replay", str(_capture(tmp_path, 3)), "--replay-relays", env=env)
    code = app.proc.wait(timeout=60)
    app.kill()
    assert code != 0, app.log()  # it asked for the (here missing) pin library


def test_replay_relays_without_a_replay_is_refused(tmp_path: Path) -> None:
    ini = tmp_path / "r.ini"
    ini.write_text(INI.format(source="/dev/null", csv=tmp_path / "csv"))
    app = Appliance(ini, "--replay-relays")
    assert app.proc.wait(timeout=30) == 2
    app.kill()
    assert "--replay-relays needs a replay" in app.log()


def test_first_telegram_line_and_counts_that_add_up_at_stop(live: tuple[Path, Path, Pty]) -> None:
    ini, csv_dir, pty = live
    app = Appliance(ini)
    try:
        app.wait_log(r"reading .*ttyP1")
        meter = simulated_meter()
        pty.write(meter.next())
        pty.write(meter.next())
        app.wait_log(r"first telegram from meter \S+ \(dsmr, header \S+, every 1 s\)")
        for _ in range(5):
            pty.write(meter.next())
        assert wait_for(lambda: len(csv_rows(csv_dir)) == 7, 15), app.log()
        assert app.stop() == 0
    finally:
        app.kill()
    log = app.log()
    assert log.count("first telegram from meter") == 1
    assert "7 readings processed; reader: 7 ok, 0 rejected (0 CRC), 0 dropped, 0 gaps" in log, log
    assert "control: control:" not in log and "app.control: control:" not in log


def test_notifier_abstract_and_watchdog_pid() -> None:
    n = Notifier({"NOTIFY_SOCKET": "@sd", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"})
    assert n.address == b"\0sd" and n.watchdog_s is None  # the watchdog is meant for another process
    n = Notifier({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000"})
    assert n.watchdog_s == 4.0
    assert Notifier({}).address is None
