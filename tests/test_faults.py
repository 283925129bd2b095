"""Faults a Pi meets: a socket source that drops, no CPU spin while the port is gone, SIGTERM in a fast
replay, supervisor bringing a killed appliance back, bad input through the reader, meter clocks that jump."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app import config
from app.framing import Frame
from app.reader import Reader
from app.records import Reading
from app.simulator import BRUSSELS
from tests.appliance import MAIN, Appliance, csv_rows, ini_template, process_alive, simulated_meter, wait_for
from tests.conftest import FIXTURES, ROOT, require_binary

INI = ini_template("30 s", protocol="{protocol}", log_level=False)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _telegrams(n: int, hour: int = 12) -> list[bytes]:
    return list(simulated_meter(hour, seed=5).telegrams(n))


class OneShotServer:
    """A loopback TCP server standing in for a ser2net/ESP-link P1 adapter."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]

    def accept(self, timeout_s: float = 15.0) -> socket.socket:
        self.sock.settimeout(timeout_s)
        conn, _ = self.sock.accept()
        return conn

    def close(self) -> None:
        self.sock.close()


def test_socket_source_drop_reconnects_without_spinning(tmp_path: Path) -> None:
    server = OneShotServer()
    ini = tmp_path / "s.ini"
    ini.write_text(INI.format(source=f"socket://127.0.0.1:{server.port}", protocol="dsmr", csv=tmp_path / "csv"))
    app = Appliance(ini)
    try:
        reader = app.pid_of("reader")
        conn = server.accept()
        for t in _telegrams(3):
            conn.sendall(t)
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv")) == 3, 15), app.log()
        conn.close()  # the adapter drops the connection
        server.close()  # ... and stays away: connection refused for a while
        app.wait_log(r"lost socket://|cannot open socket://")
        cpu0 = _cpu_s(reader)
        time.sleep(3.0)
        assert _cpu_s(reader) - cpu0 < 0.6, "the reader spins while the source is gone"  # spinning: ~3 s
        server2 = OneShotServer.__new__(OneShotServer)
        server2.sock = socket.socket()
        server2.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server2.sock.bind(("127.0.0.1", server.port))
        server2.sock.listen(1)
        conn2 = server2.accept()
        for t in _telegrams(6)[3:]:
            conn2.sendall(t)
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv")) == 6, 45), app.log()  # backoff + a loaded CI
        conn2.close()
        server2.close()
        assert app.stop() == 0
    finally:
        app.kill()


def test_sigterm_in_a_fast_replay_exits_in_time_with_whole_rows(tmp_path: Path) -> None:
    capture = tmp_path / "day.bin"
    capture.write_bytes(b"".join(_telegrams(20000, hour=0)))
    ini = tmp_path / "r.ini"
    ini.write_text(INI.format(source=f"replay:{capture}", protocol="dsmr", csv=tmp_path / "csv"))
    app = Appliance(ini)
    try:
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv")) > 200, 30), app.log()
        t0 = time.monotonic()
        code = app.stop(signal.SIGTERM)
        took = time.monotonic() - t0
    finally:
        app.kill()
    assert code == 0, app.log()
    assert took < 2.0, f"stopped in {took:.2f} s"
    files = list((tmp_path / "csv").glob("*.csv"))
    text = files[0].read_text()
    assert text.endswith("\n")
    lines = text.splitlines()
    assert all(line.count(";") == lines[0].count(";") for line in lines)
    assert "relay boiler -> off (shutdown" in app.log() or "already in its safe state" in app.log()


def test_supervisor_brings_a_killed_appliance_back(tmp_path: Path) -> None:
    require_binary("/usr/bin/supervisord", "supervisor")
    pty_master, pty_slave = os.openpty()
    ini = tmp_path / "app.ini"
    ini.write_text(INI.format(source=os.ttyname(pty_slave), protocol="dsmr", csv=tmp_path / "csv"))
    log = tmp_path / "smartmeter.log"
    program = (ROOT / "supervisor" / "smartmeter.conf").read_text()
    program = (program.replace("/opt/smartmeter/venv/bin/smartmeter", f"{sys.executable} {MAIN}")
               .replace("/etc/smartmeter/smartmeter.ini", str(ini))
               .replace("directory=/var/lib/smartmeter", f"directory={ROOT}")
               .replace("user=smartmeter", f"user={os.environ.get('USER') or 'root'}")
               .replace("/var/log/supervisor/smartmeter.log", str(log))
               .replace('environment=PYTHONUNBUFFERED="1"',
                        'environment=PYTHONUNBUFFERED="1",GPIOZERO_PIN_FACTORY="mock"'))
    if os.geteuid() != 0:
        program = "\n".join(x for x in program.splitlines() if not x.startswith("user="))
    sock = tmp_path / "supervisor.sock"
    conf = tmp_path / "supervisord.conf"
    conf.write_text(f"""
[unix_http_server]
file={sock}
[supervisord]
nodaemon=true
logfile={tmp_path / 'supervisord.log'}
pidfile={tmp_path / 'supervisord.pid'}
childlogdir={tmp_path}
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{sock}
{program}
""")
    sup = subprocess.Popen(["/usr/bin/supervisord", "-c", str(conf)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        def pids(role: str) -> list[int]:
            if not log.exists():
                return []
            import re

            return [int(p) for p in re.findall(rf"{role} process started \(pid (\d+)\)", log.read_text())]

        assert wait_for(lambda: pids("post-processor"), 20), log.read_text() if log.exists() else "no log"
        first = pids("post-processor")[-1]
        os.kill(first, signal.SIGKILL)
        t0 = time.monotonic()
        assert wait_for(lambda: len(pids("post-processor")) >= 2 and len(pids("reader")) >= 2, 10), log.read_text()
        assert time.monotonic() - t0 < 5.0
        assert "post-processor exited" in log.read_text()
        assert wait_for(lambda: "relay boiler -> off (start: safe state)"
                        in log.read_text().split("post-processor exited", 1)[1], 5), log.read_text()
        os.write(pty_master, _telegrams(1)[0])
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv")) == 1, 15), log.read_text()
    finally:
        sup.send_signal(signal.SIGTERM)
        try:
            sup.wait(20)
        except subprocess.TimeoutExpired:
            sup.kill()
        os.close(pty_master)
        os.close(pty_slave)


# ------------------------------------------------------------------ bad input through the reader

DSMR = [p.read_bytes() for p in sorted((FIXTURES / "dsmr").glob("*.txt"))]
DLMS = [p.read_bytes() for p in sorted((FIXTURES / "dlms").glob("*hdlc*.bin"))
        + sorted((FIXTURES / "dlms").glob("*mbus*.bin"))]


class CountingFramer:
    """Wraps the reader's framer to count every frame it hands over."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.frames: list[Frame] = []

    def feed(self, chunk: bytes) -> list[Frame]:
        out: list[Frame] = self.inner.feed(chunk)
        self.frames += out
        return out

    def flush(self) -> list[Frame]:
        out: list[Frame] = self.inner.flush()
        self.frames += out
        return out


def _mangle(data: bytes, how: str, pos: int, bit: int) -> bytes:
    if not data:
        return data
    pos %= len(data)
    if how == "flip":
        b = bytearray(data)
        b[pos] ^= 1 << bit
        return bytes(b)
    if how == "truncate":
        return data[:pos]
    if how == "duplicate":
        return data[:pos] + data
    return data


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["dsmr", "dlms", "garbage"]), st.integers(0, 100),
                          st.sampled_from(["flip", "truncate", "duplicate", "none"]), st.integers(0, 10**6),
                          st.integers(0, 7), st.binary(max_size=64)), min_size=1, max_size=8),
       st.integers(1, 512))
def test_reader_never_raises_and_counts_add_up(pieces: list[Any], chunk: int) -> None:
    cfg = config.loads("[meter]\nprotocol = auto\nsource = replay:/dev/null\n"
                       "key = 36C66639E48A8CA4D6BC8B282A793BBB\n")
    delivered: list[Any] = []
    reader = Reader(cfg, lambda item, wait: delivered.append(item) or True, lambda: False)
    counting = CountingFramer(reader.framer)
    reader.framer = counting  # type: ignore[assignment]
    stream = b""
    for kind, idx, how, pos, bit, junk in pieces:
        if kind == "garbage":
            stream += junk
            continue
        src = DSMR if kind == "dsmr" else DLMS
        stream += _mangle(src[idx % len(src)], how, pos, bit)
    for i in range(0, len(stream), chunk):
        reader.handle(counting.feed(stream[i:i + chunk]))
    reader.handle(counting.flush())
    c = reader.counters
    readings = [r for item in delivered for r in (item if isinstance(item, list) else [item])
                if isinstance(r, Reading)]
    assert c.frames_ok + c.frames_bad == len(counting.frames)
    assert c.frames_ok == len(readings)
    assert c.crc_errors + c.parse_errors + c.decrypt_errors + c.implausible == c.frames_bad
    for r in readings:  # nothing whose check failed was accepted
        assert r.crc_ok is not False


# ------------------------------------------------------------------ clocks that jump


def test_meter_clock_jumps_keep_csv_and_control_sane(tmp_path: Path) -> None:
    from gpiozero.pins.mock import MockFactory

    from app.pipeline import PostProcessor
    from app.sinks.csv_sink import CsvSink

    cfg = config.loads(INI.format(source="/dev/null", protocol="dsmr", csv=tmp_path)
                       .replace("settle = 0 s", "settle = 10 s")
                       .replace("off_when = export < 200 W",
                                "off_when = export < 200 W\nmin_on = 1 min\nmin_off = 1 min"))
    sink = CsvSink(cfg.csv, BRUSSELS, ["boiler"])
    pp = PostProcessor(cfg, sinks=[sink], pin_factory=MockFactory())
    pp.start()
    t = datetime(2026, 10, 25, 0, 50, tzinfo=UTC)  # 02:50 CEST, ten minutes before the change
    times = [t + timedelta(seconds=5 * i) for i in range(300)]
    times[150:] = [x - timedelta(days=400) for x in times[150:]]  # meter clock reset
    times[200:] = [x + timedelta(days=400) for x in times[200:]]  # and back
    switches: list[tuple[datetime, bool]] = []
    last = pp.states["boiler"]
    for i, at in enumerate(times):
        export_kw = 3.0 if (i // 7) % 2 else 0.0  # a sawtooth that would make a naive controller chatter
        pp.on_reading(Reading(seq=i + 1, protocol="dsmr", meter_id="m", header="h", meter_time=at,
                              received=at, values={}, fields={"actual_total_injection": export_kw,
                                                              "actual_total_consumption": 0.0}))
        if pp.states["boiler"] != last:
            last = pp.states["boiler"]
            switches.append((at, last))
    pp.close()
    files = sorted(p.name for p in tmp_path.glob("*.csv"))
    assert "2026-10-25.csv" in files and "2025-09-20.csv" in files
    rows = sum(len(p.read_text().splitlines()) - 1 for p in tmp_path.glob("*.csv"))
    assert rows == 300
    for (a, _), (b, _) in itertools.pairwise(switches):
        if abs((b - a).total_seconds()) < 86400:  # within one clock era
            assert (b - a).total_seconds() >= 60, switches


def test_killed_main_takes_its_children_along(tmp_path: Path) -> None:
    ini = tmp_path / "k.ini"
    ini.write_text(INI.format(source=tmp_path / "nothing", protocol="dsmr", csv=tmp_path / "csv"))
    app = Appliance(ini)
    try:
        reader, post = app.pid_of("reader"), app.pid_of("post-processor")
        app.proc.send_signal(signal.SIGKILL)
        app.proc.wait(5)
        assert wait_for(lambda: not process_alive(reader) and not process_alive(post), 5)
    finally:
        app.kill()



def test_main_sigkilled_in_a_fast_replay_leaves_no_child_blocked(tmp_path: Path) -> None:
    """Batches of ~70 readings are far larger than PIPE_BUF: main killed mid-replay often leaves one half
    written. Both children must still notice and end (the post-processor sees EOF, not a stuck read)."""
    capture = tmp_path / "day.bin"
    capture.write_bytes(b"".join(_telegrams(20000, hour=12)))
    ini = tmp_path / "r.ini"
    ini.write_text(INI.format(source=f"replay:{capture}", protocol="dsmr", csv=tmp_path / "csv"))
    app = Appliance(ini)
    try:
        reader, post = app.pid_of("reader"), app.pid_of("post-processor")
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv")) > 200, 30), app.log()
        app.proc.send_signal(signal.SIGKILL)
        app.proc.wait(5)
        assert wait_for(lambda: not process_alive(reader) and not process_alive(post), 15), app.log()
    finally:
        app.kill()
    assert "main process died" in app.log()
    assert "frame rejected" not in app.log()  # the telegram cut by the stop is not counted as bad
