"""InfluxDB sink benchmark: points/s to each server and CPU per 1000 readings with the export on and off.

Servers are the test fixtures' (Debian influxd 1.x for v1, VictoriaMetrics for the v2 write API),
started on loopback ephemeral ports in temp dirs. Readings are the Fluvius capture from
../shared/fixtures (23 named fields + gas), or a synthetic reading of the same shape without it.
CPU is `time.process_time` (this process, all threads): the servers' own CPU is not in it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from app.config import InfluxConfig
from app.records import Reading
from app.sinks.influx import GasTracker, InfluxSink, make_writer, reading_lines
from app.sinks.spool import Backoff, Batch, Outcome, SendResult
from tests.fixtures_influx import InfluxV1Server, ServerProcess, VictoriaMetricsServer, free_port

CAPTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dsmr" / "fluvius_be_p1v50217_1.txt"
RELAYS = {"boiler": True, "heatpump": False}
BATCH = 500


def base_reading() -> Reading:
    """The Fluvius capture parsed, or a synthetic reading with the same named fields."""
    received = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
    if CAPTURE.exists():
        from app.protocols.dsmr import parse_telegram

        return parse_telegram(CAPTURE.read_bytes(), received, ZoneInfo("Europe/Brussels"))
    from app.obis import FIELDS, GAS_FIELD

    fields = {f.name: 100.0 + i * 1.234 for i, f in enumerate(FIELDS)} | {GAS_FIELD.name: 92.287}
    return Reading(0, "dsmr", "1SAG3100721326", "FLU5\\253", received, received, {}, fields, received)


def readings(n: int) -> list[Reading]:
    """n readings one second apart, gas renewed every 5 minutes, values varying a little."""
    base = base_reading()
    t0 = datetime(2024, 3, 1, 0, 0, tzinfo=UTC)
    out = []
    for i in range(n):
        fields = dict(base.fields)
        fields["actual_total_consumption"] = 0.3 + (i % 97) * 0.01
        fields["l1_voltage"] = 230.0 + (i % 13) * 0.1
        out.append(replace(base, seq=i, meter_time=t0 + timedelta(seconds=i),
                           gas_time=t0 + timedelta(seconds=i // 300 * 300), fields=fields))
    return out


class NullWriter:
    """Accepts everything without I/O: isolates the converter + batcher."""

    def send(self, batch: Batch, timeout_s: float | None = None) -> SendResult:
        return SendResult(Outcome.OK, "", 204)

    def close(self) -> None:
        """Nothing to release."""


@contextmanager
def server(kind: str) -> Iterator[ServerProcess | None]:
    """A running server of `kind` ("v1" influxd, "v2" VictoriaMetrics), or None when not installed."""
    binary = shutil.which("influxd" if kind == "v1" else "victoria-metrics")
    if binary is None:
        yield None
        return
    workdir = Path(tempfile.mkdtemp(prefix=f"bench-influx-{kind}-"))
    srv: ServerProcess = (
        InfluxV1Server(workdir, binary) if kind == "v1" else VictoriaMetricsServer(workdir, binary)
    )
    srv.start()
    try:
        if isinstance(srv, InfluxV1Server):
            srv.create_database("bench")
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def cfg_for(kind: str, url: str, spool_dir: str) -> InfluxConfig:
    """Sink config for one server; batch_size 500 as in the issue's sample config."""
    return InfluxConfig(enabled=True, url=url, api=kind, database="bench", bucket="bench", org="bench",
                        measurement="bench", batch_size=BATCH, flush_interval=10.0, spool_dir=spool_dir)


def sink_rate(cfg: InfluxConfig, data: list[Reading]) -> tuple[float, float, int]:
    """Convert + batch + send `data` through a sink, ticking once per batch: (points/s, CPU s, points)."""
    sink = InfluxSink(cfg)
    wall, cpu = time.perf_counter(), time.process_time()
    now = 0.0
    for i, r in enumerate(data, 1):
        sink.write(r, RELAYS)
        if i % BATCH == 0:
            now += 1.0
            sink.tick(now)
    sink.close()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    written = sink.stats["written"]
    return written / wall, cpu, written


def send_rate(cfg: InfluxConfig, data: list[Reading]) -> float:
    """Points/s of the writer alone, batches of 500 prepared beforehand."""
    gas = GasTracker()
    lines = [ln for r in data for ln in reading_lines(r, RELAYS, cfg.measurement, gas)]
    chunks = [lines[i:i + BATCH] for i in range(0, len(lines), BATCH)]
    batches = [Batch(b"\n".join(c), len(c)) for c in chunks]
    writer = make_writer(cfg)
    t = time.perf_counter()
    for b in batches:
        res = writer.send(b)
        if res.outcome is not Outcome.OK:
            raise RuntimeError(f"send failed: {res.message}")
    elapsed = time.perf_counter() - t
    writer.close()
    return len(lines) / elapsed


def replay_rate(kind: str, url: str, spool_dir: str, data: list[Reading]) -> tuple[float, int]:
    """Spool `data` while the server is unreachable, then time draining the spool: (points/s, points)."""
    dead = cfg_for(kind, f"http://127.0.0.1:{free_port()}", spool_dir)
    sink = InfluxSink(dead, backoff=Backoff(3600.0, 3600.0))
    now = 0.0
    for i, r in enumerate(data, 1):
        sink.write(r, RELAYS)
        if i % BATCH == 0:
            now += 1.0
            sink.tick(now)
    sink.close()
    live = InfluxSink(cfg_for(kind, url, spool_dir))
    live.sender.replay_budget_s = 60.0
    t = time.perf_counter()
    now = 0.0
    while not live.spool.empty:
        now += 1.0
        live.tick(now)
    elapsed = time.perf_counter() - t
    replayed = live.stats["replayed"]
    live.close()
    return replayed / elapsed, replayed


def cpu_per_1000(fn: Callable[[], None], n: int) -> float:
    """CPU seconds of fn() per 1000 readings."""
    t = time.process_time()
    fn()
    return (time.process_time() - t) * 1000.0 / n


def pipeline_cpu(url: str, kind: str, data: list[Reading], enabled: bool, spool_dir: str) -> float | None:
    """The post-processor's CPU per 1000 readings (on_reading + sink threads) with the sink on or off."""
    try:
        from app.config import loads
        from app.pipeline import PostProcessor
    except ImportError:
        return None
    cfg = loads(
        f"[influxdb]\nenabled = {'yes' if enabled else 'no'}\nurl = {url}\napi = {kind}\ndatabase = bench\n"
        f"bucket = bench\norg = bench\nmeasurement = pp\nspool_dir = {spool_dir}\n"
    )
    pp = PostProcessor(cfg)
    t = time.process_time()
    for r in data:
        pp.on_reading(r)
    pp.close(timeout_s=120.0)
    return (time.process_time() - t) * 1000.0 / len(data)


def median(values: list[float]) -> float:
    """The middle value (the machine is shared: single runs are noisy)."""
    return sorted(values)[len(values) // 2]


def run(quick: bool = False) -> str:
    """Markdown section: throughput per server and CPU per 1000 readings with the export on and off."""
    logging.getLogger("app.sinks").setLevel(logging.ERROR)
    n_rate = 4_000 if quick else 40_000
    n_cpu = 2_000 if quick else 5_000
    reps = 1 if quick else 3
    data = readings(n_rate)
    tmp = Path(tempfile.mkdtemp(prefix="bench-influx-"))
    rows_rate: list[str] = []
    cpu: dict[str, dict[str, str]] = {}
    kinds = (("v1", "v1 /write → influxd 1.6"), ("v2", "v2 API, gzip → VictoriaMetrics"))
    try:
        gas = GasTracker()

        def convert() -> None:
            for r in data[:n_cpu]:
                list(reading_lines(r, RELAYS, "bench", gas))

        def write_path() -> None:
            null_cfg = cfg_for("v1", "http://127.0.0.1:9", str(tmp / "null"))
            null_sink = InfluxSink(null_cfg, writer=NullWriter())
            for r in data[:n_cpu]:
                null_sink.write(r, RELAYS)
            null_sink.tick(1.0)
            null_sink.close()

        conv = median([cpu_per_1000(convert, n_cpu) for _ in range(reps)])
        batcher = median([cpu_per_1000(write_path, n_cpu) for _ in range(reps)])
        for kind, label in kinds:
            col = cpu.setdefault(label, {})
            col["conv"] = f"{conv:.4f}"
            col["batcher"] = f"{batcher:.4f}"
            with server(kind) as srv:
                if srv is None:
                    rows_rate.append(f"| {label} | not installed | | | |")
                    continue
                rate, cpu_s, written = sink_rate(cfg_for(kind, srv.url, str(tmp / f"{kind}-sink")), data)
                sent = send_rate(cfg_for(kind, srv.url, str(tmp / f"{kind}-send")), data)
                replayed, _ = replay_rate(kind, srv.url, str(tmp / f"{kind}-replay"), data)
                rows_rate.append(f"| {label} | {written} | {rate:,.0f} | {sent:,.0f} | {replayed:,.0f} |")
                col["send"] = f"{cpu_s * 1000.0 / len(data):.4f}"
                for state in ("off", "on"):
                    on = state == "on"
                    vals = [
                        pipeline_cpu(srv.url, kind, data[:n_cpu], on, str(tmp / f"{kind}-pp-{state}-{i}"))
                        for i in range(reps)
                    ]
                    got = [v for v in vals if v is not None]
                    col[state] = f"{median(got):.4f}" if len(got) == len(vals) else "n/a"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    labels = [label for _, label in kinds]

    def row(name: str, key: str) -> str:
        return f"| {name} | " + " | ".join(cpu.get(label, {}).get(key, "n/a") for label in labels) + " |"

    return "\n".join([
        "## InfluxDB export",
        "",
        f"{n_rate} readings of the Fluvius capture (23 fields + 2 relays; a gas point every 300 readings), "
        f"batch_size {BATCH}, servers on loopback. *sink* = convert + batch + send through `InfluxSink`; "
        "*send* = the writer alone on prepared batches; *replay* = draining a spool filled while the server "
        "was unreachable.",
        "",
        "| server | points | sink points/s | send points/s | replay points/s |",
        "|---|---:|---:|---:|---:|",
        *rows_rate,
        "",
        f"CPU seconds per 1000 readings (`time.process_time` of this process, all threads; servers excluded; "
        f"{n_cpu} readings, median of {reps}; the machine is shared, single figures move by a third between "
        "runs):",
        "",
        "| path | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
        row("post-processor, InfluxDB **off** (`on_reading`, no sinks)", "off"),
        row("post-processor, InfluxDB **on** (`on_reading` + sink thread, sending)", "on"),
        row("sink converter only (`Point` → line protocol)", "conv"),
        row("sink write path (converter + batcher, no I/O)", "batcher"),
        row("sink write path + sending (client side)", "send"),
        "",
    ])


if __name__ == "__main__":
    print(run(quick=True))
