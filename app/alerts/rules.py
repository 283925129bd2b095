"""The alert state machine, pure: (time, true/false, detail) in, notices out.

Times are seconds on one clock per alert: meter time for reading conditions (a replay alerts as
live did), the monotonic clock for the specials (meter offline, relay mismatch, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

FIRING = "firing"
REPEAT = "repeat"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Notice:
    """One message about one alert."""

    alert: str
    state: str  # firing | repeat | resolved
    message: str
    active: bool  # the alert's state after this notice

    @property
    def title(self) -> str:
        """A short title: `smartmeter alert grid_peak` (+ resolved)."""
        return f"smartmeter alert {self.alert}" + (" resolved" if self.state == RESOLVED else "")


class AlertState:
    """One alert: fires once its trigger held for `hold_s`, repeats every `repeat_s`, resolves when it ends."""

    def __init__(self, name: str, hold_s: float = 0.0, repeat_s: float = 3600.0, resolve: bool = True) -> None:
        self.name = name
        self.hold_s = hold_s
        self.repeat_s = repeat_s
        self.resolve = resolve
        self.active = False
        self.since: float | None = None  # when the trigger became true
        self.sent_at: float | None = None  # the last firing/repeat notice

    def update(self, t_s: float, true: bool, detail: str) -> Notice | None:
        """Feed the trigger's value at `t_s`; the notice to send, if any."""
        if not true:
            self.since = None
            if not self.active:
                return None
            self.active = False
            return Notice(self.name, RESOLVED, f"{self.name} resolved: {detail}", False) if self.resolve else None
        if self.since is None or t_s < self.since:  # a clock that went back restarts the hold
            self.since = t_s
        if not self.active:
            if t_s - self.since < self.hold_s:
                return None
            self.active, self.sent_at = True, t_s
            return Notice(self.name, FIRING, f"{self.name}: {detail}", True)
        if self.sent_at is not None and t_s < self.sent_at:
            self.sent_at = t_s
        if self.repeat_s > 0 and self.sent_at is not None and t_s - self.sent_at >= self.repeat_s:
            self.sent_at = t_s
            return Notice(self.name, REPEAT, f"{self.name} still: {detail}", True)
        return None
