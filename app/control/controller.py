"""Load control glue for the post-processor: policy decisions applied to the relays, and logged.

    ctl = Controller(cfg.control, cfg.relays, tz=ZoneInfo(cfg.meter.timezone))
    ctl.start()                       # every relay to its safe state
    ctl.on_reading(reading)           # per valid reading
    ctl.check_stale(time.monotonic()) # now and then (e.g. on every queue timeout)
    ctl.override("boiler", "ON")      # from MQTT; "AUTO" hands back to the rules
    ctl.safe_all("shutdown (SIGTERM)")
    ctl.close()

Every switch is logged at INFO on `app.control` as
`relay boiler -> on (export 2500 W > 1500 W for 60 s) at meter time 2026-06-21T12:00:05+02:00`
(switches not caused by a reading, e.g. stale data or shutdown, carry only the log line's wall time).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, tzinfo
from typing import Any

from app.config import ControlConfig, RelayConfig
from app.control.policy import Policy, SwitchEvent
from app.control.relays import RelayBank
from app.records import Reading

__all__ = ["Controller", "SwitchEvent"]

log = logging.getLogger("app.control")


class Controller:
    """One appliance's relays: rules on meter time, stale detection on the wall clock."""

    def __init__(
        self,
        control: ControlConfig,
        relays: tuple[RelayConfig, ...],
        pin_factory: Any = None,
        tz: tzinfo | None = None,
        simulated: bool = False,
    ) -> None:
        """Claim the pins in their safe states; `tz` is the meter's zone for `hours` windows;
        `simulated`: the pins are mock pins (a replay), said in every switch line."""
        self.control = control
        self.simulated = simulated
        self.policy = Policy(control, relays, tz)
        self.bank = RelayBank(relays, pin_factory=pin_factory, dry_run=control.dry_run)
        self._last_valid: float | None = None  # monotonic time of the last valid reading (or start)
        self._stale = False

    @property
    def states(self) -> dict[str, bool]:
        """Current state per relay (True = on), in config order."""
        return self.policy.states

    @property
    def modes(self) -> dict[str, str]:
        """Override mode per relay: ON, OFF or AUTO."""
        return self.policy.modes

    def start(self, now_monotonic: float | None = None) -> list[SwitchEvent]:
        """Every relay to its safe state, logged; the stale timer starts now."""
        self._last_valid = time.monotonic() if now_monotonic is None else now_monotonic
        self._stale = False
        events = self.policy.start(_now())
        self._apply(events)
        return events

    def on_reading(self, reading: Reading, now_monotonic: float | None = None) -> list[SwitchEvent]:
        """Decide on one reading and drive the pins; readings flagged with a bad CRC are ignored."""
        if self.bank.closed or reading.crc_ok is False:
            return []
        self._last_valid = time.monotonic() if now_monotonic is None else now_monotonic
        if self._stale:
            self._stale = False
            log.info("valid readings again, relays back under their rules")
        stuck = self.policy.clock_stuck
        events = self.policy.step(reading)
        if self.policy.clock_stuck is not None and stuck is None:
            log.warning("%s, every relay to its safe state until it advances", self.policy.clock_stuck)
        elif stuck is not None and self.policy.clock_stuck is None:
            log.info("meter clock advances again, relays back under their rules")
        self._apply(events, meter_time=True)
        return events

    def check_stale(self, now_monotonic: float) -> list[SwitchEvent]:
        """No valid reading for longer than stale_after (wall clock) -> every relay safe, once."""
        if self.bank.closed or self._stale or self._last_valid is None:
            return []
        silent_s = now_monotonic - self._last_valid
        if silent_s <= self.control.stale_after:  # the same boundary as a gap in meter time
            return []
        self._stale = True
        limit_s = self.control.stale_after
        reason = f"stale: no valid reading for {silent_s:.0f} s, stale_after is {limit_s:g} s"
        log.warning("%s, every relay to its safe state", reason)
        events = self.policy.force_safe(_now(), reason)
        self._apply(events)
        return events

    def override(self, name: str, mode: str) -> list[SwitchEvent]:
        """Manual mode ON / OFF (held until AUTO) or AUTO; unknown relay or mode -> ValueError."""
        events = self.policy.override(name, mode, _now())
        mode = mode.strip().upper()
        if not events:
            held = " (relays held in the safe state until valid readings resume)" if self._stale else ""
            log.info("relay %s: mode %s%s", name, mode, held)
        self._apply(events)
        return events

    def safe_all(self, reason: str) -> list[SwitchEvent]:
        """Shutdown or reader died: every relay to its safe state at once, whatever min_on/min_off say."""
        if self.bank.closed:
            return []
        self._stale = True
        events = self.policy.force_safe(_now(), reason)
        self._apply(events)
        if not events:
            log.info("%s, every relay already in its safe state", reason)
        return events

    def close(self) -> None:
        """Leave every pin in its safe state and release it; idempotent."""
        self.bank.close()

    def _apply(self, events: list[SwitchEvent], meter_time: bool = False) -> None:
        suffix = " [dry run]" if self.bank.dry_run else " [simulated]" if self.simulated else ""
        for ev in events:
            self.bank.set(ev.name, ev.state)
            when = f" at meter time {ev.at.isoformat(timespec='seconds')}" if meter_time else ""
            log.info("%s%s%s", ev, when, suffix)


def _now() -> datetime:
    return datetime.now(UTC)
