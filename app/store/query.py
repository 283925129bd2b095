"""The one query layer over the history store: --report, the REST API and MCP all call this.

Every row is the `--report --json` object:
    {"start", "end", "import_kwh", "export_kwh", "import_kwh_t1", "import_kwh_t2", "export_kwh_t1",
     "export_kwh_t2", "gas_m3", "peak_kw", "peak_at", "cost": {"total", "import", "export", "capacity",
     "fixed", "gas"}}
Periods are local (the [meter] timezone); `start`/`end` dates are local dates, `end` exclusive.
`peak_kw` is the period's highest quarter-hour average import and `peak_at` that quarter's start.
Reads through its own read-only connection: works while the appliance writes (WAL).
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_right
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from app.config import Config
from app.store import db
from app.tariffs import cost as tariff_cost
from app.tariffs.capacity import add_months, mean_peak_kw, month_of
from app.tariffs.cost import MonthPeak, Pricing, QuarterUse
from app.tariffs.settings import TariffConfig

RESOLUTIONS = ("quarter", "hour", "day", "month", "year")
_COLS = "SUM(imp1), SUM(imp2), SUM(exp1), SUM(exp2), SUM(gas), MAX(imp1 + imp2), start"
_DAY_COLS = "SUM(imp1), SUM(imp2), SUM(exp1), SUM(exp2), SUM(gas), MAX(peak), peak_at"
_GROUP = {
    "quarter": ("start", "start"),
    "hour": ("(start + off) / 3600, off", "(start + off) / 3600, off"),
    "day": ("day", "day"),
    "month": ("day / 100", "day / 100"),
    "year": ("day / 10000", "day / 10000"),
}


def as_date(value: date | str | None, what: str) -> date | None:
    """A local date from a date or 'YYYY-MM-DD' (ValueError naming `what` otherwise)."""
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, datetime):
        return value.date()
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"{what} = {value!r}: not a date (YYYY-MM-DD)") from None


def _daynum(d: date | str | None, default: int) -> int:
    """A local date as the store's YYYYMMDD day number."""
    v = as_date(d, "date")
    return default if v is None else v.year * 10000 + v.month * 100 + v.day


def _r(x: float | None, n: int = 4) -> float:
    return round(x or 0.0, n) + 0.0


class HistoryQuery:
    """Read-only answers from the store: periods, cost, capacity tariff, meters."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.tz = ZoneInfo(cfg.meter.timezone)
        try:
            self.con = db.connect(cfg.history.path, readonly=True)
        except FileNotFoundError:  # nothing written yet: answer from an empty store
            self.con = sqlite3.connect(":memory:", check_same_thread=False)
            self.con.executescript(db.SCHEMA)
        # a store last written before the day rollup existed: the same rows computed from the quarters
        has_days = self.con.execute("SELECT 1 FROM sqlite_master WHERE name = 'days'").fetchone()
        self.days = "days" if has_days else (
            "(SELECT day, meter, SUM(imp1) AS imp1, SUM(imp2) AS imp2, SUM(exp1) AS exp1, SUM(exp2) AS exp2, "
            "SUM(gas) AS gas, MAX(imp1 + imp2) AS peak, start AS peak_at FROM quarters GROUP BY day, meter)")
        self.tariffs: dict[str, TariffConfig] = {t.name: t for t in cfg.tariffs}
        self.tariffs[""] = cfg.tariff
        self._pricing: dict[str, Pricing] = {}

    def close(self) -> None:
        """Close the connection."""
        self.con.close()

    # ------------------------------------------------------------------ helpers

    def _tariff(self, name: str | None) -> tuple[TariffConfig, Pricing]:
        key = name or ""
        if key not in self.tariffs:
            known = ", ".join(repr(n) for n in self.tariffs if n) or "none"
            raise ValueError(f"tariff {name!r}: no [tariff:{name}] section (known: {known})")
        p = self._pricing.get(key)
        if p is None:
            p = self._pricing[key] = Pricing(self.tariffs[key], self.tz)
        return self.tariffs[key], p

    def _meter(self, meter: str | None) -> int | None:
        if meter is None:
            return None
        row = self.con.execute("SELECT id FROM meters WHERE ident = ?", (meter,)).fetchone()
        if row is None:
            raise ValueError(f"meter {meter!r}: not in the store (see meters())")
        return int(row[0])

    def _midnight(self, d: date) -> datetime:
        return datetime(d.year, d.month, d.day, tzinfo=self.tz)

    def _local(self, epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, self.tz)

    def _span(self, start: date | str | None, end: date | str | None) -> tuple[int, int]:
        """Epoch bounds of local dates [start, end); the whole store where None."""
        s, e = as_date(start, "from"), as_date(end, "to")
        if s is not None and e is not None and e <= s:
            raise ValueError(f"to = {e.isoformat()} must be after from = {s.isoformat()}")
        t0 = int(self._midnight(s).timestamp()) if s is not None else -(1 << 62)
        t1 = int(self._midnight(e).timestamp()) if e is not None else 1 << 62
        return t0, t1

    def _bounds(self, resolution: str, key: tuple[Any, ...], first: int) -> tuple[datetime, datetime]:
        """Local start and end of one period."""
        if resolution == "quarter":
            return self._local(key[0]), self._local(key[0] + 900)
        if resolution == "hour":
            t = key[0] * 3600 - key[1]
            return self._local(t), self._local(t + 3600)
        local = self._local(first)
        if resolution == "day":
            d = local.date()
            return self._midnight(d), self._midnight(d + timedelta(days=1))
        if resolution == "month":
            m = date(local.year, local.month, 1)
            nxt = date(m.year + m.month // 12, m.month % 12 + 1, 1)
            return self._midnight(m), self._midnight(nxt)
        y = date(local.year, 1, 1)
        return self._midnight(y), self._midnight(date(y.year + 1, 1, 1))

    def peaks(self, meter: str | None = None, until: date | None = None) -> list[MonthPeak]:
        """Each month's peak (the meter's own where it sent one), highest across meters, oldest first."""
        mid = self._meter(meter)
        sql = "SELECT month, MAX(kw), at, source FROM month_peaks"
        args: list[Any] = []
        if mid is not None:
            sql += " WHERE meter = ?"
            args.append(mid)
        out = []
        for month, kw, at, _source in self.con.execute(sql + " GROUP BY month ORDER BY month", args):
            m = date(int(month[:4]), int(month[5:7]), 1)
            if until is None or m < until:
                out.append(MonthPeak(m, float(kw), None if at is None else self._local(at)))
        return out

    def _quarters(self, t0: int, t1: int, mid: int | None) -> list[QuarterUse]:
        sql = ("SELECT start, SUM(imp1), SUM(imp2), SUM(exp1), SUM(exp2), SUM(gas) FROM quarters "
               "WHERE start >= ? AND start < ?")
        args: list[Any] = [t0, t1]
        if mid is not None:
            sql += " AND meter = ?"
            args.append(mid)
        rows = self.con.execute(sql + " GROUP BY start ORDER BY start", args).fetchall()
        return [QuarterUse(self._local(s), a, b, c, d, g) for s, a, b, c, d, g in rows]

    # ------------------------------------------------------------------ API

    def rows(self, resolution: str, start: date | None, end: date | None, tariff: str | None = None,
             meter: str | None = None) -> list[dict[str, Any]]:
        """One object per period with data in [start, end) (local dates), oldest first."""
        if resolution not in RESOLUTIONS:
            raise ValueError(f"resolution {resolution!r}: one of {', '.join(RESOLUTIONS)}")
        t0, t1 = self._span(start, end)
        tcfg, pricing = self._tariff(tariff)
        mid = self._meter(meter)
        key, group = _GROUP[resolution]
        if resolution in ("quarter", "hour"):
            sql = f"SELECT {key}, {_COLS} FROM quarters WHERE start >= ? AND start < ?"
            args: list[Any] = [t0, t1]
            order = "MIN(start)"
        else:  # from the day rollup
            sql = f"SELECT {key}, {_DAY_COLS} FROM {self.days} WHERE day >= ? AND day < ?"
            args = [_daynum(start, 0), _daynum(end, 99_999_999)]
            order = "MIN(day)"
        if mid is not None:
            sql += " AND meter = ?"
            args.append(mid)
        found = self.con.execute(f"{sql} GROUP BY {group} ORDER BY {order}", args).fetchall()
        if not found:
            return []
        nkey = 2 if resolution == "hour" else 1
        periods = []
        for row in found:
            k = row[:nkey]
            i1, i2, e1, e2, gas, top, at = row[nkey:]
            s, e = self._bounds(resolution, k, at)
            periods.append((s, e, i1, i2, e1, e2, gas, top, at))
        peaks: list[MonthPeak] = []
        if tcfg.capacity_price:  # the months a capacity charge here is billed on: 12 before the first
            first_month = add_months(month_of(periods[0][0].date()), -12)
            peaks = [p for p in self.peaks(meter) if p.month >= first_month]
        lo = self._midnight(d0) if (d0 := as_date(start, "from")) is not None else None
        hi = self._midnight(d1) if (d1 := as_date(end, "to")) is not None else None
        # a period cut by from/to costs (fixed fees, capacity) only its part inside them
        windows = [(max(p[0], lo) if lo else p[0], min(p[1], hi) if hi else p[1]) for p in periods]
        uses: list[list[tuple[float, float, float, float, float, float]]]
        if tcfg.prices_file:  # dynamic prices: cost needs every quarter
            sql = ("SELECT start, SUM(imp1), SUM(imp2), SUM(exp1), SUM(exp2), SUM(gas) FROM quarters "
                   "WHERE start >= ? AND start < ?")
            qargs: list[Any] = [int(windows[0][0].timestamp()), int(windows[-1][1].timestamp())]
            if mid is not None:
                sql += " AND meter = ?"
                qargs.append(mid)
            starts = [w[0].timestamp() for w in windows]
            uses = [[] for _ in periods]
            for r in self.con.execute(sql + " GROUP BY start ORDER BY start", qargs):
                uses[bisect_right(starts, r[0]) - 1].append(r)
        else:  # fixed prices per register: the period's sums cost the same as its quarters
            uses = [[(w[0].timestamp(), p[2], p[3], p[4], p[5], p[6])] for p, w in zip(periods, windows, strict=True)]
        out = []
        iso: dict[datetime, str] = {}  # a quarter's end is the next one's start
        for (s, e, i1, i2, e1, e2, gas, top, at), use, (w0, w1) in zip(periods, uses, windows, strict=True):
            c = pricing.cost_rows(use, w0, w1, peaks)
            s_iso = iso.get(s) or iso.setdefault(s, s.isoformat())
            e_iso = iso.get(e) or iso.setdefault(e, e.isoformat())
            out.append({
                "start": s_iso, "end": e_iso,
                "import_kwh": _r(i1 + i2), "export_kwh": _r(e1 + e2),
                "import_kwh_t1": _r(i1), "import_kwh_t2": _r(i2),
                "export_kwh_t1": _r(e1), "export_kwh_t2": _r(e2), "gas_m3": _r(gas),
                "peak_kw": _r(top * 4.0, 3),
                "peak_at": (s_iso if at == s.timestamp() else self._local(at).isoformat()) if top else None,
                "cost": c.as_dict(),
            })
        return out

    def _uses(self, s: date, e: date, meter: str | None, quarters: bool) -> list[QuarterUse]:
        """The use in [s, e): every quarter (dynamic prices need them) or one sum per local day."""
        mid = self._meter(meter)
        if quarters:
            return self._quarters(int(self._midnight(s).timestamp()), int(self._midnight(e).timestamp()), mid)
        sql = (f"SELECT day, SUM(imp1), SUM(imp2), SUM(exp1), SUM(exp2), SUM(gas) FROM {self.days} WHERE day >= ? "
               "AND day < ?")
        args: list[Any] = [_daynum(s, 0), _daynum(e, 0)]
        if mid is not None:
            sql += " AND meter = ?"
            args.append(mid)
        out = []
        for day, a, b, c, d, g in self.con.execute(sql + " GROUP BY day ORDER BY day", args):
            out.append(QuarterUse(self._midnight(date(day // 10000, day // 100 % 100, day % 100)), a, b, c, d, g))
        return out

    def cost(self, start: date | None = None, end: date | None = None, tariff: str | None = None,
             meter: str | None = None) -> dict[str, Any]:
        """Cost over [start, end) (default: this year so far; cut to the days with data) by month, a
        projection of this month and year, and what the same use costs under every tariff, cheapest first."""
        today = datetime.now(self.tz).date()
        s = as_date(start, "from") or date(today.year, 1, 1)
        e = as_date(end, "to") or today + timedelta(days=1)
        if e <= s:
            raise ValueError(f"to = {e.isoformat()} must be after from = {s.isoformat()}")
        tcfg, pricing = self._tariff(tariff)
        first, last = self.con.execute(f"SELECT MIN(day), MAX(day) FROM {self.days}").fetchone()
        if first is not None:  # the cost of the days with data in the range (fixed fees too)
            s = max(s, date(first // 10000, first // 100 % 100, first % 100))
            e = max(s + timedelta(days=1), min(e, date(last // 10000, last // 100 % 100, last % 100)
                                               + timedelta(days=1)))
        months = self.rows("month", s, e, tariff, meter)
        peaks = self.peaks(meter)
        pricings = [self._tariff(name)[1] for name in self.tariffs]
        dynamic = any(p.tariff.prices_file for p in pricings)
        uses = self._uses(s, e, meter, dynamic)
        compared = tariff_cost.compare(pricings, uses, self._midnight(s), self._midnight(e), peaks, tz=self.tz)
        return {"currency": tcfg.currency, "from": s.isoformat(), "to": e.isoformat(),
                "total": _sum_costs([m["cost"] for m in months]),
                "periods": [{"start": m["start"], "end": m["end"], **m["cost"]} for m in months],
                "projection": self._projection(pricing, meter, peaks, bool(tcfg.prices_file)),
                "compare": [{"tariff": name or "default", "currency": self.tariffs[name].currency,
                             "total": c.as_dict()["total"], "cost": c.as_dict()} for name, c in compared]}

    def _projection(self, pricing: Pricing, meter: str | None, peaks: list[MonthPeak],
                    dynamic: bool) -> dict[str, Any]:
        """This month and year projected from the use so far (as of the last stored quarter)."""
        last = self.con.execute("SELECT MAX(start) FROM quarters").fetchone()[0]
        now = datetime.now(self.tz)
        if last is not None:
            now = min(now, self._local(last + 900))
        year0 = date(now.year, 1, 1)
        uses = self._uses(year0, now.date() + timedelta(days=1), meter, dynamic)
        out: dict[str, Any] = {"method": tariff_cost.PROJECTION_METHOD + "; as of the last stored quarter"}
        for period in ("month", "year"):
            out[period] = tariff_cost.project(pricing, uses, now, peaks, period=period, tz=self.tz).as_dict()
        return out

    def capacity(self, meter: str | None = None) -> dict[str, Any]:
        """The capacity tariff now: this month's peak and the mean of the last 12 months' floored peaks."""
        floor = self.cfg.tariff.capacity_floor_kw
        this = month_of(datetime.now(self.tz).date())
        sql = "SELECT month, kw, at, source FROM month_peaks"
        args: list[Any] = []
        mid = self._meter(meter)
        if mid is not None:
            sql += " WHERE meter = ?"
            args.append(mid)
        best: dict[str, tuple[float, int | None, str]] = {}
        for month, kw, at, source in self.con.execute(sql, args):
            if month not in best or kw > best[month][0]:
                best[month] = (float(kw), at, source)
        months: list[dict[str, Any]] = [
            {"month": m, "kw": round(kw, 3), "at": None if at is None else self._local(at).isoformat(),
             "source": src} for m, (kw, at, src) in sorted(best.items())]
        peaks_kw = {date(int(m[:4]), int(m[5:7]), 1): kw for m, (kw, _a, _s) in best.items()}
        cur = best.get(this.strftime("%Y-%m"))
        return {"month": this.strftime("%Y-%m"), "month_peak_kw": None if cur is None else round(cur[0], 3),
                "month_peak_at": None if cur is None or cur[1] is None else self._local(cur[1]).isoformat(),
                "mean_12m_kw": round(mean_peak_kw(this, peaks_kw, floor), 3) if peaks_kw else None,
                "floor_kw": floor, "months": months}

    def meters(self) -> list[dict[str, Any]]:
        """The meters in the store: id, first and last reading."""
        return [{"meter": ident, "first": None if a is None else self._local(a).isoformat(),
                 "last": None if b is None else self._local(b).isoformat()}
                for ident, a, b in self.con.execute("SELECT ident, first_at, last_at FROM meters ORDER BY id")]


def _sum_costs(costs: Sequence[dict[str, float]]) -> dict[str, float]:
    keys = ("total", "import", "export", "capacity", "fixed", "gas")
    return {k: round(sum(c.get(k, 0.0) for c in costs), 4) for k in keys}
