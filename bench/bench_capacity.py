"""Peak shaving's cost: end-to-end decision latency with [capacity] on and off (the pty benchmark of
bench_pipeline), and CPU per reading of the pure policy with and without the quarter forecast; network
relays: command -> device state latency through the relay's worker thread against the Shelly simulator
(digest auth), and the client CPU of one refresh (a read-back, and an ON re-sent with its dead-man timer)."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.config import ControlConfig, RelayConfig
from app.control.capacity import CapacityConfig
from app.control.conditions import parse_condition
from app.control.daily import parse_min_daily
from app.control.policy import Policy
from app.protocols.dsmr import parse_telegram
from app.simulator import BRUSSELS, SimulatedMeter
from bench import bench_pipeline as bp

CAPACITY_INI = """
[capacity]
enabled = yes
target = 0.5 kW
margin = 0.1 kW
"""
EVENING = datetime(2026, 1, 13, 17, 0, tzinfo=BRUSSELS)


def _latency(tmp: Path, count: int, capacity: bool) -> bp.LatencyResult:
    """bench_pipeline's pty latency run, with [capacity] on (the boiler sheddable) or off."""
    orig = bp.write_ini

    def write_ini(path: Path, source: str, csv_dir: Path, **kw: Any) -> Path:
        out = orig(path, source, csv_dir, **kw)
        if capacity:
            text = out.read_text().replace("off_when = export < 200 W\n",
                                           "off_when = export < 200 W\nsheddable = yes\n")
            out.write_text(text + CAPACITY_INI)
        return out

    bp.write_ini = write_ini  # type: ignore[assignment]
    try:
        return bp.bench_latency(tmp, count)
    finally:
        bp.write_ini = orig


def _relays() -> tuple[RelayConfig, ...]:
    def relay(name: str, prio: int, **kw: Any) -> RelayConfig:
        return RelayConfig(name=name, pin="", priority=prio, on_when=parse_condition("import >= 0 W"),
                           off_when=parse_condition("import > 5 kW for 60 s"), **kw)

    return (relay("heat_pump", 1, min_on=600.0, min_off=300.0, sheddable=True),
            relay("boiler", 2, sheddable=True, min_daily=parse_min_daily("2 h by 21:00")),
            relay("ev", 3, sheddable=True))


def _cpu_per_reading(count: int, capacity: bool) -> tuple[float, int]:
    """µs of CPU per Policy.step over `count` evening readings (1 s apart), and the switches made."""
    meter = SimulatedMeter(EVENING, step_s=1.0, seed=4, pv_peak_w=0.0)
    readings = [parse_telegram(t, datetime.now(UTC), BRUSSELS, seq=i) for i, t in enumerate(meter.telegrams(count))]
    cap = CapacityConfig(True, 1.5, False, 0.1, 60.0) if capacity else None
    best = float("inf")
    switches = 0
    for _ in range(3):
        pol = Policy(ControlConfig(settle=15.0, stale_after=30.0), _relays(), BRUSSELS, capacity=cap)
        pol.start(EVENING)
        t0 = time.process_time()
        n = 0
        for r in readings:
            n += len(pol.step(r))
        best = min(best, time.process_time() - t0)
        switches = n
    return best / count * 1e6, switches


def _netrelay(count: int) -> tuple[list[float], float, float]:
    """Shelly simulator on loopback with a password: ms from `want()` to the simulated switch's state for
    `count` alternating commands; µs of this thread's CPU per read-back and per ON re-send (best of 3)."""
    from app.control.relays.net import NetRelay
    from app.control.relays.settings import DeviceConfig
    from app.control.relays.shelly import ShellyDriver
    from tests.sim_shelly import ShellySim

    sim = ShellySim(password="bench-pw")
    dev = DeviceConfig(kind="shelly", host=sim.host, username="admin", password="bench-pw", deadman=120.0,
                       refresh=3600.0, timeout=2.0)
    sw = sim.switches[0]
    lat: list[float] = []
    relay = NetRelay("bench", dev, ShellyDriver(dev))
    try:
        for i in range(count):
            want = i % 2 == 0
            t0 = time.perf_counter()
            relay.want(want)
            while sw.state() != want:
                time.sleep(0.0002)
            lat.append((time.perf_counter() - t0) * 1e3)
    finally:
        relay.close(2.0)
    driver = ShellyDriver(dev)
    reads = sends = float("inf")
    n = max(20, count)
    try:
        for _ in range(3):
            t0 = time.thread_time()
            for _ in range(n):
                driver.read()
            reads = min(reads, (time.thread_time() - t0) / n * 1e6)
            t0 = time.thread_time()
            for _ in range(n):
                driver.send(True, 120.0)
            sends = min(sends, (time.thread_time() - t0) / n * 1e6)
    finally:
        driver.send(False, 0.0)
        driver.close()
        sim.close()
    return sorted(lat), reads, sends


def run(quick: bool = False) -> str:
    """The section for RESULTS.md."""
    lat_n = 100 if quick else 300
    rounds = 2 if quick else 4
    cpu_n = 2000 if quick else 20000
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as d:
        tmp = Path(d)
        runs: dict[bool, list[bp.LatencyResult]] = {False: [], True: []}
        for i in range(rounds):  # interleaved: off, on, off, on, ... (load drifts on a shared machine)
            for cap in ((False, True) if i % 2 == 0 else (True, False)):
                sub = tmp / f"{'on' if cap else 'off'}{i}"
                sub.mkdir()
                runs[cap].append(_latency(sub, lat_n, cap))
    load1 = os.getloadavg()[0]
    paired = sorted(bp.percentile(sorted(on.ms), 99) - bp.percentile(sorted(off.ms), 99)
                    for off, on in zip(runs[False], runs[True], strict=True))
    lat = {cap: sorted(ms for r in rs for ms in r.ms) for cap, rs in runs.items()}
    p50 = {cap: bp.percentile(v, 50) for cap, v in lat.items()}
    p99 = {cap: bp.percentile(v, 99) for cap, v in lat.items()}
    problems = "; ".join(r.problem for rs in runs.values() for r in rs if r.problem)
    cpu_off, sw_off = _cpu_per_reading(cpu_n, False)
    cpu_on, sw_on = _cpu_per_reading(cpu_n, True)
    delta = p99[True] - p99[False]
    net_n = 40 if quick else 200
    net_ms, read_us, send_us = _netrelay(net_n)
    lines = [
        "## Peak shaving (bench/bench_capacity.py)",
        "",
        f"End-to-end latency, last byte into a pty → relay decision (bench_pipeline's run, {lat_n} telegrams at "
        f"10/s, {rounds} rounds each, interleaved off/on then on/off; load average {load0:.1f} → {load1:.1f} on "
        f"{os.cpu_count()} cores), with `[capacity]` off and on (boiler sheddable, target 0.5 kW); "
        f"CPU per reading of the pure policy over {cpu_n:,} evening readings (3 sheddable relays, one with "
        "min_daily; best of 3, `time.process_time`).",
        "",
        "| measurement | off | on | target | result |",
        "|---|---:|---:|---|---|",
        f"| latency p50 | {p50[False]:.2f} ms | {p50[True]:.2f} ms | – | – |",
        f"| latency p99 | {p99[False]:.2f} ms | {p99[True]:.2f} ms | on − off ≤ 1 ms ({delta:+.2f} ms) "
        f"| {bp.ok(delta <= 1.0)} |",
        f"| latency p99, on − off per round (paired) | {', '.join(f'{d:+.2f}' for d in paired)} ms | | median "
        f"{statistics.median(paired):+.2f} ms | – |",
        f"| CPU per reading, Policy.step | {cpu_off:.1f} µs | {cpu_on:.1f} µs | – | "
        f"+{cpu_on - cpu_off:.1f} µs ({sw_off} / {sw_on} switches) |",
        "",
        f"Network relay (Shelly Gen2 simulator on loopback, digest auth, {net_n} alternating commands): `want()` "
        "→ the simulated switch's state, through the relay's worker thread and its bounded queue; the refresh "
        "CPU is the client side of one request (this thread's `time.thread_time`, best of 3).",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| command → device state p50 / p99 | {bp.percentile(net_ms, 50):.2f} / {bp.percentile(net_ms, 99):.2f} ms |",
        f"| CPU per refresh: read-back (Switch.GetStatus) | {read_us:.0f} µs |",
        f"| CPU per refresh: ON re-sent with toggle_after (Switch.Set) | {send_us:.0f} µs |",
        "",
    ]
    if problems:
        lines += [f"Problems: {problems}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick=True))
