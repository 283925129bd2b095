"""Cost of energy use under one tariff: pure (quarters and month peaks in, money out).

This is the interface the store's query layer (--report, REST, MCP) calls:

- `Pricing(tariff).cost(quarters, start, end, peaks)`: the cost of [start, end) by part. Energy is priced
  per register (import t1/t2, export t1/t2) or per dynamic price slot, export as a negative, gas per m³.
  Fixed fees are spread per local day (per-year fee / days in that year + per-month fee / days in that
  month + per-day fee) and the capacity tariff per day of its month (see capacity.py), each in
  proportion to the part of the day the period covers: so any split of a period adds up to the whole.
- `Pricing(tariff).cost_rows(rows, start, end, peaks)`: the same from raw store rows (epoch seconds, no
  datetime per quarter): the fast path for a year of quarters.
- `project(pricing, quarters, now, ...)`: the current month's or year's cost from what is used so far
  (`projections` gives both in their JSON shape).
- `compare(pricings, quarters, start, end, peaks)`: the same use under every tariff, cheapest first.
"""

from __future__ import annotations

import calendar
import math
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo

from app.tariffs.capacity import add_months, merge_peaks, month_charge, peaks_from_quarters
from app.tariffs.prices import PriceTable
from app.tariffs.settings import TariffConfig
from app.tariffs.usage import MonthPeak, QuarterUse

__all__ = ["PROJECTION_METHOD", "Cost", "MonthPeak", "Pricing", "Projection", "QuarterUse", "Row", "compare",
           "day_shares", "project", "projections"]

# A quarter as the store holds it: (epoch s of its start, import kWh t1, t2, export kWh t1, t2, gas m³)
Row = tuple[float, float, float, float, float, float]


@dataclass(frozen=True, slots=True)
class Cost:
    """Money for one period, by part; export is negative (income)."""

    total: float = 0.0
    import_: float = 0.0
    export: float = 0.0
    capacity: float = 0.0
    fixed: float = 0.0
    gas: float = 0.0
    unpriced_kwh: float = 0.0  # energy outside the prices file, priced at the fixed register prices

    def as_dict(self) -> dict[str, float]:
        """The JSON shape of `--report --json` and the API: total, import, export, capacity, fixed, gas."""
        out = {"total": self.total, "import": self.import_, "export": self.export, "capacity": self.capacity,
               "fixed": self.fixed, "gas": self.gas}
        if self.unpriced_kwh:
            out["unpriced_kwh"] = self.unpriced_kwh
        return {k: round(v, 4) + 0.0 for k, v in out.items()}  # + 0.0: no "-0.0" in JSON

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.total + other.total, self.import_ + other.import_, self.export + other.export,
                    self.capacity + other.capacity, self.fixed + other.fixed, self.gas + other.gas,
                    self.unpriced_kwh + other.unpriced_kwh)

    @property
    def variable(self) -> float:
        """What depends on use: import + export + gas."""
        return self.import_ + self.export + self.gas


def day_shares(start: datetime, end: datetime, tz: tzinfo) -> list[tuple[date, float]]:
    """Each local day [start, end) touches, with the share of that day (23, 24 or 25 h long) it covers."""
    out: list[tuple[date, float]] = []
    if end <= start:
        return out
    s_ts, e_ts = start.timestamp(), end.timestamp()
    d = start.astimezone(tz).date()
    day_s = datetime.combine(d, time(0), tz).timestamp()
    while day_s < e_ts:
        nxt = d + timedelta(days=1)
        next_s = datetime.combine(nxt, time(0), tz).timestamp()
        covered = min(e_ts, next_s) - max(s_ts, day_s)
        if covered > 0:
            out.append((d, 1.0 if covered >= next_s - day_s else covered / (next_s - day_s)))
        d, day_s = nxt, next_s
    return out


class Pricing:
    """One tariff ready to price periods (its prices file was loaded at config load)."""

    def __init__(self, tariff: TariffConfig, tz: tzinfo | None = None) -> None:
        self.tariff = tariff
        self.tz = tz  # local days and months; None: the tz of each period's start
        self.prices: PriceTable | None = tariff.prices
        if self.prices is None and tariff.prices_file:
            from app.tariffs.settings import with_prices

            self.prices = with_prices(tariff, str(tz) if tz is not None else "Europe/Brussels").prices

    @property
    def name(self) -> str:
        """The tariff's name ("" for [tariff])."""
        return self.tariff.name

    def energy(self, quarters: Iterable[QuarterUse], start: datetime, end: datetime) -> Cost:
        """Import, export and gas of the quarters starting in [start, end)."""
        t = self.tariff
        i1 = i2 = e1 = e2 = gas_m3 = 0.0
        if self.prices is None:  # fixed prices: sum per register, multiply once
            for q in quarters:
                if start <= q.start < end:
                    i1 += q.import_kwh_t1
                    i2 += q.import_kwh_t2
                    e1 += q.export_kwh_t1
                    e2 += q.export_kwh_t2
                    gas_m3 += q.gas_m3
            imp = i1 * t.import_price_t1 + i2 * t.import_price_t2
            exp = -(e1 * t.export_price_t1 + e2 * t.export_price_t2)
            gas = gas_m3 * t.gas_price
            return Cost(imp + exp + gas, imp, exp, 0.0, 0.0, gas)
        rows = ((q.start.timestamp(), q.import_kwh_t1, q.import_kwh_t2, q.export_kwh_t1, q.export_kwh_t2, q.gas_m3)
                for q in quarters if start <= q.start < end)
        return self._dynamic(rows, -math.inf, math.inf)

    def energy_rows(self, rows: Iterable[Row], start_s: float, end_s: float) -> Cost:
        """Import, export and gas of store rows (see `Row`) whose quarter starts in [start_s, end_s)."""
        if self.prices is not None:
            return self._dynamic(rows, start_s, end_s)
        t = self.tariff
        i1 = i2 = e1 = e2 = gas_m3 = 0.0
        for ts, a, b, c, d, g in rows:
            if start_s <= ts < end_s:
                i1 += a
                i2 += b
                e1 += c
                e2 += d
                gas_m3 += g
        imp = i1 * t.import_price_t1 + i2 * t.import_price_t2
        exp = -(e1 * t.export_price_t1 + e2 * t.export_price_t2)
        gas = gas_m3 * t.gas_price
        return Cost(imp + exp + gas, imp, exp, 0.0, 0.0, gas)

    def _dynamic(self, rows: Iterable[Row], start_s: float, end_s: float) -> Cost:
        """Energy at the prices file's slot prices; outside the file at the register prices (counted)."""
        t = self.tariff
        assert self.prices is not None
        table = self.prices
        starts, last_s, imp_p, exp_p = table.starts, table.end_s, table.import_prices, table.export_prices
        first_s, n = starts[0], len(starts)
        imp = exp = unpriced = gas_m3 = 0.0
        k, lo, hi = -1, 0.0, 0.0  # the slot of the row before: sorted rows mostly stay in it
        for ts, i1, i2, e1, e2, g in rows:
            if not start_s <= ts < end_s:
                continue
            gas_m3 += g
            if not lo <= ts < hi:
                if not first_s <= ts < last_s:  # outside the file: the fixed register prices, and say how much
                    imp += i1 * t.import_price_t1 + i2 * t.import_price_t2
                    exp -= e1 * t.export_price_t1 + e2 * t.export_price_t2
                    unpriced += i1 + i2 + e1 + e2
                    continue
                k = bisect_right(starts, ts) - 1
                lo, hi = starts[k], (starts[k + 1] if k + 1 < n else last_s)
            imp += (i1 + i2) * imp_p[k]
            if exp_p is not None:
                exp -= (e1 + e2) * exp_p[k]
            else:
                exp -= e1 * t.export_price_t1 + e2 * t.export_price_t2
        gas = gas_m3 * t.gas_price
        return Cost(imp + exp + gas, imp, exp, 0.0, 0.0, gas, unpriced)

    def standing(self, start: datetime, end: datetime, peaks_kw: dict[date, float],
                 tz: tzinfo | None = None, month_cache: dict[date, float] | None = None) -> tuple[float, float]:
        """Fixed fees and capacity charge of [start, end), spread per local day."""
        t = self.tariff
        zone = tz or self.tz or start.tzinfo
        assert zone is not None, "aware datetimes needed"
        fixed = capacity = 0.0
        if month_cache is None:
            month_cache = {}
        for d, share in day_shares(start, end, zone):
            mdays = calendar.monthrange(d.year, d.month)[1]
            ydays = 366 if calendar.isleap(d.year) else 365
            fixed += share * (t.fixed_per_year / ydays + t.fixed_per_month / mdays + t.fixed_per_day)
            if t.capacity_price:
                m = date(d.year, d.month, 1)
                charge = month_cache.get(m)
                if charge is None:
                    charge = month_cache[m] = month_charge(m, peaks_kw, t.capacity_price, t.capacity_floor_kw)
                capacity += share * charge / mdays
        return fixed, capacity

    def cost(self, quarters: Iterable[QuarterUse], start: datetime, end: datetime,
             peaks: Sequence[MonthPeak] = (), *, tz: tzinfo | None = None, derive_peaks: bool = True) -> Cost:
        """Cost of the quarters in [start, end) (aware datetimes, local period bounds).

        `peaks` are the months' peaks as billed (the meter's 1-0:1.6.0 / 0-0:98.1.0, or the store's own);
        months without one take the highest of the quarters given (pass the whole month's quarters, or its
        peak, to price part of a month; `derive_peaks=False` when `quarters` are period sums, not quarters).
        `tz` sets the local days and months (default: the Pricing's, else start's tzinfo)."""
        qs = quarters if isinstance(quarters, (list, tuple)) else list(quarters)
        energy = self.energy(qs, start, end)
        peaks_kw: dict[date, float] = {}
        if self.tariff.capacity_price:
            peaks_kw = merge_peaks(peaks, peaks_from_quarters(qs) if derive_peaks else None)
        fixed, capacity = self.standing(start, end, peaks_kw, tz)
        return Cost(energy.total + fixed + capacity, energy.import_, energy.export, capacity, fixed, energy.gas,
                    energy.unpriced_kwh)

    def cost_rows(self, rows: Iterable[Row], start: datetime, end: datetime, peaks: Sequence[MonthPeak] = (),
                  *, tz: tzinfo | None = None) -> Cost:
        """`cost` of raw store rows, with no datetime per quarter (the query layer's fast path).

        Rows carry no local month, so the capacity tariff takes the month peaks from `peaks` only."""
        energy = self.energy_rows(rows, start.timestamp(), end.timestamp())
        peaks_kw = merge_peaks(peaks) if self.tariff.capacity_price else {}
        fixed, capacity = self.standing(start, end, peaks_kw, tz)
        return Cost(energy.total + fixed + capacity, energy.import_, energy.export, capacity, fixed, energy.gas,
                    energy.unpriced_kwh)


PROJECTION_METHOD = ("energy, export and gas so far + their daily average so far (since the first quarter with "
                     "data in the period) x the days left; fixed fees and capacity for the whole period")


@dataclass(frozen=True, slots=True)
class Projection:
    """The cost of a whole month or year: what is used so far, and the rest at the pace so far."""

    start: datetime
    end: datetime
    now: datetime
    so_far: Cost  # [start, now): energy used, fixed and capacity up to now
    projected: Cost  # [start, end): the whole period
    basis_days: float  # days of use the daily average is taken over

    def as_dict(self) -> dict[str, object]:
        """JSON shape: bounds, the method and its basis, and both costs."""
        return {"method": PROJECTION_METHOD, "start": self.start.isoformat(), "end": self.end.isoformat(),
                "now": self.now.isoformat(), "basis_days": round(self.basis_days, 3), "so_far": self.so_far.as_dict(),
                "projected": self.projected.as_dict()}


def period_bounds(now: datetime, period: str, tz: tzinfo) -> tuple[datetime, datetime]:
    """The local month or year holding `now`."""
    local = now.astimezone(tz)
    if period == "month":
        first = date(local.year, local.month, 1)
        after = add_months(first, 1)
    elif period == "year":
        first, after = date(local.year, 1, 1), date(local.year + 1, 1, 1)
    else:
        raise ValueError(f"period must be 'month' or 'year', not {period!r}")
    return datetime.combine(first, time(0), tz), datetime.combine(after, time(0), tz)


def project(pricing: Pricing, quarters: Iterable[QuarterUse], now: datetime, peaks: Sequence[MonthPeak] = (),
            *, period: str = "month", tz: tzinfo | None = None, derive_peaks: bool = True) -> Projection:
    """Project this month's (or year's) cost from what is used so far.

    Energy, export and gas: what the quarters so far cost, plus their daily average (over the time from the
    first quarter with data in the period to `now`) times the days left. Fixed fees and the capacity tariff:
    for the whole period, the capacity of months to come at the 12-month mean known now (this month's peak
    so far can only rise, so it is a floor on the capacity part)."""
    zone = tz or pricing.tz or now.tzinfo
    assert zone is not None, "an aware `now` is needed"
    start, end = period_bounds(now, period, zone)
    qs = [q for q in quarters if start <= q.start < now]
    so_far = pricing.cost(qs, start, now, peaks, tz=zone, derive_peaks=derive_peaks)
    # energy up to now, standing charges for all of it
    whole = pricing.cost(qs, start, end, peaks, tz=zone, derive_peaks=derive_peaks)
    first = min((q.start for q in qs), default=now)
    basis_s = now.timestamp() - first.timestamp()
    rest = (end.timestamp() - now.timestamp()) / basis_s if basis_s > 0 else 0.0
    projected = Cost(
        whole.total + rest * so_far.variable, whole.import_ + rest * so_far.import_,
        whole.export + rest * so_far.export, whole.capacity, whole.fixed, whole.gas + rest * so_far.gas,
        so_far.unpriced_kwh)
    return Projection(start, end, now, so_far, projected, basis_s / 86400.0)


def projections(pricing: Pricing, quarters: Iterable[QuarterUse], now: datetime, peaks: Sequence[MonthPeak] = (),
                *, tz: tzinfo | None = None, derive_peaks: bool = True) -> dict[str, object]:
    """This month's and this year's projections in their JSON shape (pass this year's quarters so far)."""
    qs = quarters if isinstance(quarters, (list, tuple)) else list(quarters)
    return {"method": PROJECTION_METHOD,
            **{period: project(pricing, qs, now, peaks, period=period, tz=tz, derive_peaks=derive_peaks).as_dict()
               for period in ("month", "year")}}


def compare(pricings: Sequence[Pricing], quarters: Iterable[QuarterUse], start: datetime, end: datetime,
            peaks: Sequence[MonthPeak] = (), *, tz: tzinfo | None = None,
            derive_peaks: bool = True) -> list[tuple[str, Cost]]:
    """The same use priced under every tariff, cheapest first (ties by name; "" is [tariff])."""
    if len({p.tariff.currency for p in pricings}) > 1:
        raise ValueError("tariffs in different currencies cannot be compared: "
                         + ", ".join(f"{p.name or 'tariff'} {p.tariff.currency}" for p in pricings))
    qs = quarters if isinstance(quarters, (list, tuple)) else list(quarters)
    rows = [(p.name, p.cost(qs, start, end, peaks, tz=tz, derive_peaks=derive_peaks)) for p in pricings]
    return sorted(rows, key=lambda r: (r[1].total, r[0]))
