"""Relay details for the API: state, mode, why it last switched, and when it may switch next.

Runs in the post-processor (it reads the policy's state); the result is plain JSON-able data.
`next_switch_allowed` is the earliest meter time at which the rules may switch the relay again
(null: at the next reading) and `blocked_by` says what holds it until then: min_on, min_off,
settle, max_switches, hours, or manual (an ON/OFF override holds it until AUTO); `pending` is a
manual command waiting for the relay's protection ("ON deferred until 12:00:05 (min_off 300 s)").
`device` (network relays only, else null) is the device as read back: type, state on/off/unknown,
commanded, reachable, mismatches (found not as commanded, then switched back) and the last one's
time, failed requests, dropped commands and the error that makes it unreachable.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.control.controller import Controller
    from app.control.override import RelayView


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def relay_details(controller: Controller, view: dict[str, RelayView] | None = None) -> list[dict[str, Any]]:
    """One dict per relay, in config order."""
    views = view if view is not None else controller.view()
    policy = controller.policy
    now: datetime | None = policy._last_t
    last_switch: datetime | None = policy._last_switch
    settle = policy.control.settle
    devices = controller.devices()
    out: list[dict[str, Any]] = []
    for r in policy._relays:
        cfg = r.cfg
        v = views.get(cfg.name)
        holds: list[tuple[datetime, str]] = []
        blocked: list[str] = []
        if r.mode != "AUTO":
            blocked.append("manual")
        if now is not None:
            if r.switched_at is not None:
                wait_s = cfg.min_on if r.state else cfg.min_off
                holds.append((r.switched_at + timedelta(seconds=wait_s), "min_on" if r.state else "min_off"))
            if last_switch is not None:
                holds.append((last_switch + timedelta(seconds=settle), "settle"))
            if not r.state and cfg.max_switches is not None:
                count, window_s = cfg.max_switches
                recent = [t for t in r.ons if t > now - timedelta(seconds=window_s)]
                if len(recent) >= count:
                    holds.append((recent[0] + timedelta(seconds=window_s), "max_switches"))
            if not r.state and cfg.hours is not None and not policy._inside_hours(r, now):
                holds.append((_next_window(now, cfg.hours[0], policy.tz), "hours"))
        later = [(t, why) for t, why in holds if now is not None and t > now]
        blocked += [why for _t, why in later]
        out.append({
            "name": cfg.name,
            "state": "on" if r.state else "off",
            "mode": r.mode.lower(),
            "safe_state": "on" if cfg.safe_state else "off",
            "reason": (v.reason or None) if v is not None else None,
            "since": _iso(v.at) if v is not None else None,
            "pending": (v.pending or None) if v is not None else None,
            "next_switch_allowed": _iso(max(t for t, _w in later)) if later else None,
            "blocked_by": blocked,
            "device": devices.get(cfg.name),
        })
    return out


def _next_window(now: datetime, start: Any, tz: Any) -> datetime:
    """The next start of an `hours` window after `now` (meter local time)."""
    local = now.astimezone(tz) if tz is not None and now.tzinfo is not None else now
    at = local.replace(hour=start.hour, minute=start.minute, second=0, microsecond=0)
    if at <= local:
        at += timedelta(days=1)
    return at
