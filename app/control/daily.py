"""Daily minimum run time (`min_daily = 2 h by 21:00`): when a relay must run, on meter time (pure).

The relay's on-time since local midnight is summed reading by reading. It is *due* (switched on
whatever its rule says, kept on until the minimum is met) when

    now >= deadline - time still to run                 (late enough to finish by the deadline), or
    a tariff is given and now is among the cheapest:    the cheaper fixed register is in force (the
        meter's 0-0:96.14.0), or the current dynamic price slot is one of the cheapest slots before
        the deadline that together cover the time still to run.

After the deadline (or once the minimum is met) the rule alone decides until the next local midnight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, tzinfo
from datetime import time as dtime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.tariffs.settings import TariffConfig

_MIN_DAILY_RE = re.compile(r"^\s*(.+?)\s+by\s+(\d{1,2}):(\d{2})\s*$", re.I)


@dataclass(frozen=True)
class MinDaily:
    """Run at least `run_s` a local day, finished by `deadline`."""

    run_s: float
    deadline: dtime

    def __str__(self) -> str:
        return f"{_span(self.run_s)} by {self.deadline:%H:%M}"


def parse_min_daily(text: str) -> MinDaily | None:
    """`2 h by 21:00` -> MinDaily(7200, 21:00); empty -> None."""
    if not text.strip():
        return None
    from app.config import parse_duration

    m = _MIN_DAILY_RE.match(text)
    if m is None:
        raise ValueError("expected '<duration> by HH:MM', e.g. '2 h by 21:00'")
    run_s = parse_duration(m.group(1))
    hh, mm = int(m.group(2)), int(m.group(3))
    if hh > 24 or mm > 59 or (hh == 24 and mm):
        raise ValueError("the deadline must be between 00:00 and 24:00")
    deadline = dtime(23, 59, 59) if hh == 24 else dtime(hh, mm)
    if run_s <= 0:
        raise ValueError("the run time must be positive")
    if run_s > deadline.hour * 3600 + deadline.minute * 60 + deadline.second:
        raise ValueError("the run time does not fit between midnight and the deadline")
    return MinDaily(run_s, deadline)


def _span(seconds: float) -> str:
    """`1 h 20 min`, `45 min`, `2 h`."""
    minutes = int(round(seconds / 60))
    h, m = divmod(minutes, 60)
    if h and m:
        return f"{h} h {m} min"
    return f"{h} h" if h else f"{m} min"


class DailyRun:
    """One relay's run time today and whether its minimum is due now."""

    def __init__(self, need: MinDaily, tz: tzinfo | None = None, tariff: TariffConfig | None = None) -> None:
        """`tariff`: run in its cheapest register / price slot before the deadline (None: as late as possible)."""
        self.need = need
        self.tz = tz
        self.tariff = tariff
        self.day: date | None = None
        self.run_s = 0.0
        self._last: datetime | None = None

    def update(self, t: datetime, on: bool) -> None:
        """Count the time since the last reading when the relay was on (by its state then)."""
        local = t.astimezone(self.tz) if self.tz is not None and t.tzinfo is not None else t
        if local.date() != self.day:
            self.day = local.date()
            midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
            self.run_s = 0.0
            if self._last is not None and on:
                self.run_s = max(0.0, min((t - self._last).total_seconds(), (local - midnight).total_seconds()))
        elif self._last is not None and on:
            self.run_s += max(0.0, (t - self._last).total_seconds())
        self._last = t

    def restore(self, day: date, run_s: float) -> None:
        """Today's run time as saved before a restart (ignored unless `day` is the first reading's local day)."""
        if self._last is None and self.day in (None, day):
            self.day = day
            self.run_s = max(self.run_s, min(run_s, 86400.0))

    def left_s(self) -> float:
        """Run time still needed today."""
        return max(0.0, self.need.run_s - self.run_s)

    def due(self, t: datetime, register: int | None = None) -> str | None:
        """The reason it must run now, or None (minimum met, past the deadline, or later is cheaper)."""
        left = self.left_s()
        if left <= 0:
            return None
        local = t.astimezone(self.tz) if self.tz is not None and t.tzinfo is not None else t
        deadline = datetime.combine(local.date(), self.need.deadline, local.tzinfo)
        if local >= deadline:
            return None
        reason = f"daily minimum: {_span(left)} left before {self.need.deadline:%H:%M}"
        if (deadline - local).total_seconds() <= left:
            return reason
        cheap = self._cheap_now(local, deadline, left, register)
        return None if cheap is None else f"{reason} ({cheap})"

    def _cheap_now(self, local: datetime, deadline: datetime, left_s: float, register: int | None) -> str | None:
        t = self.tariff
        if t is None:
            return None
        if t.prices is not None:
            return self._cheap_slot(local, deadline, left_s)
        if register in (1, 2) and t.import_price_t1 != t.import_price_t2:
            cheap = 1 if t.import_price_t1 < t.import_price_t2 else 2
            if register == cheap:
                return f"tariff {cheap}, the cheaper register"
        return None

    def _cheap_slot(self, local: datetime, deadline: datetime, left_s: float) -> str | None:
        """Whether the current dynamic price slot is among the cheapest covering `left_s` before the deadline."""
        assert self.tariff is not None and self.tariff.prices is not None
        table = self.tariff.prices
        now_s, end_s = local.timestamp(), deadline.timestamp()
        i = table.slot(now_s)
        if i < 0:
            return None
        slots: list[tuple[float, float, int]] = []  # (price, usable seconds, index)
        j = i
        while j < len(table.starts) and table.starts[j] < end_s:
            a = max(float(table.starts[j]), now_s)
            b = min(float(table.starts[j + 1]) if j + 1 < len(table.starts) else float(table.end_s), end_s)
            if b > a:
                slots.append((table.import_prices[j], b - a, j))
            j += 1
        covered = 0.0
        for price, usable, idx in sorted(slots):
            if idx == i:
                return f"price slot {price:.4f}/kWh, among the cheapest before {self.need.deadline:%H:%M}"
            covered += usable
            if covered >= left_s:
                return None
        return None
