"""Relay policy: readings + state + meter time -> switch decisions (pure: no pins, no clocks).

Every duration is measured on the readings' meter time (`Reading.time`), so a replay at any
speed decides exactly as live. For every reading, in order:

    1. runs      each condition whose value is true starts a run (unless one is going), a false
                 one ends it; a condition is *held* when its run has lasted >= its duration.
                 A gap in meter time > stale_after ends every run and puts relays in the safe state.
                 Meter time only moves forward: a reading stamped at or before the last one (a
                 frozen clock, a small step back) counts at the last one's time, so runs go on;
                 a meter clock that has not advanced for more than stale_after of *wall* time
                 (the reading's receive time, or `wall`) is stale data: every relay safe until it
                 advances again. A step back by more than stale_after is a clock reset: stored
                 times move with it and runs end.
    2. settle    nothing switches while (now - last switch of any relay) < settle.
    3. one       at most one relay switches:
                 OFF first: on, off_when held (or outside hours), on for >= min_on -> highest
                 priority number; else ON: off, on_when held, inside hours, off for >= min_off,
                 max_switches not reached -> lowest priority number. Ties: config order.
    4. start     every relay starts in its safe state, which counts as a switch at the first
                 reading's time for min_on/min_off (not for settle).

Peak shaving ([capacity], see capacity.py) comes first in step 3: while the quarter forecast is over
the limit, the `sheddable` relay that is on with the highest priority number is shed (min_on does not
hold it; settle does), one per reading. A shed relay is held off; once the forecast has fitted for
restore_after (and with the load it dropped when shed it would still stay under the limit; never in a
quarter's last 2 minutes) the last one shed returns to its rule, after min_off. While any relay is shed
or the forecast does not fit, no sheddable relay is switched on. A `min_daily` relay that is due (see
daily.py) is switched on whatever its on_when says and kept on until its minimum is met.

`force_safe` (stale data by wall clock, shutdown, reader died) puts every relay in its safe state
at once, whatever min_on/min_off say; control resumes at the next reading as after a start.
Manual overrides (ON/OFF) hold a relay until AUTO; they switch at once and count as switches.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, tzinfo

from app.config import ControlConfig, RelayConfig
from app.control.capacity import CapacityConfig, Forecast, PeakShaver, meter_inputs
from app.control.conditions import Condition, MeanWindow
from app.control.daily import DailyRun
from app.control.quantities import quantities
from app.records import Reading
from app.tariffs.settings import TariffConfig

MODES = ("ON", "OFF", "AUTO")


@dataclass(frozen=True, slots=True)
class SwitchEvent:
    """One relay switch: new state, when (meter time for reading-driven switches), and why.

    `kind` is "start" (initial safe state), "auto" (a rule), "safe" (stale data, a gap in meter
    time, shutdown) or "override" (manual ON/OFF).
    """

    name: str
    state: bool
    at: datetime
    reason: str
    kind: str = "auto"

    def __str__(self) -> str:
        """`relay boiler -> on (export 2500 W > 1500 W for 60 s)`."""
        return f"relay {self.name} -> {'on' if self.state else 'off'} ({self.reason})"


@dataclass(slots=True)
class _Cond:
    """A condition and its run."""

    cond: Condition
    mean: MeanWindow | None
    run: datetime | None = None
    value: float | None = None
    true: bool = False

    def update(self, t: datetime, q: dict[str, float]) -> None:
        raw = q.get(self.cond.quantity)
        self.value = raw if self.mean is None else self.mean.update(t, raw)
        self.true = self.value is not None and self.cond.test(self.value)
        if not self.true:
            self.run = None
        elif self.run is None:
            self.run = t

    def held(self, t: datetime) -> bool:
        return self.run is not None and (t - self.run).total_seconds() >= self.cond.duration_s

    def end(self) -> None:
        self.run = None
        self.true = False
        if self.mean is not None:
            self.mean.reset()


@dataclass(slots=True)
class _Relay:
    """One relay's rules and state."""

    cfg: RelayConfig
    index: int
    state: bool
    on: _Cond
    off: _Cond | None
    switched_at: datetime | None = None  # None: counts as switched at the next reading
    ons: deque[datetime] = field(default_factory=deque)  # switch-on times for max_switches
    mode: str = "AUTO"
    blocked: str | None = None  # held safe: a meter its conditions need is offline (see `block`)
    daily: DailyRun | None = None
    shed_kw: float | None = None  # the import it dropped when last shed (None: not measured yet)

    def end_runs(self) -> None:
        self.on.end()
        if self.off is not None:
            self.off.end()


def _cond(c: Condition) -> _Cond:
    return _Cond(c, None if c.mean_window_s is None else MeanWindow(c.mean_window_s))


def _since(t: datetime, then: datetime | None) -> float:
    return float("inf") if then is None else (t - then).total_seconds()


def _hhmm(r: RelayConfig) -> str:
    assert r.hours is not None
    a, b = r.hours
    end = "24:00" if (b.hour, b.minute, b.second) == (23, 59, 59) else f"{b:%H:%M}"
    return f"{a:%H:%M}-{end}"


class Policy:
    """The relay rules of one appliance, fed one reading at a time."""

    def __init__(
        self, control: ControlConfig, relays: tuple[RelayConfig, ...], tz: tzinfo | None = None,
        capacity: CapacityConfig | None = None, tariff: TariffConfig | None = None,
    ) -> None:
        """`tz`: the meter's time zone for `hours`, quarters and days (None: each reading time's own zone);
        `capacity`: peak shaving when enabled; `tariff`: where min_daily relays find the cheapest time."""
        self.control = control
        self.tz = tz
        self.shaver = PeakShaver(capacity, tz) if capacity is not None and capacity.enabled else None
        self.forecast: Forecast | None = None  # the last reading's quarter forecast (peak shaving on)
        self._shed: list[_Relay] = []  # shed relays, the last shed on top
        self._measure: tuple[_Relay, float] | None = None  # shed at the last reading, import kW then
        self._fit_since: datetime | None = None
        self._register: int | None = None  # the meter's tariff register in force (0-0:96.14.0)
        self._relays: list[_Relay] = []
        self._by_name: dict[str, _Relay] = {}
        for i, cfg in enumerate(relays):
            if cfg.on_when is None:
                raise ValueError(f"relay {cfg.name!r} has no on_when")
            r = _Relay(
                cfg=cfg,
                index=i,
                state=cfg.safe_state,
                on=_cond(cfg.on_when),
                off=None if cfg.off_when is None else _cond(cfg.off_when),
                daily=None if cfg.min_daily is None else DailyRun(cfg.min_daily, tz, tariff),
            )
            self._relays.append(r)
            self._by_name[cfg.name] = r
        # Only the quantities the conditions name are computed per reading.
        self._needed = sorted({c.quantity for r in relays for c in (r.on_when, r.off_when) if c is not None})
        self._last_t: datetime | None = None
        self._last_switch: datetime | None = None  # for settle
        self._settle_pending = False  # an override before the first reading counts at that reading
        self._forced = False  # in the safe state by force_safe until the next reading
        self._advanced_wall: datetime | None = None  # wall time when meter time last moved forward
        self.clock_stuck: str | None = None  # why, while a stuck meter clock holds every relay safe

    # ------------------------------------------------------------ public API

    @property
    def states(self) -> dict[str, bool]:
        """Current state per relay, in config order."""
        return {r.cfg.name: r.state for r in self._relays}

    @property
    def modes(self) -> dict[str, str]:
        """Override mode per relay (ON, OFF or AUTO), in config order."""
        return {r.cfg.name: r.mode for r in self._relays}

    @property
    def shed(self) -> tuple[str, ...]:
        """The relays peak shaving holds off, the first shed first."""
        return tuple(r.cfg.name for r in self._shed)

    @property
    def names(self) -> tuple[str, ...]:
        """Relay names in config order."""
        return tuple(r.cfg.name for r in self._relays)

    def daily_runs(self) -> dict[str, tuple[date, float]]:
        """Each min_daily relay's local day and run time that day so far (once it has seen a reading)."""
        return {r.cfg.name: (r.daily.day, r.daily.run_s) for r in self._relays
                if r.daily is not None and r.daily.day is not None}

    def restore_daily(self, runs: Mapping[str, tuple[date, float]]) -> None:
        """Run times saved before a restart; each counts only if its day is the first reading's local day."""
        for name, (day, run_s) in runs.items():
            r = self._by_name.get(name)
            if r is not None and r.daily is not None:
                r.daily.restore(day, run_s)

    def start(self, at: datetime) -> list[SwitchEvent]:
        """Every relay to its safe state (counts at the first reading's time for min_on/min_off)."""
        events = []
        for r in self._relays:
            r.state = r.cfg.safe_state
            r.switched_at = None
            r.end_runs()
            events.append(SwitchEvent(r.cfg.name, r.state, at, "start: safe state", "start"))
        self._unshed_all()
        return events

    def feed(self, readings: Iterable[Reading]) -> list[SwitchEvent]:
        """`step` over a batch of readings."""
        events: list[SwitchEvent] = []
        for reading in readings:
            events.extend(self.step(reading))
        return events

    def step(self, reading: Reading, wall: datetime | None = None,
             extra: Mapping[str, float] | None = None) -> list[SwitchEvent]:
        """The switches this reading causes (safe-state and override restores first, then at most one).

        `wall`: when it arrived by the wall clock (default: its receive time), for a stuck meter clock;
        `extra`: the other meters' quantities now (app.control.quantities.combined)."""
        t = reading.time
        wall = reading.received if wall is None else wall
        events: list[SwitchEvent] = []
        if self._last_t is not None:
            gap_s = (t - self._last_t).total_seconds()
            if gap_s < -self.control.stale_after:  # the meter clock was reset: keep elapsed times
                self._shift(t - self._last_t)
                self._advanced_wall = wall
            elif gap_s <= 0:  # frozen or a small step back: meter time stands still
                t = self._last_t
                assert self._advanced_wall is not None
                still_s = (wall - self._advanced_wall).total_seconds()
                if self.clock_stuck is not None:
                    return events
                if still_s > self.control.stale_after:
                    self.clock_stuck = (f"stale: meter clock stuck at {t.isoformat(timespec='seconds')} for "
                                        f"{still_s:.0f} s of wall time, stale_after is {self.control.stale_after:g} s")
                    return self.force_safe(t, self.clock_stuck)
            else:
                self._advanced_wall = wall
                self.clock_stuck = None
                if gap_s > self.control.stale_after and not self._forced:
                    events += self._gap(t, gap_s)
        else:
            self._advanced_wall = wall
        self._last_t = t
        if self._forced:
            self._forced = False
            events += self._restore_overrides(t, "restored after safe state")
        if self._settle_pending:
            self._settle_pending = False
            self._last_switch = t
        q = quantities(reading, self._needed)
        if extra:
            q.update((name, extra[name]) for name in self._needed if name in extra)
        for r in self._relays:
            if r.switched_at is None:
                r.switched_at = t
            r.on.update(t, q)
            if r.off is not None:
                r.off.update(t, q)
            if r.daily is not None:
                r.daily.update(t, r.state)
        fc = self._forecast(reading, t)
        if self._last_switch is not None and _since(t, self._last_switch) < self.control.settle:
            return events
        chosen = self._pick_shed(t, fc) or self._pick_off(t) or self._pick_restore(t, fc) or self._pick_on(t, fc)
        if chosen is not None:
            r, state, reason = chosen
            self._switch(r, state, t)
            events.append(SwitchEvent(r.cfg.name, state, t, reason, "auto"))
            if reason.startswith("shed:") and fc is not None:
                self._shed.append(r)
                self._measure = (r, fc.import_kw)
                self._fit_since = None
        return events

    def force_safe(self, at: datetime, reason: str) -> list[SwitchEvent]:
        """Every relay to its safe state at once (stale data, shutdown, reader died)."""
        self._forced = True
        self._unshed_all()
        events = []
        for r in self._relays:
            r.end_runs()
            if r.state != r.cfg.safe_state:
                r.state = r.cfg.safe_state
                r.switched_at = None
                events.append(SwitchEvent(r.cfg.name, r.state, at, reason, "safe"))
        return events

    def block(self, reasons: Mapping[str, str], at: datetime) -> list[SwitchEvent]:
        """Hold the relays named in `reasons` in their safe state (a meter their conditions need is
        offline); every other relay is released back to its rules. The switches to safe it made."""
        events = []
        for r in self._relays:
            why = reasons.get(r.cfg.name)
            r.blocked = why
            if why is not None and r.mode == "AUTO" and r.state != r.cfg.safe_state:
                r.end_runs()
                r.state = r.cfg.safe_state
                r.switched_at = None
                events.append(SwitchEvent(r.cfg.name, r.state, at, why, "safe"))
        return events

    def override(self, name: str, mode: str, at: datetime) -> list[SwitchEvent]:
        """Manual mode ON / OFF (held until AUTO) or AUTO; ON/OFF switch at once unless forced safe."""
        r = self._by_name.get(name)
        if r is None:
            raise ValueError(f"unknown relay {name!r} (known: {', '.join(self._by_name) or 'none'})")
        mode = mode.strip().upper()
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r} for relay {name!r} (use ON, OFF or AUTO)")
        r.mode = mode
        if mode == "AUTO" or self._forced:
            return []
        target = mode == "ON"
        if r.state == target:
            return []
        self._override_switch(r, target, self._last_t)
        return [SwitchEvent(name, target, at, f"manual override {mode}", "override")]

    # ------------------------------------------------------------ internals

    def _switch(self, r: _Relay, state: bool, t: datetime) -> None:
        r.state = state
        r.switched_at = t
        self._last_switch = t
        if state:
            r.ons.append(t)

    def _override_switch(self, r: _Relay, state: bool, t: datetime | None) -> None:
        if t is None:  # before the first reading: counts at that reading
            r.state = state
            r.switched_at = None
            self._settle_pending = True
        else:
            self._switch(r, state, t)

    def _restore_overrides(self, t: datetime, why: str) -> list[SwitchEvent]:
        events = []
        for r in self._relays:
            if r.mode != "AUTO" and r.state != (r.mode == "ON"):
                self._switch(r, r.mode == "ON", t)
                events.append(
                    SwitchEvent(r.cfg.name, r.state, t, f"manual override {r.mode}, {why}", "override")
                )
        return events

    def _gap(self, t: datetime, gap_s: float) -> list[SwitchEvent]:
        limit_s = self.control.stale_after
        reason = f"gap: no reading for {gap_s:.0f} s of meter time, stale_after is {limit_s:g} s"
        self._unshed_all()
        if self.shaver is not None:
            self.shaver.reset_gap()
        events = []
        for r in self._relays:
            r.end_runs()
            if r.mode == "AUTO" and r.state != r.cfg.safe_state:
                r.state = r.cfg.safe_state
                r.switched_at = t
                events.append(SwitchEvent(r.cfg.name, r.state, t, reason, "safe"))
        return events

    def _shift(self, delta: timedelta) -> None:
        """The meter clock went back: move every stored time so elapsed durations are kept."""
        if self.shaver is not None:
            self.shaver.reset_gap()  # the quarter's baseline starts again at the new time
        if self._last_switch is not None:
            self._last_switch += delta
        for r in self._relays:
            r.end_runs()
            if r.switched_at is not None:
                r.switched_at += delta
            r.ons = deque(x + delta for x in r.ons)

    def _inside_hours(self, r: _Relay, t: datetime) -> bool:
        if r.cfg.hours is None:
            return True
        local = t.astimezone(self.tz) if self.tz is not None and t.tzinfo is not None else t
        tod = local.time()
        start, end = r.cfg.hours
        if start < end:
            return start <= tod < end
        return tod >= start or tod < end

    def _off_reason(self, r: _Relay, t: datetime) -> str | None:
        """Why relay `r` should be off now (its off condition held, or outside hours), else None."""
        if r.daily is not None and r.daily.due(t, self._register) is not None and self._inside_hours(r, t):
            return None
        if r.off is not None:
            if r.off.held(t):
                return r.off.cond.describe(r.off.value)
        elif not r.on.true:
            return r.on.cond.describe(r.on.value, negated=True)
        if not self._inside_hours(r, t):
            return f"outside hours {_hhmm(r.cfg)}"
        return None

    def _pick_off(self, t: datetime) -> tuple[_Relay, bool, str] | None:
        best: tuple[_Relay, str] | None = None
        for r in self._relays:
            if r.mode != "AUTO" or r.blocked is not None or not r.state or _since(t, r.switched_at) < r.cfg.min_on:
                continue
            reason = self._off_reason(r, t)
            if reason is not None and (best is None or r.cfg.priority > best[0].cfg.priority):
                best = (r, reason)
        return None if best is None else (best[0], False, best[1])

    def _switch_on_allowed(self, r: _Relay, t: datetime) -> bool:
        if r.cfg.max_switches is None:
            return True
        count, window_s = r.cfg.max_switches
        limit = t - timedelta(seconds=window_s)
        while r.ons and r.ons[0] <= limit:
            r.ons.popleft()
        return len(r.ons) < count

    def _pick_on(self, t: datetime, fc: Forecast | None) -> tuple[_Relay, bool, str] | None:
        best: tuple[_Relay, str] | None = None
        for r in self._relays:
            due = None if r.daily is None else r.daily.due(t, self._register)
            if (
                r.mode != "AUTO"
                or r.blocked is not None
                or r.state
                or not (r.on.held(t) or due is not None)
                or _since(t, r.switched_at) < r.cfg.min_off
                or not self._inside_hours(r, t)
                or not self._switch_on_allowed(r, t)
                or (r.cfg.sheddable and not self._room_for(r, fc))
            ):
                continue
            if best is None or r.cfg.priority < best[0].cfg.priority:
                best = (r, r.on.cond.describe(r.on.value) if r.on.held(t) else str(due))
        return None if best is None else (best[0], True, best[1])

    # ------------------------------------------------------------ peak shaving

    def _forecast(self, reading: Reading, t: datetime) -> Forecast | None:
        """This reading's quarter forecast; learn what the relay shed at the last reading dropped."""
        reg = reading.values.get("0-0:96.14.0")
        if reg is not None and isinstance(reg.value, int | float):
            self._register = int(reg.value)
        if self.shaver is None:
            return None
        kwh, kw, demand, peak = meter_inputs(reading, self.tz)
        fc = self.forecast = self.shaver.update(t, kwh, kw, demand, peak)
        if self._measure is not None:
            r, before_kw = self._measure
            r.shed_kw = max(0.0, before_kw - kw)
            self._measure = None
        if not fc.fits:
            self._fit_since = None
        elif self._fit_since is None:
            self._fit_since = t
        return fc

    def _room_for(self, r: _Relay, fc: Forecast | None) -> bool:
        """Whether sheddable relay `r` may switch on: nothing shed and the forecast fits (with its load)."""
        if fc is None:
            return True
        if self._shed or not fc.fits:
            return False
        return r.shed_kw is None or fc.with_load(r.shed_kw) <= fc.limit_kw

    def _pick_shed(self, t: datetime, fc: Forecast | None) -> tuple[_Relay, bool, str] | None:
        if fc is None or not fc.over:
            return None
        best: _Relay | None = None
        for r in self._relays:
            if r.mode != "AUTO" or not r.state or not r.cfg.sheddable or r in self._shed:
                continue
            if best is None or r.cfg.priority > best.cfg.priority:
                best = r
        return None if best is None else (best, False, fc.shed_reason())

    def _pick_restore(self, t: datetime, fc: Forecast | None) -> tuple[_Relay, bool, str] | None:
        """The last relay shed back under its rule, once the forecast has fitted for restore_after."""
        if fc is None or not self._shed or self._fit_since is None or self.shaver is None:
            return None
        fitted_s = _since(t, self._fit_since)
        if fitted_s < self.shaver.cfg.restore_after or fc.left_s <= 120.0:
            return None
        r = self._shed[-1]
        if r.shed_kw is not None and fc.with_load(r.shed_kw) > fc.limit_kw:
            return None  # it would be shed again at once
        if r.mode != "AUTO" or r.state or self._off_reason(r, t) is not None:
            self._shed.pop()  # its rule (or a manual mode) wants it off anyway: released without a switch
            return None
        if _since(t, r.switched_at) < r.cfg.min_off or not self._switch_on_allowed(r, t):
            return None
        self._shed.pop()
        return r, True, (f"restore: quarter forecast {fc.forecast_kw:.2f} kW < {fc.fit_kw:.2f} kW "
                         f"for {fitted_s:.0f} s")

    def _unshed_all(self) -> None:
        self._shed.clear()
        self._measure = None
        self._fit_since = None
