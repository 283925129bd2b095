"""Capacity-tariff peak shaving: the current quarter's average import, forecast from meter time (pure).

Every reading gives the import energy counter (`total_consumption`, 1-0:1.8.x) and the import power
(1-0:1.7.0). For the local clock quarter the reading falls in:

    so_far_kwh  = counter now - counter at the quarter's start (interpolated with the power when the
                  first reading of a quarter comes after its start; integrated from the power where a
                  meter sends no counter)
    forecast_kw = (so_far_kwh + import_kw * left_s / 3600) / 0.25 h

The cap is `target`, or this month's peak where `follow_peak` and it is higher (seeded from the history
store, then the highest quarter seen and the meter's own 1-0:1.6.0 of this month; reset at the local
month start). Shed above `cap - margin`; the forecast *fits* below `cap - 2 x margin`.
The meter's 1-0:1.4.0 (the quarter's average so far, where sent: the quarter's import so far / 15 min, as
Fluvius meters compute it) is the cross-check, and it is what the operator bills, so it wins:

    counted_kw = so_far_kwh / 0.25 h              (ours, from the counters)
    agree      = |1-0:1.4.0 - counted_kw| <= 0.1 kW + import_kw x 15 s / 900 s
                 (0.1 kW of rounding and clock skew, plus 15 s of the current import: the meter may
                 refresh 1-0:1.4.0 less often than it sends telegrams)
    so_far_kwh = 1-0:1.4.0 x 0.25 h   while they agree, and once a disagreement has lasted DISAGREE_S
                 of meter time (persistent: then the meter's figure, the billed one, wins and the episode is
                 counted); during a shorter disagreement (a quarter boundary the meter and its telegram see
                 differently) the counters' value is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

from app.records import Reading

if TYPE_CHECKING:
    from app.config import Section

QUARTER_S = 900.0
RESTORE_GUARD_S = 120.0  # no restore in a quarter's last 2 minutes
DEMAND_TOLERANCE_KW = 0.1  # 1-0:1.4.0 against the counters: rounding and clock skew...
DEMAND_LAG_S = 15.0  # ...plus this long at the current import (the meter's refresh of 1-0:1.4.0)
DISAGREE_S = 60.0  # a disagreement this long (meter time) is persistent: counted, and the meter's value used


@dataclass(frozen=True)
class CapacityConfig:
    """[capacity]: peak shaving against the capacity tariff."""

    enabled: bool = False
    target: float = 2.5  # kW
    follow_peak: bool = True
    margin: float = 0.2  # kW
    restore_after: float = 60.0  # s


def parse_capacity(sec: Section) -> CapacityConfig:
    """[capacity] enabled, target, follow_peak, margin, restore_after."""
    from app.tariffs.settings import parse_kw

    def kw(low: float) -> object:
        def conv(s: str) -> float:
            v = parse_kw(s)
            if v < low:
                raise ValueError(f"must be at least {low:g} kW")
            return v

        return conv

    cfg = CapacityConfig(
        enabled=sec.flag("enabled", False),
        target=sec.get("target", 2.5, kw(0.1)),  # type: ignore[arg-type]
        follow_peak=sec.flag("follow_peak", True),
        margin=sec.get("margin", 0.2, kw(0.0)),  # type: ignore[arg-type]
        restore_after=sec.duration("restore_after", 60.0, hi=3600.0),
    )
    if 2 * cfg.margin >= cfg.target:
        raise sec.error("margin", sec.items.get("margin", "0.2 kW"),
                        f"2 x margin must stay below target ({cfg.target:g} kW)")
    return cfg


@dataclass(frozen=True, slots=True)
class Forecast:
    """One reading's view of the current quarter."""

    at: datetime
    quarter: datetime  # local start of the quarter
    so_far_kwh: float
    import_kw: float
    left_s: float
    forecast_kw: float
    cap_kw: float
    margin_kw: float
    month_peak_kw: float
    demand_kw: float | None = None  # the meter's 1-0:1.4.0, a cross-check
    counted_kw: float | None = None  # the quarter so far / 15 min from the counters (None: the meter's not sent)
    disagree_s: float = 0.0  # how long 1-0:1.4.0 and the counters have disagreed (0: they agree)
    source: str = "counters"  # what so_far_kwh is: "counters" or "meter" (1-0:1.4.0)

    @property
    def limit_kw(self) -> float:
        """Shed above this."""
        return self.cap_kw - self.margin_kw

    @property
    def fit_kw(self) -> float:
        """Restore (and start sheddable loads) only below this."""
        return self.cap_kw - 2 * self.margin_kw

    @property
    def over(self) -> bool:
        """The forecast exceeds the limit."""
        return self.forecast_kw > self.limit_kw

    @property
    def fits(self) -> bool:
        """The forecast is below cap - 2 x margin."""
        return self.forecast_kw < self.fit_kw

    def with_load(self, load_kw: float) -> float:
        """The forecast if `load_kw` more ran for the rest of the quarter."""
        return self.forecast_kw + load_kw * self.left_s / QUARTER_S

    @property
    def demand_tolerance_kw(self) -> float:
        """How far 1-0:1.4.0 and the counters may differ and still agree."""
        return DEMAND_TOLERANCE_KW + self.import_kw * DEMAND_LAG_S / QUARTER_S

    def shed_reason(self) -> str:
        """`shed: quarter forecast 2.71 kW > 2.30 kW`."""
        return f"shed: quarter forecast {self.forecast_kw:.2f} kW > {self.limit_kw:.2f} kW"


def quarter_start(local: datetime) -> datetime:
    """The start of the local clock quarter holding `local`."""
    return local.replace(minute=local.minute - local.minute % 15, second=0, microsecond=0)


def meter_inputs(reading: Reading, tz: tzinfo | None) -> tuple[float | None, float, float | None, float | None]:
    """(import kWh counter, import kW, 1-0:1.4.0 kW, 1-0:1.6.0 kW when its time is in this local month)."""
    f = reading.fields
    kwh = f.get("total_consumption")
    if kwh is None and ("total_consumption_day" in f or "total_consumption_night" in f):
        kwh = f.get("total_consumption_day", 0.0) + f.get("total_consumption_night", 0.0)
    peak = f.get("maximum_demand_month")
    if peak is not None:
        v = reading.values.get("1-0:1.6.0")
        at = v.timestamp if v is not None else None
        now = _local(reading.time, tz)
        if at is not None and (_local(at, tz).year, _local(at, tz).month) != (now.year, now.month):
            peak = None  # last month's peak, sent before the meter rolled over
    return kwh, float(f.get("actual_total_consumption", 0.0)), f.get("current_average_demand"), peak


def _local(t: datetime, tz: tzinfo | None) -> datetime:
    return t.astimezone(tz) if tz is not None and t.tzinfo is not None else t


class PeakShaver:
    """The forecast of the current quarter and this month's peak, fed one reading at a time."""

    def __init__(self, cfg: CapacityConfig, tz: tzinfo | None = None) -> None:
        """`tz`: the meter's zone for clock quarters and months (None: each reading time's own zone)."""
        self.cfg = cfg
        self.tz = tz
        self.month: date | None = None
        self.month_peak_kw = 0.0
        self._seed: tuple[date, float] | None = None
        self._quarter: datetime | None = None
        self._base_kwh: float | None = None  # counter at the quarter's start
        self._integrated_kwh = 0.0  # without counters: power integrated since the quarter's start
        self._last: tuple[datetime, float, float | None] | None = None  # time, kW, counter
        self.last: Forecast | None = None
        self._disagree_since: datetime | None = None  # 1-0:1.4.0 and the counters disagree since then
        self.disagreements = 0  # persistent disagreements (episodes) between 1-0:1.4.0 and the counters

    def seed(self, month: date, kw: float) -> None:
        """This month's peak from the history store (applies while `month` is the current month)."""
        self._seed = (month.replace(day=1), kw)
        if self.month == self._seed[0]:
            self.month_peak_kw = max(self.month_peak_kw, kw)

    def update(self, t: datetime, import_kwh: float | None, import_kw: float,
               demand_kw: float | None = None, meter_peak_kw: float | None = None) -> Forecast:
        """The forecast at meter time `t` (times never go back: the policy holds a frozen clock)."""
        local = _local(t, self.tz)
        month = local.date().replace(day=1)
        if month != self.month:
            self.month = month
            self.month_peak_kw = self._seed[1] if self._seed is not None and self._seed[0] == month else 0.0
        q = quarter_start(local)
        if q != self._quarter:
            self._close_quarter(q)
            into_s = (local - q).total_seconds()
            self._quarter = q
            self._disagree_since = None  # a fresh baseline: the boundary is where they may briefly differ
            self._integrated_kwh = import_kw * into_s / 3600 if self._last is None else 0.0
            if self._last is not None:  # the part of the gap since the boundary, at this reading's power
                self._integrated_kwh = import_kw * min(into_s, (t - self._last[0]).total_seconds()) / 3600
            self._base_kwh = None if import_kwh is None else import_kwh - self._integrated_kwh
        elif self._last is not None:
            self._integrated_kwh += self._last[1] * max(0.0, (t - self._last[0]).total_seconds()) / 3600
        if import_kwh is not None and self._base_kwh is None:
            self._base_kwh = import_kwh - self._integrated_kwh
        so_far = self._integrated_kwh if import_kwh is None or self._base_kwh is None else import_kwh - self._base_kwh
        so_far = max(0.0, so_far)
        counted_kw: float | None = None
        disagree_s, source = 0.0, "counters"
        if demand_kw is not None:
            counted_kw = so_far / (QUARTER_S / 3600)
            if abs(demand_kw - counted_kw) <= DEMAND_TOLERANCE_KW + import_kw * DEMAND_LAG_S / QUARTER_S:
                self._disagree_since = None
            elif self._disagree_since is None:
                self._disagree_since = t
            if self._disagree_since is not None:
                disagree_s = max(0.0, (t - self._disagree_since).total_seconds())
            if self._disagree_since is None or disagree_s >= DISAGREE_S:
                if disagree_s >= DISAGREE_S and (self.last is None or self.last.disagree_s < DISAGREE_S):
                    self.disagreements += 1
                so_far, source = max(0.0, demand_kw) * QUARTER_S / 3600, "meter"
        else:
            self._disagree_since = None
        left_s = max(0.0, QUARTER_S - (local - q).total_seconds())
        forecast = (so_far + import_kw * left_s / 3600) / (QUARTER_S / 3600)
        if meter_peak_kw is not None:
            self.month_peak_kw = max(self.month_peak_kw, meter_peak_kw)
        cap = max(self.cfg.target, self.month_peak_kw) if self.cfg.follow_peak else self.cfg.target
        self._last = (t, import_kw, import_kwh)
        self.last = Forecast(t, q, so_far, import_kw, left_s, forecast, cap, self.cfg.margin,
                             self.month_peak_kw, demand_kw, counted_kw, disagree_s, source)
        return self.last

    def _close_quarter(self, new_quarter: datetime) -> None:
        """The quarter that ended: its last forecast is its average, a candidate for the month's peak."""
        last = self.last
        if last is None or self._quarter is None or new_quarter - self._quarter > timedelta(minutes=15):
            return  # a gap: the last forecast does not cover the rest of the quarter
        if last.quarter.date().replace(day=1) == self.month:
            self.month_peak_kw = max(self.month_peak_kw, last.forecast_kw)

    def reset_gap(self) -> None:
        """A gap in meter time: the next reading starts a fresh baseline."""
        self._quarter = None
        self._last = None
        self.last = None
        self._disagree_since = None
