"""Tariff pricing speed: a year of quarters in one call (fixed and dynamic prices), a year of daily rows."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from app.tariffs.capacity import add_months
from app.tariffs.cost import MonthPeak, Pricing, QuarterUse, compare
from app.tariffs.prices import parse_prices
from app.tariffs.settings import TariffConfig

BRU = ZoneInfo("Europe/Brussels")
YEAR = 2025


def year_of_quarters() -> list[QuarterUse]:
    """35,040 local quarters of 2025 with random use (seeded)."""
    rnd = random.Random(12)
    t = datetime(YEAR, 1, 1, tzinfo=BRU).astimezone(UTC)
    end = datetime(YEAR + 1, 1, 1, tzinfo=BRU).astimezone(UTC)
    out = []
    while t < end:
        local = t.astimezone(BRU)
        day = 7 <= local.hour < 22 and local.weekday() < 5
        imp, exp = rnd.uniform(0, 0.6), rnd.uniform(0, 0.5) if 10 <= local.hour < 17 else 0.0
        out.append(QuarterUse(local, imp if day else 0.0, 0.0 if day else imp, exp if day else 0.0,
                              0.0 if day else exp, rnd.uniform(0, 0.05)))
        t += timedelta(minutes=15)
    return out


def dynamic_file(step_min: int = 60) -> str:
    """A prices file of hourly (or 15-min) slots for the year, ISO times, with an export column."""
    rnd = random.Random(7)
    lines = ["start;import EUR/kWh;export EUR/kWh"]
    t = datetime(YEAR, 1, 1, tzinfo=BRU).astimezone(UTC)
    end = datetime(YEAR + 1, 1, 1, tzinfo=BRU).astimezone(UTC)
    while t < end:
        lines.append(f"{t.astimezone(BRU).isoformat()};{rnd.uniform(0.05, 0.45):.4f};{rnd.uniform(-0.02, 0.1):.4f}")
        t += timedelta(minutes=step_min)
    return "\n".join(lines) + "\n"


def best_ms(fn: Callable[[], object], rounds: int) -> tuple[float, float]:
    """Best and median wall time of `rounds` calls, in ms."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return times[0], times[len(times) // 2]


def run(quick: bool = False) -> str:
    """Milliseconds to price a year of quarters, one call or 365 daily calls, per kind of tariff."""
    rounds = 3 if quick else 15
    qs = year_of_quarters()
    start, end = datetime(YEAR, 1, 1, tzinfo=BRU), datetime(YEAR + 1, 1, 1, tzinfo=BRU)
    peaks = [MonthPeak(add_months(date(YEAR, 1, 1), -i), 3.0 + i / 10) for i in range(1, 13)]
    daynight = TariffConfig(name="daynight", import_price_t1=0.32, import_price_t2=0.26, export_price_t1=0.04,
                            export_price_t2=0.03, fixed_per_year=120, capacity_price=53.0, gas_price=1.1)
    t0 = time.perf_counter()
    table = parse_prices(dynamic_file(), BRU)
    load_ms = (time.perf_counter() - t0) * 1000
    quarter_text = dynamic_file(15)
    t0 = time.perf_counter()
    quarter_slots = len(parse_prices(quarter_text, BRU).starts)
    load_q_ms = (time.perf_counter() - t0) * 1000
    dynamic = replace(daynight, name="dynamic", prices_file="bench", prices=table, capacity_price=0.0)
    days: list[tuple[datetime, datetime, list[QuarterUse]]] = []
    d = start
    i = 0
    while d < end:
        nxt = datetime.combine(d.date() + timedelta(days=1), datetime.min.time(), BRU)
        j = i
        while j < len(qs) and qs[j].start < nxt:
            j += 1
        days.append((d, nxt, qs[i:j]))
        d, i = nxt, j

    def daily(p: Pricing) -> Callable[[], object]:
        return lambda: [p.cost(dq, a, b, peaks) for a, b, dq in days]

    store_rows = [(q.start.timestamp(), q.import_kwh_t1, q.import_kwh_t2, q.export_kwh_t1, q.export_kwh_t2, q.gas_m3)
            for q in qs]

    cases = [
        ("day/night + capacity, one call over the year", lambda: Pricing(daynight).cost(qs, start, end, peaks)),
        ("dynamic hourly prices, one call over the year", lambda: Pricing(dynamic).cost(qs, start, end, peaks)),
        ("dynamic hourly prices, `cost_rows` (store rows, epoch seconds) over the year",
         lambda: Pricing(dynamic).cost_rows(store_rows, start, end, peaks)),
        ("day/night + capacity, 365 daily calls (a year of daily rows)", daily(Pricing(daynight))),
        ("dynamic hourly prices, 365 daily calls", daily(Pricing(dynamic))),
        ("compare 3 tariffs over the year", lambda: compare(
            [Pricing(daynight), Pricing(dynamic), Pricing(replace(daynight, name="single", import_price_t2=0.32))],
            qs, start, end, peaks)),
    ]
    rows = [f"{len(qs):,} quarters of {YEAR} (Europe/Brussels), best and median of {rounds} runs; "
            f"loading and checking a year's prices file (at config load) took {load_ms:.0f} ms hourly "
            f"({len(table.starts):,} slots), {load_q_ms:.0f} ms in quarters ({quarter_slots:,} slots).",
            "", "| workload | best (ms) | median (ms) |", "|---|---:|---:|"]
    worst = 0.0
    for label, fn in cases:
        best, median = best_ms(fn, rounds)
        worst = max(worst, median)
        rows.append(f"| {label} | {best:.1f} | {median:.1f} |")
    rows += ["", f"Budget: the API's 100 ms p99 for a year of daily rows includes the query; pricing's slowest "
                 f"median here is {worst:.1f} ms."]
    return "## Tariffs: pricing a year (issue 12)\n\n" + "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(run(quick=True))
