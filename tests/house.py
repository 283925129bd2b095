"""A house in a closed loop with the relay policy: each reading's import depends on the relays' states.

Power is constant between readings (the forecast is right): the counter advances by the power after the
last reading's switches, and the energy of each local clock quarter is summed exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from app.control.capacity import quarter_start
from app.control.policy import Policy, SwitchEvent
from app.records import Reading, Value

TZ = ZoneInfo("Europe/Brussels")


class House:
    """Base load (kW, a function of local time) plus the loads (kW) of the relays that are on."""

    def __init__(self, policy: Policy, loads: dict[str, float], base_kw: Callable[[datetime], float],
                 start: datetime, kwh: float = 1000.0, register: int | None = None,
                 demand: Callable[[datetime, float], float | None] | None = None) -> None:
        """`demand`: the meter's 1-0:1.4.0 from (time, the exact quarter import so far / 15 min), None: not sent."""
        self.policy = policy
        self.demand = demand
        self.loads = loads
        self.base_kw = base_kw
        self.t = start
        self.kwh = kwh
        self.register = register
        self.power_kw = 0.0  # after the last reading's switches
        self.quarters: dict[datetime, float] = defaultdict(float)  # local quarter start -> kWh
        self.events: list[SwitchEvent] = list(policy.start(start))
        self.forecasts: list[tuple[datetime, float]] = []
        self.seq = 0

    def load_kw(self) -> float:
        """The load of the relays on now."""
        return sum(self.loads.get(n, 0.0) for n, on in self.policy.states.items() if on)

    def advance(self, dt_s: float) -> list[SwitchEvent]:
        """Let `dt_s` pass at the current power, then one reading and its decisions."""
        t0, t1 = self.t, self.t + timedelta(seconds=dt_s)
        cur = t0
        while cur < t1:  # split the energy at quarter boundaries
            q = quarter_start(cur.astimezone(TZ))
            nxt = min(t1, q + timedelta(minutes=15))
            self.quarters[q] += self.power_kw * (nxt - cur).total_seconds() / 3600
            cur = nxt
        self.kwh += self.power_kw * dt_s / 3600
        self.t = t1
        return self.read()

    def read(self) -> list[SwitchEvent]:
        """One reading now and the switches it causes."""
        kw = self.base_kw(self.t) + self.load_kw()
        self.seq += 1
        values = {} if self.register is None else {"0-0:96.14.0": Value(self.register, None)}
        fields = {"total_consumption": round(self.kwh, 6), "actual_total_consumption": round(kw, 6)}
        if self.demand is not None:
            sent = self.demand(self.t, self.quarters[quarter_start(self.t.astimezone(TZ))] * 4)
            if sent is not None:
                fields["current_average_demand"] = sent
        r = Reading(self.seq, "dsmr", "HOUSE", "/HOUSE", self.t, self.t.astimezone(UTC), values, fields)
        events = self.policy.step(r)
        self.events.extend(events)
        if self.policy.forecast is not None:
            self.forecasts.append((self.t, self.policy.forecast.forecast_kw))
        self.power_kw = self.base_kw(self.t) + self.load_kw()
        return events

    def averages_kw(self) -> dict[datetime, float]:
        """Each quarter's average import (kW); the last, unfinished quarter left out."""
        last = quarter_start(self.t.astimezone(TZ))
        return {q: e * 4 for q, e in self.quarters.items() if q < last}
