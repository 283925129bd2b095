"""History store figures: a one-day replay with history on and off, the import rate, query times over ten
years of quarters and the file size per meter-year."""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

from app.config import loads  # noqa: E402
from app.simulator import BRUSSELS  # noqa: E402
from app.store.quarters import Sample  # noqa: E402
from app.store.query import HistoryQuery  # noqa: E402
from app.store.recorder import Recorder  # noqa: E402
from bench.bench_pipeline import MAIN, Appliance, CpuSampler, load, ok, write_capture  # noqa: E402

DAY = 86_400
YEARS = 10
TARGET_REPLAY_S = 30.0
BELGIAN = ("[tariff]\nimport_price_t1 = 0.32\nimport_price_t2 = 0.26\nexport_price = 0.04\nfixed_per_year = 120\n"
           "capacity_price = 53.0\ncapacity_floor = 2.5 kW\ngas_price = 1.10\n")
TARGETS_MS = {"day curve (96 quarters)": 5.0, "month of days": 20.0, "12 months": 50.0}


def replay(tmp: Path, capture: Path, history: bool) -> tuple[float, float, int | None]:
    """Wall seconds, post-processor CPU seconds and exit code of one `--replay-speed 0` run."""
    ini = tmp / f"replay-{'on' if history else 'off'}.ini"
    store = tmp / "replay.sqlite"
    store.unlink(missing_ok=True)
    ini.write_text(f"[meter]\nsource = /dev/null\nprotocol = dsmr\n[history]\nenabled = {'yes' if history else 'no'}\n"
                   f"path = {store}\n")
    t0 = time.monotonic()
    app = Appliance(ini, "--replay", str(capture), "--replay-speed", "0")
    try:
        sampler = CpuSampler(app.pids())
        while app.proc.poll() is None and time.monotonic() - t0 < 600:
            sampler.sample()
            time.sleep(0.1)
        code = app.proc.wait(timeout=30)
    finally:
        app.kill()
    return time.monotonic() - t0, sampler.last.get("post-processor", 0.0), code


def import_rate(tmp: Path, capture: Path, count: int) -> tuple[float, str]:
    """Readings per second of `--import` (a fresh store), and what it printed."""
    ini = tmp / "import.ini"
    store = tmp / "import.sqlite"
    store.unlink(missing_ok=True)
    ini.write_text(f"[meter]\nprotocol = dsmr\n[history]\npath = {store}\n")
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, MAIN, "-c", str(ini), "--import", str(capture)], capture_output=True,
                         text=True, timeout=900)
    return count / (time.monotonic() - t0), out.stdout.strip()


def ten_years(path: Path, years: int) -> float:
    """A store of `years` of quarters for one meter, built through the recorder; returns seconds."""
    t0 = time.monotonic()
    rec = Recorder(str(path), BRUSSELS, live=False)
    start = datetime(2016, 1, 1, tzinfo=BRUSSELS).timestamp()
    c = [10_000.0, 20_000.0, 1_000.0, 2_000.0]
    n = 0
    t = start
    end = datetime(2016 + years, 1, 1, tzinfo=BRUSSELS).timestamp()
    while t <= end:
        h = int(t // 3600) % 24
        c[0 if 7 <= h < 22 else 1] += 0.1 + (h % 5) * 0.05
        c[2 if 7 <= h < 22 else 3] += 0.2 if 10 <= h < 16 else 0.0
        rec.acc.add(Sample("1SAG3100721326", t, (c[0], c[1], c[2], c[3]), 5000.0 + n * 0.01, t, 0.4, 0.0))
        n += 1
        t += 900
        if n % 100_000 == 0:
            rec.commit(snapshot=False)
    rec.commit(final=True)
    rec.writer.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    rec.writer.close()
    return time.monotonic() - t0


def query_ms(path: Path, year: int, reps: int) -> dict[str, tuple[float, float]]:
    """Median ms of the three queries the dashboard makes, in the store's last `year`."""
    q = HistoryQuery(loads(f"[history]\npath = {path}\n{BELGIAN}"))
    cases = {
        "day curve (96 quarters)": lambda: q.rows("quarter", date(year, 6, 3), date(year, 6, 4)),
        "month of days": lambda: q.rows("day", date(year, 6, 1), date(year, 7, 1)),
        "12 months": lambda: q.rows("month", date(year, 1, 1), date(year + 1, 1, 1)),
    }
    out = {}
    for name, fn in cases.items():
        assert fn(), name
        times, cpu = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
        out[name] = (statistics.median(times), statistics.median(cpu))
    q.close()
    return out


def run(quick: bool = False) -> str:
    """All history figures as a RESULTS.md section."""
    count = 8_640 if quick else DAY
    years = 2 if quick else YEARS
    lines = ["", "## History store (bench/bench_history.py)", ""]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        capture = tmp / "day.txt"
        write_capture(capture, count)
        load_before = load()
        on_s, on_cpu, on_code = replay(tmp, capture, True)
        off_s, off_cpu, off_code = replay(tmp, capture, False)
        rate, printed = import_rate(tmp, capture, count)
        store = tmp / "ten.sqlite"
        build_s = ten_years(store, years)
        size = store.stat().st_size
        ms = query_ms(store, 2016 + years - 1, 5 if quick else 30)
    lines += [
        f"One day of 1-s telegrams ({count:,}) replayed with `--replay-speed 0`, CSV off, load {load_before} → "
        f"{load()}; CPU is the post-processor's (control + sinks). Queries priced with a Belgian tariff "
        "(day/night, capacity tariff, fixed fees, gas): every row carries its cost.",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
        f"| one-day replay, history on | {on_s:.1f} s (exit {on_code}) | ≤ {TARGET_REPLAY_S:.0f} s | "
        f"{ok(on_s <= TARGET_REPLAY_S and on_code == 0)} |",
        f"| one-day replay, history off | {off_s:.1f} s (exit {off_code}) | | |",
        f"| post-processor CPU per reading, history on | {on_cpu / count * 1e6:.0f} µs | | |",
        f"| post-processor CPU per reading, history off | {off_cpu / count * 1e6:.0f} µs | | |",
        f"| `--import` of the capture | {rate:,.0f} readings/s (a year of 1-s telegrams: "
        f"{31_536_000 / rate / 60:.0f} min) | minutes | |",
    ]
    for name, (v, cpu) in ms.items():
        lines.append(f"| query over {years} years of quarters: {name} | {v:.2f} ms ({cpu:.2f} ms CPU) | "
                     f"≤ {TARGETS_MS[name]:.0f} ms | {ok(v <= TARGETS_MS[name])} |")
    lines += [
        f"| file size per meter-year | {size / years / 2**20:.2f} MiB | | |",
        "",
        f"The {years}-year store ({years * 35_064:,} quarters) was built through the recorder in {build_s:.1f} s. "
        f"Import said: `{printed}`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(run(quick="--quick" in sys.argv))
