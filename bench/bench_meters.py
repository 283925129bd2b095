"""Several meters: one Modbus poll of 10 registers on loopback (pymodbus's server), and the memory (PSS)
of each extra meter process in the running appliance."""

from __future__ import annotations

import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from bench.bench_pipeline import load, ok, pss_kb, rss_kb  # noqa: E402
from tests.appliance import Appliance  # noqa: E402
from tests.test_modbus import ModbusSim, spec_for  # noqa: E402

TARGET_POLL_MS = 20.0
TARGET_PSS_MB = 12.0
TEN = """protocol = modbus
source = tcp://127.0.0.1:{port}
register_table = input
register_power = 0
register_power_type = float32
register_energy = 2
register_energy_type = float32
register_energy_export = 4
register_energy_export_type = float32
register_voltage = 6
register_voltage_type = float32
register_current = 8
register_current_type = float32
"""


def poll_ms(sim: ModbusSim, n: int) -> tuple[float, float]:
    """Median and p99 of one poll (one request for 10 registers, decoded to a Sample), ms."""
    from app.meters.modbus import ModbusPoller

    spec = spec_for(TEN.format(port=sim.port))
    sim.set(spec.settings.registers, {"power_w": 1234.5, "import_kwh": 1.0, "export_kwh": 2.0, "voltage_v": 230.0,
                                      "current_a": 5.0})
    poller = ModbusPoller(spec)
    times = []
    try:
        poller.poll()  # connect
        for _ in range(n):
            t0 = time.perf_counter()
            poller.poll()
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        poller.close()
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.99))]


def meter_pss(tmp: Path, sim: ModbusSim, meters: int) -> list[tuple[str, int, int]]:
    """(name, PSS kB, RSS kB) of each [meter:NAME] process of a running appliance."""
    sections = "".join(f"[meter:m{i}]\nrole = building\n{TEN.format(port=sim.port)}poll_interval = 1 s\n"
                       for i in range(meters))
    ini = tmp / "meters.ini"
    ini.write_text(f"[meter]\nsource = {tmp / 'no-p1'}\nprotocol = dsmr\n{sections}[csv]\nenabled = no\n")
    app = Appliance(ini)
    try:
        for i in range(meters):
            app.wait_log(rf"meter m{i}: offline -> online", 60)
        time.sleep(3)
        pids = {m.group(1): int(m.group(2)) for m in re.finditer(r"meter (\w+) process started \(pid (\d+),",
                                                                 app.log())}
        return [(name, pss_kb(pid) or 0, rss_kb(pid) or 0) for name, pid in sorted(pids.items())]
    finally:
        app.stop()
        app.kill()


def run(quick: bool = False) -> str:
    """The RESULTS.md section."""
    load_before = load()
    sim = ModbusSim().start()
    try:
        p50, p99 = poll_ms(sim, 100 if quick else 1000)
        with tempfile.TemporaryDirectory() as d:
            procs = meter_pss(Path(d), sim, 4)  # the "4 meters running"
    finally:
        sim.stop()
    worst = max(p for _n, p, _r in procs) / 1024
    lines = ["", "## Several meters (bench/bench_meters.py)", "",
             f"Modbus TCP on loopback against pymodbus's own server, load {load_before} → {load()}. PSS of each "
             "[meter:NAME] process of a running appliance (fork + gc.freeze; pymodbus imported by main before the "
             "fork and shared).", "",
             "| figure | value | target | |", "|---|---|---|---|",
             f"| one poll, 10 registers (1 request), median | {p50:.2f} ms | ≤ {TARGET_POLL_MS:.0f} ms | "
             f"{ok(p50 <= TARGET_POLL_MS)} |",
             f"| one poll, 10 registers, p99 | {p99:.2f} ms | ≤ {TARGET_POLL_MS:.0f} ms | "
             f"{ok(p99 <= TARGET_POLL_MS)} |",
             f"| PSS per extra meter process (worst of {len(procs)}) | {worst:.1f} MB | ≤ {TARGET_PSS_MB:.0f} MB | "
             f"{ok(worst <= TARGET_PSS_MB)} |"]
    lines += [f"| {name}: PSS / RSS | {pss / 1024:.1f} / {rss / 1024:.1f} MB | | |" for name, pss, rss in procs]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
