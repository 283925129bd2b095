"""Load control glue for the post-processor: policy decisions applied to the relays, and logged.

    ctl = Controller(cfg.control, cfg.relays, tz=ZoneInfo(cfg.meter.timezone))
    ctl.start()                       # every relay to its safe state
    ctl.on_reading(reading)           # per valid reading
    ctl.check_stale(time.monotonic()) # now and then (e.g. on every queue timeout)
    ctl.override("boiler", "ON")      # MQTT / web API; "AUTO" hands back to the rules -> OverrideResult
    ctl.poll_overrides(time.monotonic())  # now and then: apply commands the protection held back
    ctl.safe_all("shutdown (SIGTERM)")
    ctl.close()

Every switch is logged at INFO on `app.control` as
`relay boiler -> on (export 2500 W > 1500 W for 60 s) at meter time 2026-06-21T12:00:05+02:00`
(switches not caused by a reading, e.g. stale data or shutdown, carry only the log line's wall time).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from app.config import ControlConfig, MqttConfig, RelayConfig
from app.control.capacity import CapacityConfig
from app.control.override import (
    APPLIED,
    DEFERRED,
    SUPERSEDED,
    UNCHANGED,
    DeviceView,
    OverrideResult,
    RelayView,
    override_wait,
)
from app.control.policy import MODES, Policy, SwitchEvent
from app.control.relays import RelayBank
from app.logutil import RateLimited
from app.records import Reading
from app.tariffs.settings import TariffConfig

__all__ = ["Controller", "OverrideResult", "RelayView", "SwitchEvent"]

log = logging.getLogger("app.control")
STATE_EVERY_S = 60.0  # min_daily run times saved at most this often (wall clock) while they change


class Controller:
    """One appliance's relays: rules on meter time, stale detection on the wall clock."""

    def __init__(
        self,
        control: ControlConfig,
        relays: tuple[RelayConfig, ...],
        pin_factory: Any = None,
        tz: tzinfo | None = None,
        simulated: bool = False,
        capacity: CapacityConfig | None = None,
        tariff: TariffConfig | None = None,
        mqtt: MqttConfig | None = None,
        state_file: str = "",
    ) -> None:
        """Claim the pins in their safe states; `tz` is the meter's zone for `hours` windows;
        `simulated`: the pins are mock pins (a replay), said in every switch line;
        `capacity`: peak shaving ([capacity]); `tariff`: cheapest times for min_daily relays;
        `mqtt`: the broker of Tasmota relays switched over MQTT; `state_file`: where min_daily relays'
        run time today is kept over a restart (app.control.state; empty: not kept)."""
        self.control = control
        self.simulated = simulated
        self.policy = Policy(control, relays, tz, capacity=capacity, tariff=tariff)
        self.bank = RelayBank(relays, pin_factory=pin_factory, dry_run=control.dry_run, mqtt=mqtt,
                              network=not simulated)
        self._last_valid: float | None = None  # monotonic time of the last valid reading (or start)
        self._stale = False
        self._configs = {r.name: r for r in relays}
        # Override protection, on the monotonic clock: last switch and last applied mode change per relay.
        self._switched_mono: dict[str, float] = {}
        self._override_mono: dict[str, float] = {}
        self._pending: dict[str, tuple[str, OverrideResult]] = {}  # name -> (mode, its deferred result)
        self._last: dict[str, SwitchEvent] = {}  # last switch per relay (for its reason)
        self.results: dict[str, OverrideResult] = {}  # last result per relay, for MQTT and the web API
        self._revision = 0  # bumped whenever a relay's view (state, mode, reason, pending) changes
        self._limited = RateLimited(log, 60.0)
        self._blocked: dict[str, str] = {}  # relay -> why it is held safe (a meter it needs is offline)
        self._state_file = state_file if any(r.min_daily is not None for r in relays) else ""
        self._saved_runs: dict[str, tuple[date, float]] = {}
        self._saved_mono = -float("inf")
        if self._state_file:
            from app.control.state import load_daily

            runs = load_daily(self._state_file)
            if runs:
                self.policy.restore_daily(runs)
                self._saved_runs = runs
                log.info("min_daily: run time so far restored from %s (%s); it counts if that is today",
                         self._state_file, ", ".join(f"{n} {s / 60:.0f} min on {d}" for n, (d, s) in runs.items()))

    @property
    def states(self) -> dict[str, bool]:
        """Current state per relay (True = on), in config order."""
        return self.policy.states

    @property
    def revision(self) -> int:
        """Moves whenever a relay's view changes: state, mode, reason, pending, or its device's read-back."""
        return self._revision + self.bank.device_changes()

    def devices(self) -> dict[str, dict[str, Any]]:
        """Network relays as read back from their devices (state on/off/unknown, mismatches, failures)."""
        return self.bank.devices()

    @property
    def modes(self) -> dict[str, str]:
        """Override mode per relay: ON, OFF or AUTO."""
        return self.policy.modes

    def start(self, now_monotonic: float | None = None) -> list[SwitchEvent]:
        """Every relay to its safe state, logged; the stale timer starts now."""
        self._last_valid = time.monotonic() if now_monotonic is None else now_monotonic
        self._stale = False
        events = self.policy.start(_now())
        self._apply(events, self._last_valid)
        return events

    def on_reading(self, reading: Reading, now_monotonic: float | None = None,
                   extra: Mapping[str, float] | None = None) -> list[SwitchEvent]:
        """Decide on one reading and drive the pins; readings flagged with a bad CRC are ignored.

        `extra`: the other meters' quantities (building, solar, available, pv.power, ...) now."""
        if self.bank.closed or reading.crc_ok is False:
            return []
        self._last_valid = time.monotonic() if now_monotonic is None else now_monotonic
        if self._stale:
            self._stale = False
            log.info("valid readings again, relays back under their rules")
        stuck = self.policy.clock_stuck
        shaver = self.policy.shaver
        disagreements = shaver.disagreements if shaver is not None else 0
        events = self.policy.step(reading, extra=extra)
        if shaver is not None and shaver.disagreements > disagreements and shaver.last is not None:
            fc = shaver.last
            self._limited.warning(
                "demand", "peak shaving: the meter's quarter average (1-0:1.4.0) %.3f kW and the counters' %.3f kW "
                "have disagreed by more than %.3f kW for %.0f s (%d times so far); using the meter's, which the "
                "operator bills", fc.demand_kw or 0.0, fc.counted_kw or 0.0, fc.demand_tolerance_kw, fc.disagree_s,
                shaver.disagreements)
        if self.policy.clock_stuck is not None and stuck is None:
            log.warning("%s, every relay to its safe state until it advances", self.policy.clock_stuck)
        elif stuck is not None and self.policy.clock_stuck is None:
            log.info("meter clock advances again, relays back under their rules")
        self._apply(events, self._last_valid, meter_time=True)
        if self._state_file:
            self._save_daily(self._last_valid, force=any(self._configs[e.name].min_daily for e in events))
        return events

    def _save_daily(self, now_monotonic: float, force: bool = False) -> None:
        """Keep min_daily run times in the state file: every STATE_EVERY_S while they change, at once on a
        min_daily relay's switch (and at close)."""
        runs = self.policy.daily_runs()
        if runs == self._saved_runs or (not force and now_monotonic - self._saved_mono < STATE_EVERY_S):
            return
        from app.control.state import save_daily

        self._saved_mono = now_monotonic
        try:
            save_daily(self._state_file, runs)
        except OSError as exc:
            self._limited.warning("state", "min_daily run times not saved to [control] state_file = %s (%s): a "
                                  "restart today would count them from zero", self._state_file, exc)
            return
        self._saved_runs = runs

    @property
    def demand_disagreements(self) -> int:
        """Persistent disagreements between the meter's 1-0:1.4.0 and the counters (peak shaving on)."""
        return self.policy.shaver.disagreements if self.policy.shaver is not None else 0

    def seed_month_peak(self, month: date, kw: float) -> None:
        """This month's peak from the history store, for peak shaving's follow_peak."""
        if self.policy.shaver is not None:
            self.policy.shaver.seed(month, kw)
            log.info("peak shaving: %s peak so far %.3f kW (history)", month.strftime("%Y-%m"), kw)

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
        self._apply(events, now_monotonic)
        return events

    def override(self, name: str, mode: str, now_monotonic: float | None = None) -> OverrideResult:
        """Manual mode ON / OFF (held until AUTO) or AUTO, under the relay's protection.

        Applied at once when min_on / min_off and [control] override_min_interval allow it, else kept
        as the relay's one pending command (a later command replaces it) and applied by
        `poll_overrides`. Unknown relay or mode -> ValueError."""
        if name not in self._configs:
            raise ValueError(f"unknown relay {name!r} (known: {', '.join(self._configs) or 'none'})")
        mode = mode.strip().upper()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} for relay {name!r} (use ON, OFF or AUTO)")
        now = time.monotonic() if now_monotonic is None else now_monotonic
        result = self._decide(name, mode, now)
        self.results[name] = result
        return result

    def poll_overrides(self, now_monotonic: float) -> list[SwitchEvent]:
        """Apply the pending commands whose wait is over; the switches they made."""
        events: list[SwitchEvent] = []
        for name, (mode, _) in list(self._pending.items()):
            result = self._decide(name, mode, now_monotonic, pending=True)
            if result.outcome != DEFERRED:
                self.results[name] = result
                self._revision += 1
                events.extend(result.events)
        return events

    def view(self) -> dict[str, RelayView]:
        """Every relay's state, mode, last switch reason and pending command, in config order."""
        modes = self.policy.modes
        devices = self.bank.devices()
        out = {}
        for name, state in self.policy.states.items():
            d = devices.get(name)
            last = self._last.get(name)
            pending = self._pending.get(name)
            out[name] = RelayView(
                name, state, modes[name], last.reason if last else "", last.at if last else None,
                f"{pending[0]} {DEFERRED} until {pending[1].until:%H:%M:%S} ({pending[1].detail})"
                if pending is not None and pending[1].until is not None else "",
                None if d is None else DeviceView(d["type"], d["state"], d["mismatches"], d["last_mismatch"],
                                                  d["error"]),
            )
        return out

    def _decide(self, name: str, mode: str, now: float, pending: bool = False) -> OverrideResult:
        """Apply, defer (replacing any pending command) or drop one command."""
        r = self._configs[name]
        old = self._pending.pop(name, None)
        if old is not None and not pending and old[0] != mode:
            self._revision += 1
            self.results[name] = OverrideResult(name, old[0], SUPERSEDED, f"replaced by {mode}")
        state, current = self.policy.states[name], self.policy.modes[name]
        wait = override_wait(
            mode, current, state,
            since_switch_s=now - self._switched_mono.get(name, -float("inf")),
            since_override_s=now - self._override_mono.get(name, -float("inf")),
            min_on_s=r.min_on, min_off_s=r.min_off, min_interval_s=self.control.override_min_interval,
        )
        if wait is None:
            return OverrideResult(name, mode, UNCHANGED, f"already {current}, {'on' if state else 'off'}")
        wait_s, why = wait
        if wait_s > 0 and not self.bank.closed:
            if old is not None and old[0] == mode:  # still waiting: keep its result (and the log quiet)
                self._pending[name] = old
                return old[1]
            until = _now() + timedelta(seconds=wait_s)
            if self.policy.tz is not None:
                until = until.astimezone(self.policy.tz)
            result = OverrideResult(name, mode, DEFERRED, why, until)
            self._pending[name] = (mode, result)
            self._revision += 1
            self._limited.log(logging.INFO, f"defer {name}", "%s", result)
            return result
        events = self.policy.override(name, mode, _now())
        self._override_mono[name] = now
        self._revision += 1
        if not events:
            held = " (relays held in the safe state until valid readings resume)" if self._stale else ""
            log.info("relay %s: mode %s%s", name, mode, held)
        self._apply(events, now)
        return OverrideResult(name, mode, APPLIED, "switched" if events else "mode changed", None,
                              tuple(events))

    def block(self, reasons: Mapping[str, str], now_monotonic: float) -> list[SwitchEvent]:
        """Relays whose conditions need an offline meter: held in their safe state (logged on change)."""
        if self.bank.closed:
            return []
        new = {name: why for name, why in reasons.items() if name in self._configs}
        if new != self._blocked:
            for name in sorted(set(new) - set(self._blocked)):
                log.warning("relay %s held in its safe state: %s", name, new[name])
            for name in sorted(set(self._blocked) - set(new)):
                log.info("relay %s back under its rules: the meters it needs are online", name)
            self._blocked = new
            self._revision += 1
        events = self.policy.block(new, _now())
        self._apply(events, now_monotonic)
        return events

    def safe_all(self, reason: str) -> list[SwitchEvent]:
        """Shutdown or reader died: every relay to its safe state at once, whatever min_on/min_off say."""
        if self.bank.closed:
            return []
        self._stale = True
        events = self.policy.force_safe(_now(), reason)
        self._apply(events, time.monotonic())
        if not events:
            log.info("%s, every relay already in its safe state", reason)
        return events

    def close(self) -> None:
        """Leave every pin in its safe state and release it (min_daily run times saved); idempotent."""
        if self._state_file and not self.bank.closed:
            self._save_daily(time.monotonic(), force=True)
        self.bank.close()

    def _apply(self, events: list[SwitchEvent], now_monotonic: float | None, meter_time: bool = False) -> None:
        suffix = " [dry run]" if self.bank.dry_run else " [simulated]" if self.simulated else ""
        now = time.monotonic() if now_monotonic is None else now_monotonic
        for ev in events:
            self.bank.set(ev.name, ev.state)
            self._switched_mono[ev.name] = now
            self._last[ev.name] = ev
            when = f" at meter time {ev.at.isoformat(timespec='seconds')}" if meter_time else ""
            log.info("%s%s%s", ev, when, suffix)
        if events:
            self._revision += 1


def _now() -> datetime:
    return datetime.now(UTC)
