"""The post-processor's view of every meter: latest quantities, online / offline / error, and what
relay conditions may use (pure: times are arguments).

    online   a reading within offline_after (the [meter] meter: [control] stale_after)
    offline  no reading for offline_after (or never one since the start)
    error    the meter's process says its last attempt failed (with the reason)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from app.control.quantities import combined, depends_on, meter_quantities
from app.records import MeterState, Reading

ONLINE, OFFLINE, ERROR = "online", "offline", "error"


@dataclass(frozen=True, slots=True)
class Change:
    """A meter's status changed (logged once, exported)."""

    meter: str
    old: str
    new: str
    reason: str

    def __str__(self) -> str:
        """`meter pv: online -> offline (no reading for 16 s, offline_after is 15 s)`."""
        return f"meter {self.meter}: {self.old} -> {self.new}" + (f" ({self.reason})" if self.reason else "")


class Board:
    """Every meter's latest quantities and status."""

    def __init__(self, main: str, main_role: str, main_offline_s: float,
                 meters: Mapping[str, tuple[str, float]], grid_capacity_w: float | None, now: float) -> None:
        """`meters`: name -> (role, offline_after) of each [meter:NAME]; `now`: monotonic start time."""
        self.main = main
        self.roles: dict[str, str] = {main: main_role} | {n: r for n, (r, _) in meters.items()}
        self.offline_s: dict[str, float] = {main: main_offline_s} | {n: s for n, (_, s) in meters.items()}
        self.grid_capacity_w = grid_capacity_w
        self.latest: dict[str, dict[str, float]] = {}
        self.seen: dict[str, float] = {}  # name -> monotonic time of its last reading
        self.errors: dict[str, str] = {}  # name -> reason of its last failed attempt
        self.status: dict[str, str] = dict.fromkeys(self.roles, OFFLINE)
        self.reasons: dict[str, str] = dict.fromkeys(self.roles, "no reading yet")
        self.started = now

    def name_of(self, reading: Reading) -> str:
        """The meter a reading belongs to ("" is the [meter] meter)."""
        return reading.meter or self.main

    def update(self, reading: Reading, now: float) -> None:
        """A reading arrived."""
        name = self.name_of(reading)
        if name not in self.roles:
            return
        self.latest[name] = meter_quantities(reading)
        self.seen[name] = now
        self.errors.pop(name, None)

    def on_state(self, state: MeterState) -> None:
        """The meter's process reports a failed attempt (error) or success (online)."""
        if state.state == ERROR:
            self.errors[state.meter] = state.reason
        else:
            self.errors.pop(state.meter, None)

    def online(self, name: str, now: float) -> bool:
        """Whether a reading came within offline_after."""
        seen = self.seen.get(name)
        return seen is not None and now - seen <= self.offline_s[name]

    def check(self, now: float) -> list[Change]:
        """Recompute every status; the changes."""
        changes = []
        for name in self.roles:
            if name in self.errors:
                new, reason = ERROR, self.errors[name]
                if self.online(name, now):
                    reason += " (last reading still fresh)"
            elif self.online(name, now):
                new, reason = ONLINE, ""
            else:
                seen = self.seen.get(name)
                silent = now - (seen if seen is not None else self.started)
                reason = (f"no reading for {silent:.0f} s, offline_after is {self.offline_s[name]:g} s"
                          if seen is not None else "no reading yet")
                new = OFFLINE
            old = self.status[name]
            if new != old or (new == ERROR and reason.split(" (")[0] != self.reasons[name].split(" (")[0]):
                if new != old:
                    changes.append(Change(name, old, new, reason))
                self.status[name] = new
            self.reasons[name] = reason
        return changes

    def quantities(self, now: float) -> dict[str, float]:
        """`combined` over the meters online now."""
        live = {n: q for n, q in self.latest.items() if self.online(n, now)}
        return combined(self.roles, live, self.grid_capacity_w)

    def blocked(self, needs: Mapping[str, frozenset[str]], now: float) -> dict[str, str]:
        """relay -> why it must stay safe, for each relay whose quantities need a meter that is not online
        (`needs`: relay -> the quantities its conditions name). The [meter] meter is left to stale_after."""
        out = {}
        for relay, quantities in needs.items():
            missing = sorted({m for q in quantities for m in depends_on(q, self.roles, self.main)
                              if m != self.main and not self.online(m, now)})
            if missing:
                if all(m not in self.seen for m in missing):
                    out[relay] = "waiting for the first reading of meter " + ", ".join(missing)
                else:
                    out[relay] = "stale: meter " + ", ".join(f"{m} {self.status.get(m, OFFLINE)}" for m in missing)
        return out
