"""The post-processor's view of every meter: latest quantities, online / offline / error, and what
relay conditions may use (pure: times are arguments).

    online   a reading within offline_after (the [meter] meter: [control] stale_after)
    offline  no reading for offline_after (or never one since the start), or main stopped its process
             (settings changed, removed) -- at once, not after offline_after
    error    the meter's process says its last attempt failed (with the reason), or main saw the process
             die or hang -- at once; a reading from the process main starts again ends either
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
        self.downs: dict[str, tuple[str, str, float]] = {}  # name -> (status, reason, wall time) from main

    def set_meters(self, meters: Mapping[str, tuple[str, float]], now: float) -> None:
        """The [meter:NAME] meters now (main added, changed or removed some while running)."""
        for name in [n for n in self.roles if n != self.main and n not in meters]:
            for d in (self.roles, self.offline_s, self.latest, self.seen, self.errors, self.status, self.reasons,
                      self.downs):
                d.pop(name, None)
        for name, (role, offline_s) in meters.items():
            if name not in self.roles:
                self.status[name] = OFFLINE
                self.reasons[name] = "no reading yet"
            self.roles[name] = role
            self.offline_s[name] = offline_s

    def down(self, name: str, status: str, reason: str, at: float) -> None:
        """Main stopped (status offline) or saw die (error) the meter's process at wall time `at`: not online
        from now until a reading taken after `at` arrives."""
        if name in self.roles and name != self.main:
            self.downs[name] = (status, reason, at)

    def name_of(self, reading: Reading) -> str:
        """The meter a reading belongs to ("" is the [meter] meter)."""
        return reading.meter or self.main

    def update(self, reading: Reading, now: float) -> None:
        """A reading arrived."""
        name = self.name_of(reading)
        if name not in self.roles:
            return
        down = self.downs.get(name)
        if down is not None:
            if reading.received.timestamp() <= down[2]:
                return  # the old process's last reading, still on its queue
            del self.downs[name]
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
        return seen is not None and now - seen <= self.offline_s[name] and name not in self.downs

    def check(self, now: float) -> list[Change]:
        """Recompute every status; the changes."""
        changes = []
        for name in self.roles:
            if name in self.downs:
                new, reason = self.downs[name][0], self.downs[name][1]
            elif name in self.errors:
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
