"""`make bench`: every benchmark, peers side by side in one run, written to bench/RESULTS.md."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))

MODULES = ["bench_dsmr", "bench_dlms", "bench_decode", "bench_pipeline", "bench_influx", "bench_tariffs",
           "bench_history", "bench_web", "bench_dashboard", "bench_meters", "bench_meters_latency", "bench_capacity"]


FINDINGS = BENCH / "FINDINGS.md"  # what profiling found; appended to every RESULTS.md



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
    from app.store.settings import HistoryConfig  # in-process configs keep their store out of /var/lib

    HistoryConfig.path = str(Path(tempfile.mkdtemp(prefix="bench-history-")) / "history.sqlite")
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
    findings = "\n" + FINDINGS.read_text() if FINDINGS.exists() else ""
    Path(args.out).write_text("\n".join(head) + "\n".join(sections) + findings)
    print(f"bench: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
