"""Hypothesis properties of the relay policy over random power sequences.

- no relay switches again within min_on / min_off of its last switch (the start counting at the
  first reading), except to its safe state on stale data, a gap, or shutdown, or by override;
- no two rule switches within settle; at most one rule switch per reading;
- the decisions are the same whatever the replay speed and however the readings are batched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import ControlConfig, RelayConfig
from app.control.conditions import parse_condition
from app.control.controller import Controller
from app.control.policy import Policy, SwitchEvent
from app.records import Reading

BASE = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
WALL = datetime(2030, 1, 1, tzinfo=UTC)
STALE_AFTER = 30.0

ON_WHEN = [
    "export > 1500 W",
    "export > 1500 W for 20 s",
    "mean(export, 30 s) > 1500 W",
    "export >= 1 kW for 5 s",
    "net < -1000 W for 10 s",
]
OFF_WHEN = [
    None,
    "export < 200 W",
    "export < 200 W for 15 s",
    "import > 1000 W",
    "mean(import, 20 s) > 500 W for 5 s",
]
LEVELS_W = [0.0, 100.0, 600.0, 1000.0, 1600.0, 2500.0, 4000.0]
PROFILE = settings(max_examples=50, deadline=None)


@st.composite
def relays(draw: st.DrawFn) -> tuple[RelayConfig, ...]:
    out = []
    pins = iter(["GPIO5", "GPIO6", "GPIO13", "GPIO19"])
    for i in range(draw(st.integers(1, 4))):
        off = draw(st.sampled_from(OFF_WHEN))
        out.append(
            RelayConfig(
                name=f"r{i}",
                pin=next(pins),
                active_high=draw(st.booleans()),
                safe_state=draw(st.booleans()),
                priority=draw(st.integers(1, 3)),
                on_when=parse_condition(draw(st.sampled_from(ON_WHEN))),
                off_when=None if off is None else parse_condition(off),
                min_on=draw(st.sampled_from([0.0, 10.0, 30.0, 60.0])),
                min_off=draw(st.sampled_from([0.0, 10.0, 30.0, 60.0])),
                max_switches=draw(st.sampled_from([None, (2, 120.0), (1, 60.0)])),
                hours=None,
            )
        )
    return tuple(out)


@st.composite
def readings(draw: st.DrawFn) -> list[Reading]:
    n = draw(st.integers(1, 120))
    steps = draw(st.lists(st.sampled_from([1, 2, 5, 10, 10, 10, 15, 30, 31, 45]), min_size=n, max_size=n))
    t = 0.0
    out = []
    for i, dt in enumerate(steps):
        t += dt if i else 0
        fields = {
            "actual_total_injection": draw(st.sampled_from(LEVELS_W)) / 1000,
            "actual_total_consumption": draw(st.sampled_from(LEVELS_W)) / 1000,
        }
        when = BASE + timedelta(seconds=t)
        out.append(Reading(i, "dsmr", "T", "/T", when, when, {}, fields))
    return out


Action = tuple[str, str, str] | None
ACTIONS = st.one_of(
    st.none(),
    st.none(),
    st.none(),
    st.just(("stale", "", "")),
    st.just(("shutdown", "", "")),
    st.tuples(st.just("override"), st.sampled_from(["r0", "r1"]), st.sampled_from(["ON", "OFF", "AUTO"])),
)


@dataclass
class Checker:
    """Replays the events against the rules they must obey."""

    control: ControlConfig
    relays: tuple[RelayConfig, ...]

    def __post_init__(self) -> None:
        self.cfg = {r.name: r for r in self.relays}
        self.state = {r.name: r.safe_state for r in self.relays}
        self.ref: dict[str, datetime | None] = {r.name: None for r in self.relays}  # None: next reading
        self.settle_ref: datetime | None = None
        self.settle_pending = False
        self.last_t: datetime | None = None
        self.mode = {r.name: "AUTO" for r in self.relays}

    def reading(self, t: datetime, events: list[SwitchEvent]) -> None:
        for name, ref in self.ref.items():
            if ref is None:
                self.ref[name] = t
        if self.settle_pending:
            self.settle_ref, self.settle_pending = t, False
        self.last_t = t
        autos = [e for e in events if e.kind == "auto"]
        assert len(autos) <= 1, events
        for ev in events:
            assert ev.at == t
            assert ev.state != self.state[ev.name], ev
            if ev.kind == "auto":
                cfg = self.cfg[ev.name]
                ref = self.ref[ev.name]
                assert ref is not None
                hold = cfg.min_on if self.state[ev.name] else cfg.min_off
                assert (t - ref).total_seconds() >= hold, (ev, ref)
                if self.settle_ref is not None:
                    assert (t - self.settle_ref).total_seconds() >= self.control.settle, ev
                assert self.mode[ev.name] == "AUTO"
                self.settle_ref = t
            elif ev.kind == "safe":
                assert ev.state == self.cfg[ev.name].safe_state
            else:
                assert ev.kind == "override" and ev.state == (self.mode[ev.name] == "ON")
                self.settle_ref = t
            self.state[ev.name] = ev.state
            self.ref[ev.name] = t

    def forced(self, events: list[SwitchEvent]) -> None:
        for ev in events:
            assert ev.kind == "safe" and ev.state == self.cfg[ev.name].safe_state
            self.state[ev.name] = ev.state
            self.ref[ev.name] = None
        assert self.state == {n: c.safe_state for n, c in self.cfg.items()}

    def override(self, name: str, mode: str, events: list[SwitchEvent]) -> None:
        self.mode[name] = mode
        for ev in events:
            assert ev.kind == "override" and ev.name == name and ev.state == (mode == "ON")
            self.state[name] = ev.state
            self.ref[name] = self.last_t
            if self.last_t is None:
                self.settle_pending = True
            else:
                self.settle_ref = self.last_t


@PROFILE
@given(relays(), readings(), st.sampled_from([0.0, 5.0, 15.0]))
def test_min_on_min_off_and_settle(rel: tuple[RelayConfig, ...], rs: list[Reading], settle_s: float) -> None:
    control = ControlConfig(settle=settle_s, stale_after=STALE_AFTER)
    policy = Policy(control, rel)
    check = Checker(control, rel)
    policy.start(WALL)
    for r in rs:
        check.reading(r.time, policy.step(r))
        assert policy.states == check.state


@PROFILE
@given(relays(), readings(), st.sampled_from([0.0, 15.0]), st.data())
def test_properties_hold_with_stale_shutdown_and_overrides(
    rel: tuple[RelayConfig, ...], rs: list[Reading], settle_s: float, data: st.DataObject
) -> None:
    control = ControlConfig(settle=settle_s, stale_after=STALE_AFTER)
    policy = Policy(control, rel)
    check = Checker(control, rel)
    policy.start(WALL)
    for r in rs:
        action = data.draw(ACTIONS)
        if action is not None and action[0] in ("stale", "shutdown"):
            check.forced(policy.force_safe(WALL, action[0]))
        elif action is not None and action[1] in check.cfg:
            _, name, mode = action
            check.override(name, mode, policy.override(name, mode, WALL))
        check.reading(r.time, policy.step(r))
        assert policy.states == check.state


def _auto(events: list[SwitchEvent]) -> list[tuple[str, bool, datetime, str]]:
    return [(e.name, e.state, e.at, e.reason) for e in events if e.kind == "auto"]


def _live(
    rel: tuple[RelayConfig, ...], rs: list[Reading], speed: float
) -> tuple[list[dict[str, bool]], list]:
    """Replay through a Controller on mock pins with wall time = meter time / speed."""
    factory = MockFactory()
    ctl = Controller(ControlConfig(settle=15.0, stale_after=STALE_AFTER), rel, pin_factory=factory)
    ctl.start(now_monotonic=0.0)
    t0 = rs[0].time
    states, autos = [], []
    try:
        for r in rs:
            now = (r.time - t0).total_seconds() / speed
            ctl.check_stale(now)
            autos += _auto(ctl.on_reading(r, now_monotonic=now))
            states.append(ctl.states)
            for cfg in rel:  # the pins follow the states
                assert bool(factory.pin(cfg.pin).state) == (ctl.states[cfg.name] == cfg.active_high)
    finally:
        ctl.close()
        factory.reset()
    return states, autos


@PROFILE
@given(relays(), readings(), st.sampled_from([2.0, 10.0, 1000.0]))
def test_same_decisions_at_any_replay_speed(
    rel: tuple[RelayConfig, ...], rs: list[Reading], speed: float
) -> None:
    assert _live(rel, rs, 1.0) == _live(rel, rs, speed)


@PROFILE
@given(relays(), readings(), st.lists(st.integers(1, 20), min_size=1, max_size=30))
def test_same_decisions_however_batched(
    rel: tuple[RelayConfig, ...], rs: list[Reading], cuts: list[int]
) -> None:
    control = ControlConfig(settle=15.0, stale_after=STALE_AFTER)
    one = Policy(control, rel)
    one.start(WALL)
    singly = [e for r in rs for e in one.step(r)]
    batched_policy = Policy(control, rel)
    batched_policy.start(WALL)
    batched: list[SwitchEvent] = []
    i = 0
    for size in cuts * (len(rs) // max(1, sum(cuts)) + 1):
        if i >= len(rs):
            break
        batched += batched_policy.feed(rs[i : i + size])
        i += size
    assert singly == batched
    assert one.states == batched_policy.states


# ------------------------------------------------------------------ meter clocks that freeze or step back

OFF_AFTER_S = 10


def _clock_relay() -> tuple[RelayConfig, ...]:
    return (RelayConfig(name="boiler", pin="GPIO17", on_when=parse_condition("export > 1500 W"),
                        off_when=parse_condition(f"export < 200 W for {OFF_AFTER_S} s")),)


def _at(t_s: float, export_w: float, wall_s: float | None = None) -> Reading:
    when = BASE + timedelta(seconds=t_s)
    wall = WALL + timedelta(seconds=t_s if wall_s is None else wall_s)
    return Reading(0, "dsmr", "T", "/T", when, wall,
                   {}, {"actual_total_injection": export_w / 1000, "actual_total_consumption": 0.0})


@PROFILE
@given(st.lists(st.integers(1, 4).flatmap(lambda f: st.tuples(st.just(f), st.integers(1 - f, 0))),
                min_size=8, max_size=30))
def test_small_backward_steps_do_not_reset_runs(groups: list[tuple[int, int]]) -> None:
    """export 0 W after the relay went on: off once the meter clock's high-water mark is 10 s past the
    drop, however the clock steps back by up to 3 s (e.g. 1 s every fifth telegram) or stands, as long as
    it advances overall (a clock that does not pass its high-water mark for stale_after is stale instead)."""
    steps = [x for forward, back in groups for x in [1] * forward + [back]]
    policy = Policy(ControlConfig(settle=0.0, stale_after=STALE_AFTER), _clock_relay())
    policy.start(WALL)
    policy.step(_at(0, 3000))
    assert policy.states == {"boiler": True}
    t = 0.0
    high = 0.0
    drop: float | None = None
    for i, dt in enumerate(steps):
        t += dt
        high = max(high, t)
        policy.step(_at(t, 0.0, wall_s=float(i + 1)))
        drop = high if drop is None else drop
        if high - drop >= OFF_AFTER_S:
            assert policy.states == {"boiler": False}, (steps[: i + 1], high, drop)
            return
        assert policy.states == {"boiler": True}


def test_a_one_second_step_back_every_fifth_telegram_still_switches_off() -> None:
    policy = Policy(ControlConfig(settle=0.0, stale_after=STALE_AFTER), _clock_relay())
    policy.start(WALL)
    policy.step(_at(0, 3000))
    t, off_at = 0, None
    for i in range(1, 61):
        t += -1 if i % 5 == 0 else 1
        if policy.step(_at(t, 0.0, wall_s=i)):
            off_at = i
            break
    assert off_at is not None and off_at <= 20


@PROFILE
@given(st.integers(3, 20), st.integers(1, 90), st.sampled_from([5.0, 30.0, 60.0]))
def test_a_frozen_meter_clock_is_stale_after_stale_after_of_wall_time(
    before: int, frozen: int, stale_after: float
) -> None:
    """Readings keep coming every second of wall time while the meter clock stands still: relays safe
    once it has stood for more than stale_after, back under the rules when it moves again."""
    policy = Policy(ControlConfig(settle=0.0, stale_after=stale_after), _clock_relay())
    policy.start(WALL)
    for i in range(before):
        policy.step(_at(i, 3000))
    assert policy.states == {"boiler": True}
    last = before - 1
    for k in range(1, frozen + 1):
        events = policy.step(_at(last, 3000, wall_s=last + k))
        if k > stale_after:
            assert policy.states == {"boiler": False} and policy.clock_stuck is not None
            assert k - 1 <= stale_after or not events  # safe exactly once, at the first stale reading
        else:
            assert policy.states == {"boiler": True} and policy.clock_stuck is None
    policy.step(_at(last + 1, 3000, wall_s=last + frozen + 1))
    assert policy.clock_stuck is None and policy.states == {"boiler": True}


def test_frozen_clock_is_logged_by_the_controller(caplog: Any) -> None:
    import logging

    factory = MockFactory()
    ctl = Controller(ControlConfig(settle=0.0, stale_after=10.0), _clock_relay(), pin_factory=factory)
    ctl.start(now_monotonic=0.0)
    with caplog.at_level(logging.INFO, logger="app.control"):
        ctl.on_reading(_at(0, 3000), now_monotonic=0.0)
        for k in range(1, 15):
            ctl.on_reading(_at(0, 3000, wall_s=k), now_monotonic=float(k))
    ctl.close()
    text = caplog.text
    assert "stale: meter clock stuck at 2024-06-03T09:00:00+00:00 for 11 s of wall time" in text
    assert "relay boiler -> off (stale: meter clock stuck" in text
