"""Alerts: conditions on readings and on the appliance's own health, told to the owner.

    alerts = Alerts(cfg.alerts, mqtt=cfg.mqtt)   # starts the delivery thread
    alerts.on_reading(reading)                   # reading conditions, on meter time
    alerts.tick(now_monotonic, facts)            # specials: meter offline, relay mismatch, sink backlog,
                                                 # decrypt errors (facts from the post-processor)
    alerts.close(0.3)

Specials stay active while their cause lasts: `meter offline` while no valid reading came for its
time; `relay mismatch` while a network relay is unreachable or within HOLD_S of a manual toggle
seen on read-back; `sink backlog` while a sink queue holds more than its limit or within HOLD_S of
a dropped item; `decrypt errors` within HOLD_S of the reader's last decrypt error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from app.alerts.notify import Notifier
from app.alerts.rules import AlertState, Notice
from app.alerts.settings import AlertConfig
from app.control.conditions import MeanWindow
from app.control.quantities import quantities

if TYPE_CHECKING:
    from app.config import MqttConfig
    from app.records import Reading

HOLD_S = 300.0


@dataclass
class Facts:
    """The appliance's health as the post-processor sees it, for the special alerts."""

    last_valid_s: float | None = None  # monotonic time of the last valid reading (or start)
    relays_unknown: tuple[str, ...] = ()  # network relays not reachable
    relay_mismatches: int = 0  # total manual toggles seen on read-back
    sink_backlog: dict[str, int] = field(default_factory=dict)  # sink -> queued items
    sink_dropped: int = 0
    decrypt_errors: int = 0


class Alerts:
    """Every [alert:NAME] of one appliance."""

    def __init__(self, alerts: tuple[AlertConfig, ...], mqtt: MqttConfig | None = None, version: str = "",
                 log_interval_s: float = 60.0) -> None:
        self.configs = alerts
        self.states = {a.name: AlertState(a.name, a.when.condition.duration_s if a.when.condition else 0.0,
                                          a.repeat, a.resolve) for a in alerts}
        self.notifier = Notifier(alerts, mqtt, version, log_interval_s)
        self.meter_id = ""
        self.device: dict[str, str] = {}
        self._names = tuple({a.when.condition.quantity for a in alerts if a.when.condition is not None})
        self._means = {a.name: MeanWindow(a.when.condition.mean_window_s) for a in alerts
                       if a.when.condition is not None and a.when.condition.mean_window_s is not None}
        self._last_t: datetime | None = None
        self._counters: dict[str, tuple[int, float | None]] = {}  # counter -> (last value, when it last rose)
        self.notices: list[Notice] = []  # the last notices (bounded), for tests and the status

    @property
    def active(self) -> dict[str, bool]:
        """Each alert's state."""
        return {name: s.active for name, s in self.states.items()}

    def on_reading(self, reading: Reading) -> None:
        """Reading conditions on this reading's meter time (its receive time where it has none)."""
        if not self.meter_id:
            self.meter_id = reading.meter_id
            self.device = {"header": reading.header, "protocol": reading.protocol}
        if not self._names or reading.crc_ok is False:
            return
        at = reading.meter_time or reading.received
        t = at.timestamp()
        if self._last_t is not None and at < self._last_t:  # the meter clock went back: means start again
            for mean in self._means.values():
                mean.reset()
        self._last_t = at
        q = quantities(reading, self._names)
        for a in self.configs:
            cond = a.when.condition
            if cond is None:
                continue
            value = q.get(cond.quantity)
            window = self._means.get(a.name)
            if window is not None:
                value = window.update(at, value)
            true = value is not None and cond.test(value)
            self._emit(self.states[a.name].update(t, true, cond.describe(value, negated=not true)))

    def tick(self, now_s: float, facts: Facts) -> None:
        """The specials, on the monotonic clock."""
        mismatch_rose = self._rose("mismatch", facts.relay_mismatches, now_s)
        dropped_rose = self._rose("dropped", facts.sink_dropped, now_s)
        decrypt_rose = self._rose("decrypt", facts.decrypt_errors, now_s)
        for a in self.configs:
            kind = a.when.kind
            if kind == "condition":
                continue
            if kind == "meter offline":
                silent = None if facts.last_valid_s is None else now_s - facts.last_valid_s
                true = silent is not None and silent > a.when.offline_s
                detail = (f"no valid reading for {silent:.0f} s (limit {a.when.offline_s:g} s)" if true
                          else "valid readings again")
            elif kind == "relay mismatch":
                true = bool(facts.relays_unknown) or mismatch_rose
                detail = (f"unreachable: {', '.join(facts.relays_unknown)}" if facts.relays_unknown
                          else f"{facts.relay_mismatches} manual toggles seen on read-back" if true
                          else "every network relay reachable and as commanded")
            elif kind == "sink backlog":
                full = {k: v for k, v in facts.sink_backlog.items() if v > a.when.backlog}
                true = bool(full) or dropped_rose
                detail = (", ".join(f"{k} {v} items queued" for k, v in full.items()) if full
                          else f"{facts.sink_dropped} items dropped" if true else "sinks keep up")
            else:  # decrypt errors
                true = decrypt_rose
                detail = (f"{facts.decrypt_errors} telegrams could not be decrypted (check [meter] key)" if true
                          else "no decrypt error for 5 min")
            self._emit(self.states[a.name].update(now_s, true, detail))

    def _rose(self, key: str, value: int, now_s: float) -> bool:
        """Whether counter `key` rose within the last HOLD_S."""
        last, at = self._counters.get(key, (value, None))
        if value > last:
            at = now_s
        self._counters[key] = (value, at)
        return at is not None and now_s - at < HOLD_S

    def _emit(self, notice: Notice | None) -> None:
        if notice is None:
            return
        self.notices = [*self.notices[-99:], notice]
        self.notifier.send(notice, self.meter_id or "unknown", self.device)

    def close(self, timeout_s: float = 0.3) -> None:
        """Deliver what is queued within `timeout_s`."""
        self.notifier.close(timeout_s)


