"""The Flemish capacity tariff, as Fluvius bills it.

Each local month's peak is its highest quarter-hour average import (kW), floored at `capacity_floor`
(2.5 kW). A month is billed on the mean of the floored peaks of the last 12 months, that month included
(fewer months known: the mean of those there; none known: the floor), at `capacity_price / 12 × mean`
per month. The meter's own peaks (1-0:1.6.0 this month, 0-0:98.1.0 the months before) are what is billed,
so they win over peaks computed from the quarters.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date

from app.tariffs.usage import MonthPeak, QuarterUse

WINDOW_MONTHS = 12


def month_of(d: date) -> date:
    """The first day of the month holding `d`."""
    return date(d.year, d.month, 1)


def add_months(month: date, n: int) -> date:
    """The first day of the month `n` months after `month` (n may be negative)."""
    k = month.year * 12 + month.month - 1 + n
    return date(k // 12, k % 12 + 1, 1)


def quarter_kw(q: QuarterUse) -> float:
    """A quarter's average import power: its kWh over a quarter of an hour."""
    return (q.import_kwh_t1 + q.import_kwh_t2) * 4.0


def peaks_from_quarters(quarters: Iterable[QuarterUse]) -> dict[date, MonthPeak]:
    """Each local month's highest quarter (the quarters' starts are local, aware times)."""
    best: dict[tuple[int, int], QuarterUse] = {}
    year = month = 0
    top: QuarterUse | None = None
    top_kwh = -1.0
    for q in quarters:  # hot: a year of quarters; one dict update per run of quarters in the same month
        s = q.start
        if s.month != month or s.year != year:
            if top is not None:
                _keep(best, (year, month), top)
            year, month, top, top_kwh = s.year, s.month, None, -1.0
        kwh = q.import_kwh_t1 + q.import_kwh_t2
        if kwh > top_kwh:
            top, top_kwh = q, kwh
    if top is not None:
        _keep(best, (year, month), top)
    return {date(y, m, 1): MonthPeak(date(y, m, 1), quarter_kw(q), q.start) for (y, m), q in best.items()}


def _keep(best: dict[tuple[int, int], QuarterUse], key: tuple[int, int], q: QuarterUse) -> None:
    cur = best.get(key)
    if cur is None or quarter_kw(q) > quarter_kw(cur):
        best[key] = q


def merge_peaks(meter: Iterable[MonthPeak], own: Mapping[date, MonthPeak] | None = None) -> dict[date, float]:
    """Month -> unfloored peak kW: the meter's own where it reported one, the quarters' otherwise."""
    out = {m: p.kw for m, p in (own or {}).items()}
    for p in meter:
        out[month_of(p.month)] = p.kw
    return out


def floored_kw(kw: float, floor_kw: float) -> float:
    """A month's peak as billed: never below the floor."""
    return max(kw, floor_kw)


def mean_peak_kw(month: date, peaks_kw: Mapping[date, float], floor_kw: float) -> float:
    """The 12-month mean of floored peaks a month is billed on (the floor when no month is known)."""
    window = [floored_kw(peaks_kw[m], floor_kw)
              for m in (add_months(month, -i) for i in range(WINDOW_MONTHS)) if m in peaks_kw]
    return sum(window) / len(window) if window else floor_kw


def month_charge(month: date, peaks_kw: Mapping[date, float], capacity_price: float, floor_kw: float) -> float:
    """One month's capacity charge: capacity_price (per kW per year) / 12 × the 12-month mean."""
    if not capacity_price:
        return 0.0
    return capacity_price / 12.0 * mean_peak_kw(month, peaks_kw, floor_kw)
