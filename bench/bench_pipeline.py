"""Whole-appliance benchmarks (issue 6): `python app/main.py` as a subprocess, measured from outside.

1. end-to-end latency: last byte of a telegram written to a real pty -> relay decision applied
   (`SMARTMETER_TRACE` lines of the post-processor vs `time.monotonic_ns()` after `os.write`);
2. sustained throughput: one day of 1-second telegrams replayed at speed 0, CSV + control on;
3. CPU at real time: CPU seconds per 1000 telegrams of main, reader and post-processor at 1/s;
4. memory: PSS of every process with CSV + control + InfluxDB (VictoriaMetrics) + MQTT (mosquitto);
5. soak: a week of telegrams at speed 0 through a FIFO, VmRSS at the end vs after the first meter hour.

Runs 3 and 4 are real-time appliances fed at 1 telegram/s by a background thread while 5 runs
(CPU time is per process, so it hardly depends on what else runs; wall-clock figures do).
Relays are on gpiozero's mock pins (GPIOZERO_PIN_FACTORY=mock); every server is ours, on loopback.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.simulator import BRUSSELS, SimulatedMeter  # noqa: E402

MAIN = str(ROOT / "app" / "main.py")
NOON = datetime(2026, 6, 21, 12, 0, tzinfo=BRUSSELS)  # the simulated house exports: the relay switches
MIDNIGHT = datetime(2026, 6, 21, 0, 0, tzinfo=BRUSSELS)
CLK_TCK = os.sysconf("SC_CLK_TCK")
MB = 1e6  # figures are in MB = 10^6 bytes (stricter than MiB against the targets)
THROUGHPUT_FLUSH = "60 s"  # the default [csv] flush_interval: what a user's own INI replays with

BASE_INI = """\
[general]
log_level = info
stats_interval = {stats}
[meter]
source = {source}
protocol = dsmr
[control]
settle = 0 s
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W
off_when = export < 200 W
[csv]
enabled = yes
directory = {csv}
interval = {csv_interval}
flush_interval = {csv_flush}
"""

SINKS_INI = """\
[influxdb]
enabled = yes
url = {influx_url}
api = v2
token = bench
org = bench
bucket = smartmeter
spool_dir = {spool}
[mqtt]
enabled = yes
host = {mqtt_host}
port = {mqtt_port}
reconnect_max = 5 s
"""


# ---------------------------------------------------------------------------------------- /proc


def cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads) in seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def _kb_field(path: str, name: str) -> int | None:
    try:
        with open(path) as fh:
            for line in fh:
                if line.startswith(name):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def pss_kb(pid: int) -> int | None:
    """Proportional set size (shared pages split between their users), kB."""
    return _kb_field(f"/proc/{pid}/smaps_rollup", "Pss:")


def rss_kb(pid: int) -> int | None:
    """VmRSS, kB."""
    return _kb_field(f"/proc/{pid}/status", "VmRSS:")


def descendants(pid: int) -> list[int]:
    """Every child of pid, recursively (from /proc/PID/task/*/children)."""
    out: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            for child in children.read_text().split():
                out.append(int(child))
                out += descendants(int(child))
    return out


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(p / 100 * len(sorted_values)) - 1))]


def load() -> str:
    """1-minute load average, to judge how noisy a figure is."""
    return f"{os.getloadavg()[0]:.1f}"


def ok(met: bool) -> str:
    """The met/MISSED cell."""
    return "met" if met else "**MISSED**"


# ---------------------------------------------------------------------------------------- the appliance


class Pty:
    """A pseudo-terminal in raw mode; the appliance opens `path` (the slave) as its serial port."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        """All of `data`, as a meter sends it."""
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view):]

    def close(self) -> None:
        """Release both ends; idempotent."""
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.master = self.slave = -1


class Appliance:
    """`python app/main.py -c INI [args]` with mock pins, its log in a file next to the INI."""

    def __init__(self, ini: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.log_path = ini.with_suffix(".log")
        log_fh = self.log_path.open("w")
        full_env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1", **(env or {}))
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, MAIN, "-c", str(ini), *args], stdout=log_fh,
                                     stderr=subprocess.STDOUT, env=full_env, cwd=ROOT)
        log_fh.close()

    def log(self) -> str:
        """Everything logged so far."""
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout_s: float = 30.0) -> re.Match[str]:
        """Wait until the log matches `pattern`."""
        end = time.monotonic() + timeout_s
        while True:
            m = re.search(pattern, self.log())
            if m is not None:
                return m
            if self.proc.poll() is not None or time.monotonic() > end:
                tail = self.log()[-3000:]
                raise RuntimeError(f"{pattern!r} not logged (exit {self.proc.poll()}); log:\n{tail}")
            time.sleep(0.05)

    def pids(self) -> dict[str, int]:
        """main, reader, post-processor and any other child of main, by role."""
        out = {"main": self.proc.pid,
               "reader": int(self.wait_log(r"reader process started \(pid (\d+)\)").group(1)),
               "post-processor": int(self.wait_log(r"post-processor process started \(pid (\d+)\)").group(1))}
        known = set(out.values())
        for pid in descendants(self.proc.pid):
            if pid not in known:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:60]
                except OSError:
                    cmd = "?"
                out[f"child {pid} ({cmd.strip()})"] = pid
        return out

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM and wait for the exit code (SIGKILL if it hangs)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        """Make sure it and its children are gone."""
        if self.proc.poll() is None:
            for pid in descendants(self.proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc.wait(10)


def write_ini(path: Path, source: str, csv_dir: Path, csv_interval: str = "0", csv_flush: str = "5 s",
              stats: str = "5 s", extra: str = "") -> Path:
    """An INI for one run."""
    text = BASE_INI.format(source=source, csv=csv_dir, csv_interval=csv_interval, csv_flush=csv_flush,
                           stats=stats)
    if "[history]" not in extra:  # the store (on by default) beside the INI, never /var/lib
        extra += f"\n[history]\npath = {path.with_suffix('.sqlite')}\n"
    path.write_text(text + extra)
    return path


def write_capture(path: Path, count: int, start: datetime = MIDNIGHT) -> float:
    """`count` 1-second Fluvius telegrams from the simulator into `path`; returns seconds taken."""
    t0 = time.monotonic()
    meter = SimulatedMeter(start, step_s=1.0, seed=7)
    with path.open("wb") as fh:
        left = count
        while left:
            n = min(left, 5000)
            fh.write(b"".join(meter.telegrams(n)))
            left -= n
    return time.monotonic() - t0


def csv_row_count(directory: Path) -> int:
    """Data rows of every day file (one header line each)."""
    rows = 0
    for f in directory.glob("*.csv"):
        lines = 0
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                lines += chunk.count(b"\n")
        rows += max(0, lines - 1)
    return rows


@dataclass
class Status:
    """What the log says about a run."""

    processed: int | None = None
    reader_ok: int | None = None
    rejected: int | None = None
    dropped: int | None = None
    gaps: int | None = None
    sink_dropped: int = 0
    csv_dropped: int = 0
    replay_readings: int | None = None
    warnings: int = 0
    errors: int = 0
    lines: list[str] = field(default_factory=list)


STATUS_RE = re.compile(r"(\d+) readings processed; reader: (\d+) ok, (\d+) rejected \(\d+ CRC\), "
                       r"(\d+) dropped, (\d+) gaps")


def parse_log(text: str) -> Status:
    """The last status line, replay summary, sink drop warnings, warning/error counts."""
    st = Status()
    for m in STATUS_RE.finditer(text):
        st.processed, st.reader_ok, st.rejected, st.dropped, st.gaps = map(int, m.groups())
    m2 = re.findall(r"(\d+) readings processed$", text, re.M)
    if m2 and st.processed is None:
        st.processed = int(m2[-1])
    for m in re.finditer(r"falling behind: dropped (\d+) items", text):
        st.sink_dropped = max(st.sink_dropped, int(m.group(1)))
    for m in re.finditer(r"CSV backlog full: dropped the oldest row \((\d+) so far\)", text):
        st.csv_dropped = max(st.csv_dropped, int(m.group(1)))
    m3 = re.findall(r"replay of .* done: (\d+) readings, (\d+) rejected", text)
    if m3:
        st.replay_readings = int(m3[-1][0])
    for line in text.splitlines():
        if " WARNING " in line or " ERROR " in line:
            st.warnings += " WARNING " in line
            st.errors += " ERROR " in line
            if len(st.lines) < 5:
                st.lines.append(line[:200])
    return st


class CpuSampler:
    """Polls CPU time and peak RSS of a run's processes; keeps the last values seen before each one exits."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.last: dict[str, float] = {}
        self.peak_kb: dict[str, int] = {}

    def sample(self) -> None:
        """One poll."""
        for role, pid in self.pids.items():
            v = cpu_s(pid)
            hwm = _kb_field(f"/proc/{pid}/status", "VmHWM:")
            if v is not None:
                self.last[role] = v
            if hwm is not None:
                self.peak_kb[role] = hwm


# ---------------------------------------------------------------------------------------- 1. latency


@dataclass
class LatencyResult:
    """End-to-end latencies in ms, ascending."""

    ms: list[float]
    sent: int
    switches: int
    load_before: str
    load_after: str
    problem: str = ""


def bench_latency(tmp: Path, count: int, rate_hz: float = 10.0, warmup: int = 10, extra: str = "",
                  ready: tuple[str, ...] = ()) -> LatencyResult:
    """`count` telegrams at `rate_hz` into a pty; trace time minus the write time of the last byte.
    `extra`: more INI sections (e.g. [meter:NAME] meters, bench_meters_latency); `ready`: log lines to await."""
    pty = Pty()
    trace = tmp / "latency.trace"
    ini = write_ini(tmp / "latency.ini", pty.path, tmp / "latency-csv", csv_flush="1 s", extra=extra)
    load_before = load()
    app = Appliance(ini, env={"SMARTMETER_TRACE": str(trace)})
    written: dict[int, int] = {}
    try:
        app.wait_log(r"reading " + re.escape(pty.path))
        for pattern in ready:
            app.wait_log(pattern, 60)
        meter = SimulatedMeter(NOON, step_s=1.0, seed=3)
        telegrams = list(meter.telegrams(warmup + count))
        period_ns = int(1e9 / rate_hz)
        t0 = time.monotonic_ns() + period_ns
        for i, telegram in enumerate(telegrams):
            delay = (t0 + i * period_ns - time.monotonic_ns()) / 1e9
            if delay > 0:
                time.sleep(delay)
            pty.write(telegram)
            written[i + 1] = time.monotonic_ns()  # the reader's seq starts at 1
        time.sleep(1.0)
        app.stop()
    finally:
        app.kill()
        pty.close()
    done: dict[int, int] = {}
    if trace.exists():
        for line in trace.read_text().splitlines():
            seq, ns = line.split()
            done[int(seq)] = int(ns)
    log = app.log()
    ms = sorted((done[s] - written[s]) / 1e6 for s in range(warmup + 1, warmup + count + 1) if s in done)
    problem = "" if len(ms) == count else f"only {len(ms)} of {count} telegrams traced (rejects or seq shift)"
    switches = len(re.findall(r"relay boiler -> (?:on|off) \((?!shutdown)", log))
    return LatencyResult(ms, count, switches, load_before, load(), problem)


# ---------------------------------------------------------------------------------------- 2. throughput


@dataclass
class ThroughputResult:
    """One day replayed at speed 0."""

    count: int
    gen_s: float
    wall_s: float
    exit_code: int | None
    csv_rows: int
    status: Status
    cpu: dict[str, float]
    peak_kb: dict[str, int]
    load_before: str
    load_after: str


def bench_throughput(tmp: Path, count: int) -> ThroughputResult:
    """`--replay FILE --replay-speed 0` of `count` 1-second telegrams, CSV (interval 0) + control."""
    capture = tmp / "day.bin"
    gen_s = write_capture(capture, count)
    csv_dir = tmp / "throughput-csv"
    ini = write_ini(tmp / "throughput.ini", "/dev/null", csv_dir, csv_flush=THROUGHPUT_FLUSH)
    load_before = load()
    t0 = time.monotonic()
    app = Appliance(ini, "--replay", str(capture), "--replay-speed", "0")
    try:
        sampler = CpuSampler(app.pids())
        while app.proc.poll() is None and time.monotonic() - t0 < 600:
            sampler.sample()
            time.sleep(0.1)
        code = app.proc.wait(timeout=30)
        wall = time.monotonic() - t0
    finally:
        app.kill()
    result = ThroughputResult(count, gen_s, wall, code, csv_row_count(csv_dir), parse_log(app.log()),
                              sampler.last, sampler.peak_kb, load_before, load())
    capture.unlink()
    shutil.rmtree(csv_dir, ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------- 3 + 4. real time


class RealTime:
    """Appliances fed one telegram per second each, from a background thread."""

    def __init__(self) -> None:
        self.runs: list[RealTimeRun] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._feed, name="bench-feeder", daemon=True)
        self.lock = threading.Lock()

    def start(self) -> None:
        """Begin feeding (runs may be added before)."""
        self.thread.start()

    def _feed(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            with self.lock:
                for run in self.runs:
                    run.tick()
            next_t += 1.0
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def close(self) -> None:
        """Stop feeding and every appliance."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(5)
        for run in self.runs:
            run.finish()


class RealTimeRun:
    """One appliance on a pty at 1 telegram/s: CPU over a window, PSS samples, PSS at the end."""

    def __init__(self, name: str, ini: Path, pty: Pty, cpu_window_s: float, skip_s: float = 5.0) -> None:
        self.name = name
        self.pty = pty
        self.app = Appliance(ini)
        self.app.wait_log(r"reading " + re.escape(pty.path))
        self.pids = self.app.pids()
        self.meter = SimulatedMeter(NOON, step_s=1.0, seed=11)
        self.sent = 0
        self.t_start = time.monotonic()
        self.skip_s = skip_s
        self.cpu_window_s = cpu_window_s
        self.cpu0: dict[str, float] | None = None
        self.cpu1: dict[str, float] | None = None
        self.sent0 = self.sent1 = 0
        self.t0 = self.t1 = 0.0
        self.pss_samples: list[tuple[float, int]] = []  # (elapsed s, total PSS kB)
        self.next_pss = 30.0
        self.final_pss: dict[str, tuple[int, int]] = {}  # role -> (PSS kB, RSS kB)
        self.final_elapsed = 0.0
        self.exit_code: int | None = None
        self.log = ""
        self.active = True

    def _cpu(self) -> dict[str, float]:
        return {role: cpu_s(pid) or 0.0 for role, pid in self.pids.items()}

    def tick(self) -> None:
        """Send one telegram; take the CPU and PSS snapshots when due."""
        if not self.active:
            return
        elapsed = time.monotonic() - self.t_start
        if self.cpu0 is None and elapsed >= self.skip_s:
            self.cpu0, self.sent0, self.t0 = self._cpu(), self.sent, time.monotonic()
        elif self.cpu0 is not None and self.cpu1 is None and elapsed >= self.skip_s + self.cpu_window_s:
            self.cpu1, self.sent1, self.t1 = self._cpu(), self.sent, time.monotonic()
        if elapsed >= self.next_pss:
            self.next_pss += 30.0
            total = sum(pss_kb(pid) or 0 for pid in self.pids.values())
            self.pss_samples.append((elapsed, total))
        if self.alive():
            self.pty.write(self.meter.next())
        self.sent += 1

    def alive(self) -> bool:
        """Whether the appliance still runs."""
        return self.app.proc.poll() is None

    def cpu_ready(self) -> bool:
        """Whether the CPU window is complete."""
        return self.cpu1 is not None

    def elapsed(self) -> float:
        """Seconds since the appliance started reading."""
        return time.monotonic() - self.t_start

    def snapshot_memory(self) -> None:
        """PSS and RSS of every process of the appliance, now."""
        self.pids = self.app.pids()  # late children too
        self.final_elapsed = self.elapsed()
        self.final_pss = {role: (pss_kb(pid) or 0, rss_kb(pid) or 0) for role, pid in self.pids.items()}

    def finish(self) -> None:
        """Stop the appliance (idempotent)."""
        if not self.active:
            return
        self.active = False
        try:
            self.exit_code = self.app.stop()
        finally:
            self.app.kill()
            self.pty.close()
            self.log = self.app.log()


def start_servers(tmp: Path, stack: contextlib.ExitStack) -> tuple[object, str, int] | str:
    """VictoriaMetrics and mosquitto on loopback: (the VM server, MQTT host, MQTT port), or why not."""
    from tests.fixtures_influx import VictoriaMetricsServer
    from tests.fixtures_mqtt import MOSQUITTO, Broker

    vm_bin = shutil.which("victoria-metrics")
    if vm_bin is None or not os.path.exists(MOSQUITTO):
        return "victoria-metrics or mosquitto not installed (apt-get install -y victoria-metrics mosquitto)"
    (tmp / "vm").mkdir()
    (tmp / "mqtt").mkdir()
    vm = VictoriaMetricsServer(tmp / "vm", vm_bin)
    vm.start()
    stack.callback(vm.stop)
    broker = Broker(tmp / "mqtt")
    broker.start()
    stack.callback(broker.stop)
    return vm, broker.host, broker.port


def vm_sample_count(vm: object) -> int | None:
    """How many samples VictoriaMetrics holds (did the Influx sink deliver?)."""
    try:
        series = vm.export('{__name__=~".+"}')  # type: ignore[attr-defined]
    except (RuntimeError, OSError):
        return None
    return sum(len(s["values"]) for s in series)


# ---------------------------------------------------------------------------------------- 5. soak


@dataclass
class SoakResult:
    """A week (or as much as fits in the time budget) at speed 0."""

    target: int
    fed: int
    processed: int
    wall_s: float
    samples: list[tuple[float, int, dict[str, int]]]  # (elapsed s, readings processed, role -> VmRSS kB)
    roles: list[str]
    exit_code: int | None
    csv_rows: int
    status: Status
    capped: bool
    load_before: str
    load_after: str


class TraceProgress:
    """Readings processed so far, from the tail of the SMARTMETER_TRACE file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.last = 0
        self.tail = b""

    def read(self) -> int:
        """The last sequence number written so far."""
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
        except FileNotFoundError:
            return self.last
        self.offset += len(data)
        data = self.tail + data
        cut = data.rfind(b"\n")
        if cut >= 0:
            lines = data[:cut].rsplit(b"\n", 1)
            self.last = int(lines[-1].split()[0])
            self.tail = data[cut + 1:]
        else:
            self.tail = data
        return self.last


def bench_soak(tmp: Path, target: int, budget_s: float) -> SoakResult:
    """Feed `target` telegrams through a FIFO (the simulator writes while the appliance reads) at speed 0."""
    fifo = tmp / "week.fifo"
    os.mkfifo(fifo)
    csv_dir = tmp / "soak-csv"
    trace = tmp / "soak.trace"
    ini = write_ini(tmp / "soak.ini", "/dev/null", csv_dir, csv_interval="60 s", stats="30 s")
    fed = [0]
    capped = [False]
    stop_feeding = threading.Event()

    def feed() -> None:
        meter = SimulatedMeter(MIDNIGHT, step_s=1.0, seed=5)
        try:
            with fifo.open("wb") as fh:  # blocks until the reader opens it
                while fed[0] < target:
                    if stop_feeding.is_set():
                        capped[0] = True
                        break
                    n = min(500, target - fed[0])
                    fh.write(b"".join(meter.telegrams(n)))
                    fed[0] += n
        except BrokenPipeError:
            pass  # the appliance went away; reported by its exit code

    feeder = threading.Thread(target=feed, name="bench-soak-feeder", daemon=True)
    load_before = load()
    t0 = time.monotonic()
    app = Appliance(ini, "--replay", str(fifo), "--replay-speed", "0", env={"SMARTMETER_TRACE": str(trace)})
    feeder.start()
    samples: list[tuple[float, int, dict[str, int]]] = []
    progress = TraceProgress(trace)
    try:
        pids = app.pids()
        while app.proc.poll() is None:
            elapsed = time.monotonic() - t0
            if elapsed > budget_s:
                stop_feeding.set()
            if elapsed > budget_s + 120:
                raise RuntimeError(f"soak did not finish in {budget_s + 120:.0f} s")
            rss = {role: rss_kb(pid) for role, pid in pids.items()}
            done = progress.read()
            if all(v is not None for v in rss.values()):
                samples.append((elapsed, done, {k: v for k, v in rss.items() if v is not None}))
            time.sleep(0.5)
        code = app.proc.wait(timeout=30)
        wall = time.monotonic() - t0
    finally:
        stop_feeding.set()
        app.kill()
        feeder.join(10)
    processed = TraceProgress(trace).read()
    result = SoakResult(target, fed[0], processed, wall, samples, list(pids), code, csv_row_count(csv_dir),
                        parse_log(app.log()), capped[0], load_before, load())
    shutil.rmtree(csv_dir, ignore_errors=True)
    trace.unlink(missing_ok=True)
    fifo.unlink(missing_ok=True)
    return result


# ---------------------------------------------------------------------------------------- reader imports


READER_PROBE = """
import sys
sys.path.insert(0, {root!r})
import app.reader as reader
_orig = reader.run
def run(*args):
    with open({out!r}, "w") as fh:
        fh.write("\\n".join(sorted(sys.modules)))
    return _orig(*args)
reader.run = run
from app import main
sys.exit(main.main(["-c", {ini!r}, "--replay", {capture!r}, "--replay-speed", "0"]))
"""

NEEDED_PROBE = """
import sys
sys.path.insert(0, {root!r})
import app.reader, app.transport.source, serial, multiprocessing.queues, multiprocessing.synchronize
print("\\n".join(sorted(sys.modules)))
"""


def reader_modules(tmp: Path) -> tuple[int, int, list[str]]:
    """(modules in a live reader, modules it needs, the unneeded ones grouped by top-level package)."""
    capture = tmp / "probe.bin"
    write_capture(capture, 5)
    out = tmp / "reader-modules.txt"
    ini = write_ini(tmp / "probe.ini", "/dev/null", tmp / "probe-csv")
    code = READER_PROBE.format(root=str(ROOT), out=str(out), ini=str(ini), capture=str(capture))
    subprocess.run([sys.executable, "-c", code], env=dict(os.environ, GPIOZERO_PIN_FACTORY="mock"),
                   capture_output=True, timeout=60, cwd=ROOT)
    have = set(out.read_text().split()) if out.exists() else set()
    needed_out = subprocess.run([sys.executable, "-c", NEEDED_PROBE.format(root=str(ROOT))],
                                capture_output=True, text=True, timeout=60, cwd=ROOT).stdout
    needed = set(needed_out.split())
    extra = sorted(have - needed)
    groups: dict[str, list[str]] = {}
    for name in extra:
        top = ".".join(name.split(".")[:2]) if name.startswith("app.") else name.split(".")[0]
        groups.setdefault(top, []).append(name)
    listed = [f"`{top}`" + (f" ({len(mods)} modules)" if len(mods) > 1 else "")
              for top, mods in sorted(groups.items())]
    return len(have), len(needed), listed


# ---------------------------------------------------------------------------------------- report


def _mb(kb: float) -> str:
    return f"{kb * 1024 / MB:.1f}"


@contextlib.contextmanager
def _tempdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _cpu_rows(run: RealTimeRun, label: str) -> list[str]:
    rows = []
    if run.cpu0 is None or run.cpu1 is None:
        return [f"| {label} | (window not reached) | | | |"]
    window = run.t1 - run.t0
    n = max(1, run.sent1 - run.sent0)
    for role in ("main", "reader", "post-processor"):
        d = run.cpu1.get(role, 0.0) - run.cpu0.get(role, 0.0)
        pct = d / window * 100
        rows.append(f"| {label} | {role} | {d / n * 1000:.2f} | {pct:.2f} % | {ok(pct <= 0.5)} |")
    return rows


def run(quick: bool = False) -> str:
    """All five measurements; a Markdown section."""
    lat_n = 50 if quick else 1000
    day_n = 3000 if quick else 86_400
    week_n = 10_800 if quick else 604_800
    soak_budget_s = 8.0 if quick else 215.0
    cpu_window_s = 10.0 if quick else 120.0
    mem_min_s = 15.0 if quick else 180.0
    t_begin = time.monotonic()
    notes: list[str] = []
    with _tempdir() as tmp, contextlib.ExitStack() as stack:
        # 1. latency and 2. throughput first, each alone
        lat = bench_latency(tmp, lat_n)
        thr = bench_throughput(tmp, day_n)
        # 3 + 4: two real-time appliances at 1/s in the background while 5 runs
        servers = start_servers(tmp, stack)
        rt = RealTime()
        stack.callback(rt.close)
        pty_a = Pty()
        ini_a = write_ini(tmp / "cpu.ini", pty_a.path, tmp / "cpu-csv", csv_interval="60 s", csv_flush="60 s",
                          stats="5 min")
        rt.runs.append(RealTimeRun("CSV + control", ini_a, pty_a, cpu_window_s))
        pty_b = Pty()
        extra = ""
        if isinstance(servers, tuple):
            vm, mqtt_host, mqtt_port = servers
            url = vm.url  # type: ignore[attr-defined]
            extra = SINKS_INI.format(influx_url=url, spool=tmp / "spool", mqtt_host=mqtt_host,
                                     mqtt_port=mqtt_port)
        else:
            notes.append(f"Memory run without InfluxDB and MQTT: {servers}.")
        ini_b = write_ini(tmp / "mem.ini", pty_b.path, tmp / "mem-csv", csv_interval="60 s", csv_flush="60 s",
                          stats="5 min", extra=extra)
        rt.runs.append(RealTimeRun("CSV + control + InfluxDB + MQTT", ini_b, pty_b, cpu_window_s))
        rt.start()
        # 5. soak (the real-time runs add < 1 % of a core)
        soak = bench_soak(tmp, week_n, soak_budget_s)
        mods = reader_modules(tmp)
        run_a, run_b = rt.runs
        deadline = time.monotonic() + mem_min_s + cpu_window_s + 60
        while not (run_a.cpu_ready() and run_b.cpu_ready() and run_b.elapsed() >= mem_min_s):
            if time.monotonic() > deadline or not (run_a.alive() and run_b.alive()):
                notes.append("A real-time appliance stopped early or its window was not reached.")
                break
            time.sleep(0.5)
        run_b.snapshot_memory()
        influx_samples = vm_sample_count(servers[0]) if isinstance(servers, tuple) else None
        rt.close()
    total_s = time.monotonic() - t_begin
    return _report(quick, lat, thr, soak, run_a, run_b, mods, influx_samples, notes, total_s)


def _report(quick: bool, lat: LatencyResult, thr: ThroughputResult, soak: SoakResult, run_a: RealTimeRun,
            run_b: RealTimeRun, mods: tuple[int, int, list[str]], influx_samples: int | None,
            notes: list[str], total_s: float) -> str:
    out: list[str] = []
    add: Callable[[str], None] = out.append
    add("## Whole appliance (issue 6)\n")
    add("`python app/main.py` as a subprocess, relays on gpiozero mock pins, simulated Fluvius telegrams "
        "(about 800 bytes each). "
        + ("**Quick mode**: every run shortened, figures are rough. " if quick else "")
        + f"Total {total_s:.0f} s. The machine's 2 cores are shared with other jobs: wall-clock figures are "
        "noisy (the 1-minute load average is given per run).\n")
    p50, p99, pmax = (percentile(lat.ms, p) for p in (50, 99, 100))
    st = thr.status
    lost = [thr.csv_rows != thr.count, (st.dropped or 0) != 0, (st.gaps or 0) != 0, st.sink_dropped != 0,
            st.csv_dropped != 0, thr.exit_code != 0]
    rate = thr.count / thr.wall_s
    a_pct = _max_pct(run_a)
    pss_total = sum(p for p, _ in run_b.final_pss.values())
    drift = _soak_drift(soak)
    day_target = 30 * thr.count / 86_400
    add("| # | measurement | figure | target | result |")
    add("|---|---|---:|---|---|")
    add(f"| 1 | latency p50, last byte → relay decision ({len(lat.ms)} telegrams at 10/s) | {p50:.2f} ms "
        f"| ≤ 5 ms | {ok(p50 <= 5)} |")
    add(f"| 1 | latency p99 | {p99:.2f} ms | ≤ 20 ms | {ok(p99 <= 20)} |")
    add(f"| 1 | latency max | {pmax:.2f} ms | – | – |")
    add(f"| 2 | {thr.count:,} telegrams at replay speed 0 (CSV every reading + control): wall time "
        f"| {thr.wall_s:.1f} s | ≤ {day_target:.0f} s | {ok(thr.wall_s <= day_target)} |")
    add(f"| 2 | throughput | {rate:,.0f} readings/s | ≥ 2,880 readings/s | {ok(rate >= 2880)} |")
    add(f"| 2 | nothing dropped: CSV rows / reader drops / gaps / sink drops / exit code "
        f"| {thr.csv_rows:,} / {st.dropped} / {st.gaps} / {st.sink_dropped + st.csv_dropped} / "
        f"{thr.exit_code} "
        f"| {thr.count:,} / 0 / 0 / 0 / 0 | {ok(not any(lost))} |")
    add(f"| 3 | CPU at 1 telegram/s, busiest process (CSV + control) | {a_pct:.2f} % of a core "
        f"| ≤ 0.5 % per process | {ok(a_pct <= 0.5)} |")
    add(f"| 4 | PSS of all processes after {run_b.final_elapsed / 60:.1f} min at 1/s ({run_b.name}) "
        f"| {_mb(pss_total)} MB | ≤ 60 MB | {ok(pss_total * 1024 / MB <= 60)} |")
    if drift is not None:
        worst_role, worst = max(drift.items(), key=lambda kv: abs(kv[1]))
        met = all(abs(v) * 1024 <= 5 * MB for v in drift.values())
        add(f"| 5 | soak ({soak.processed / 86_400:.1f} days): VmRSS end − after the 1st meter hour, worst "
            f"process ({worst_role}) | {worst * 1024 / MB:+.1f} MB | within ±5 MB | {ok(met)} |")
    else:
        add("| 5 | soak | no RSS sample after the first meter hour | within ±5 MB | **MISSED** |")
    add("")
    add(_latency_detail(lat))
    add(_throughput_detail(thr))
    add(_cpu_detail(run_a, run_b))
    add(_memory_detail(run_b, influx_samples, mods))
    add(_soak_detail(soak))
    if notes:
        add("Notes: " + " ".join(notes) + "\n")
    return "\n".join(out) + "\n"


def _max_pct(run: RealTimeRun) -> float:
    if run.cpu0 is None or run.cpu1 is None:
        return math.nan
    window = run.t1 - run.t0
    return max((run.cpu1[r] - run.cpu0[r]) / window * 100 for r in ("main", "reader", "post-processor"))


def _latency_detail(lat: LatencyResult) -> str:
    lines = ["### 1. End-to-end latency\n",
             "Each telegram is written whole with one `os.write` to the master of a raw pty, 10 per second; "
             "the "
             "appliance reads the slave with pyserial. Start: `time.monotonic_ns()` right after the write "
             "returns; end: the post-processor's `SMARTMETER_TRACE` line, written once control has run. "
             "Meter "
             "time from noon on 21 June: the house exports and the relay (`export > 1500 W` / `export < 200 "
             "W`, "
             f"settle 0) switched {lat.switches} times during the run (those readings are included). CSV on, "
             f"a row per reading. Load average {lat.load_before} → {lat.load_after}.\n"]
    if lat.ms:
        buckets = [(0, 1), (1, 2), (2, 5), (5, 10), (10, 20), (20, 1e9)]
        cells = [f"{sum(lo <= v < hi for v in lat.ms)}" for lo, hi in buckets]
        lines.append("| ms | < 1 | 1–2 | 2–5 | 5–10 | 10–20 | ≥ 20 | p90 | mean |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        lines.append(f"| telegrams | {' | '.join(cells)} | {percentile(lat.ms, 90):.2f} | "
                     f"{sum(lat.ms) / len(lat.ms):.2f} |\n")
    if lat.problem:
        lines.append(f"Problem: {lat.problem}.\n")
    return "\n".join(lines)


def _throughput_detail(thr: ThroughputResult) -> str:
    st = thr.status
    lines = ["### 2. Sustained throughput\n",
             f"`python app/main.py -c INI --replay FILE --replay-speed 0`, {thr.count:,} one-second "
             "telegrams "
             f"({thr.count / 86_400:.2f} days; generated once in {thr.gen_s:.1f} s, not counted). CSV "
             f"`interval = 0` (a row per reading) with the default `flush_interval = {THROUGHPUT_FLUSH}`, "
             "one "
             "relay. Wall time includes start-up and the final flush. Load average "
             f"{thr.load_before} → {thr.load_after}.\n",
             "| process | CPU s | CPU / wall | µs CPU per reading | peak RSS (VmHWM) MB |",
             "|---|---:|---:|---:|---:|"]
    for role, secs in thr.cpu.items():
        lines.append(f"| {role} | {secs:.1f} | {secs / thr.wall_s * 100:.0f} % "
                     f"| {secs / thr.count * 1e6:.0f} "
                     f"| {_mb(thr.peak_kb.get(role, 0))} |")
    lines.append("")
    lines.append(f"Log: the post-processor processed {st.processed}, the reader's replay summary says "
                 f"{st.replay_readings} readings; last status line: reader {st.reader_ok} ok, {st.rejected} "
                 f"rejected, {st.dropped} dropped, {st.gaps} gaps; sink queue drops {st.sink_dropped}, CSV "
                 f"backlog drops {st.csv_dropped}; {st.warnings} warnings, {st.errors} errors"
                 + (f" (first: `{st.lines[0]}`)" if st.lines else "") + ". Queue depth: **not available** "
                 "(neither process logs `qsize()` of the reader → post-processor queue or of the sink "
                 "queues).\n")
    return "\n".join(lines)


def _cpu_detail(run_a: RealTimeRun, run_b: RealTimeRun) -> str:
    window = (run_a.t1 - run_a.t0) if run_a.cpu1 else 0.0
    lines = ["### 3. CPU at real time\n",
             f"One telegram per second into a pty for {window:.0f} s (after {run_a.skip_s:.0f} s of "
             "start-up); "
             f"utime + stime of all threads from `/proc/PID/stat` ({CLK_TCK} ticks/s). 0.5 % of a core at "
             "1 telegram/s is 5 CPU s per 1000 telegrams. CSV `interval = 60 s`. Measured while run 5 "
             "kept the machine busy (CPU time per process depends little on that).\n",
             "| config | process | CPU s per 1000 telegrams | % of a core | ≤ 0.5 % |",
             "|---|---|---:|---:|---|"]
    lines += _cpu_rows(run_a, run_a.name)
    lines += _cpu_rows(run_b, run_b.name)
    return "\n".join(lines) + "\n"


def _memory_detail(run_b: RealTimeRun, influx_samples: int | None, mods: tuple[int, int, list[str]]) -> str:
    stored = influx_samples if influx_samples is not None else "?"
    lines = ["### 4. Memory\n",
             f"{run_b.name}, one telegram per second for {run_b.final_elapsed / 60:.1f} min (10 min asked; "
             "shortened so the module fits its time budget: the samples below show the trend). PSS from "
             "`/proc/PID/smaps_rollup` (the fork children share pages with main; PSS splits them), every "
             "process under main included. CSV `interval = 60 s`; InfluxDB v2 API on VictoriaMetrics and "
             "MQTT "
             f"on mosquitto, both on loopback ({stored} samples stored in VictoriaMetrics at the end).\n",
             "| process | PSS MB | RSS MB |", "|---|---:|---:|"]
    for role, (pss, rss) in run_b.final_pss.items():
        lines.append(f"| {role} | {_mb(pss)} | {_mb(rss)} |")
    total = sum(p for p, _ in run_b.final_pss.values())
    lines.append(f"| **total** | **{_mb(total)}** | |")
    lines.append("")
    if run_b.pss_samples:
        lines.append("Total PSS over time: " + ", ".join(f"{t / 60:.1f} min {_mb(kb)} MB"
                                                           for t, kb in run_b.pss_samples) + ".\n")
    have, needed, listed = mods
    lines.append(f"Modules in a live reader process (a fork child of main): {have}; a fresh interpreter that "
                 "imports only `app.reader`, `app.transport.source`, `serial` and the multiprocessing queue "
                 "has "
                 f"{needed}. In the reader but not needed by it (report only): "
                 + (", ".join(listed) if listed else "none") + ".\n")
    return "\n".join(lines)


def _soak_drift(soak: SoakResult) -> dict[str, int] | None:
    base = next((s for s in soak.samples if s[1] >= 3600), None)
    if base is None or not soak.samples:
        return None
    end = soak.samples[-1]
    return {role: end[2][role] - base[2][role] for role in end[2] if role in base[2]}


def _soak_detail(soak: SoakResult) -> str:
    st = soak.status
    rate = soak.processed / soak.wall_s if soak.wall_s else 0.0
    days = soak.processed / 86_400
    lines = ["### 5. Soak\n",
             f"{soak.target:,} one-second telegrams ({soak.target / 86_400:.2f} days) generated by the "
             "simulator "
             "straight into a FIFO that the appliance replays at speed 0 (no capture file: generation "
             "overlaps the replay), CSV `interval = 60 s` + control, `SMARTMETER_TRACE` for progress, "
             f"VmRSS sampled every 0.5 s. Load average {soak.load_before} → {soak.load_after}.\n"]
    if soak.capped and rate > 0:
        lines.append(f"**Not the whole run**: feeding stopped at the time budget after {soak.fed:,} "
                     "telegrams "
                     f"({days:.2f} days of meter time, {soak.processed:,} processed in {soak.wall_s:.0f} s = "
                     f"{rate:,.0f} readings/s). All {soak.target / 86_400:.0f} days would take about "
                     f"{soak.target / rate / 60:.1f} min here; the drift below covers {days:.2f} days and "
                     "the "
                     "week figure is extrapolated from the slope.\n")
    else:
        lines.append(f"{soak.processed:,} readings ({days:.2f} days) in {soak.wall_s:.0f} s = {rate:,.0f} "
                     "readings/s.\n")
    base = next((s for s in soak.samples if s[1] >= 3600), None)
    if base is None or not soak.samples:
        lines.append("No sample after the first meter hour.\n")
        return "\n".join(lines)
    end = soak.samples[-1]
    day = next((s for s in soak.samples if s[1] >= 86_400), None)
    cols = [("after 1 h", base)] + ([("after 1 day", day)] if day else []) + [("end", end)]
    lines.append("| process | " + " | ".join(f"VmRSS MB {name} ({s[1]:,} readings)" for name, s in cols)
                 + " | end − 1 h | slope MB/day | a week at that slope |")
    lines.append("|---|" + "---:|" * (len(cols) + 3))
    for role in soak.roles:
        if role not in end[2] or role not in base[2]:
            continue
        cells = [_mb(s[2][role]) for _, s in cols]
        delta_kb = end[2][role] - base[2][role]
        slope = _slope_mb_per_day(soak.samples, role)
        slope_txt = f"{slope:+.2f}" if slope is not None else "–"
        week_txt = f"{slope * 7:+.1f} MB" if slope is not None else "–"
        lines.append(f"| {role} | {' | '.join(cells)} | {delta_kb * 1024 / MB:+.1f} MB | {slope_txt} "
                     f"| {week_txt} |")
    lines.append("")
    lines.append(f"Exit {soak.exit_code}; CSV rows {soak.csv_rows:,} (one per meter minute); reader dropped "
                 f"{st.dropped}, gaps {st.gaps}, sink queue drops {st.sink_dropped}, CSV backlog drops "
                 f"{st.csv_dropped}. Slope: least squares of VmRSS against meter time, from the first meter "
                 "hour on.\n")
    return "\n".join(lines)


def _slope_mb_per_day(samples: list[tuple[float, int, dict[str, int]]], role: str) -> float | None:
    pts = [(s[1] / 86_400, s[2][role] * 1024 / MB) for s in samples if s[1] >= 3600 and role in s[2]]
    if len(pts) < 3 or pts[-1][0] - pts[0][0] <= 0:
        return None
    mx = sum(x for x, _ in pts) / len(pts)
    my = sum(y for _, y in pts) / len(pts)
    den = sum((x - mx) ** 2 for x, _ in pts)
    return sum((x - mx) * (y - my) for x, y in pts) / den if den else None


def soak_only(days: float) -> str:
    """`--soak-days N`: the soak alone over N simulated days (does the post-processor's RSS level off?)."""
    with _tempdir() as tmp:
        soak = bench_soak(tmp, int(days * 86_400), 215.0 * days / 7 + 60)
    drift = _soak_drift(soak) or {}
    head = ", ".join(f"{role} {kb * 1024 / MB:+.1f} MB" for role, kb in drift.items())
    marks = []  # the post-processor's VmRSS at each meter day mark: does it level off?
    for day in (1, 2, 4, 7, 14, 21, 28, 42, 56):
        s = next((s for s in soak.samples if s[1] >= day * 86_400), None)
        if s is not None and "post-processor" in s[2]:
            marks.append(f"day {day} {s[2]['post-processor'] * 1024 / MB:.1f} MB")
    return (f"{_soak_detail(soak)}\nEnd − after the 1st meter hour: {head}.\n\n"
            f"Post-processor VmRSS by meter day: {', '.join(marks)}.\n")


if __name__ == "__main__":
    if "--soak-days" in sys.argv:
        print(soak_only(float(sys.argv[sys.argv.index("--soak-days") + 1])))
    else:
        print(run(quick="--quick" in sys.argv))
