"""Manual overrides under the relay's protection (pure: plain numbers in, a decision out).

A command (ON, OFF or AUTO, from MQTT or the web API) changes a relay's mode. It is applied at
once only when the relay's protection allows it, else it waits (one pending command per relay:
a burst coalesces to its last command):

    override_min_interval   seconds since the last applied mode change of this relay
    min_off                 before an override switches the relay on (seconds since it went off)
    min_on                  before an override switches the relay off (seconds since it went on)

AUTO never switches by itself (the rules decide from the next reading, with their own min_on /
min_off), so only the interval applies to it. Time here is the controller's monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.control.policy import SwitchEvent

APPLIED = "applied"  # the mode changed (and the relay switched if it had to)
DEFERRED = "deferred"  # waits for the relay's protection; applied by the controller later
UNCHANGED = "unchanged"  # the relay already is in that mode and state
SUPERSEDED = "superseded"  # a later command for the same relay replaced it before it was applied
IGNORED = "ignored"  # unknown relay or mode, no relays, controller closed


@dataclass(frozen=True, slots=True)
class OverrideResult:
    """What became of one command: outcome, why, and when a deferred one may apply (wall clock)."""

    name: str
    mode: str
    outcome: str
    detail: str
    until: datetime | None = None
    events: tuple[SwitchEvent, ...] = ()

    def __str__(self) -> str:
        """`relay boiler: ON deferred until 12:00:05 (min_off 300 s)`."""
        return f"relay {self.name}: {self.mode} {self.outcome}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True, slots=True)
class DeviceView:
    """A network relay's device as last read back (GPIO relays have none)."""

    kind: str  # shelly | tasmota | tapo
    state: str  # on | off | unknown (unreachable, or not read yet)
    mismatches: int = 0  # times the device was found not as commanded (a button, its app, a restart)
    last_mismatch: str | None = None  # ISO wall time of the last one
    error: str = ""  # why it is unreachable (never a credential)


@dataclass(frozen=True, slots=True)
class RelayView:
    """One relay as the outside sees it: state, mode, last switch and a waiting command."""

    name: str
    state: bool
    mode: str  # ON, OFF or AUTO
    reason: str  # of the last switch
    at: datetime | None  # of the last switch
    pending: str = ""  # e.g. "ON deferred until 12:00:05 (min_off 300 s)"
    device: DeviceView | None = None  # network relays: the device's real state


def override_wait(
    mode: str,
    current_mode: str,
    state: bool,
    since_switch_s: float,
    since_override_s: float,
    min_on_s: float,
    min_off_s: float,
    min_interval_s: float,
) -> tuple[float, str] | None:
    """Seconds to wait before `mode` may apply, and the rule that holds it; None if nothing would change."""
    target = None if mode == "AUTO" else mode == "ON"
    if mode == current_mode and (target is None or target == state):
        return None
    wait_s, why = min_interval_s - since_override_s, f"override_min_interval {min_interval_s:g} s"
    if target is not None and target != state:
        guard_s, name = (min_off_s, "min_off") if target else (min_on_s, "min_on")
        if guard_s - since_switch_s > wait_s:
            wait_s, why = guard_s - since_switch_s, f"{name} {guard_s:g} s"
    return max(0.0, wait_s), why
