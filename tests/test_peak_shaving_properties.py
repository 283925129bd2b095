"""Hypothesis properties of peak shaving in a closed loop (house.py: power constant between readings).

- every quarter's average stays under the target while the sheddable load is enough (the base load alone
  fits under target - 2 x margin) and the forecast is right (power constant between readings);
- no chatter: min_off is kept by every switch on, settle between any two rule switches, at most one per
  reading; min_on is kept by relays that are not sheddable;
- the same decisions whatever the replay speed (wall clock) and however the readings are batched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import ControlConfig, RelayConfig
from app.control.capacity import CapacityConfig
from app.control.conditions import parse_condition
from app.control.policy import Policy, SwitchEvent
from app.records import Reading
from tests.house import TZ, House

START = datetime(2026, 3, 2, 18, 0, tzinfo=TZ)
PROFILE = settings(max_examples=25, deadline=None)


@st.composite
def setups(draw: st.DrawFn) -> tuple[Policy, House, list[float], float]:
    target = draw(st.sampled_from([2.5, 3.0, 4.0]))
    margin = 0.3
    settle = draw(st.sampled_from([0.0, 2.0, 5.0]))
    n = draw(st.integers(1, 3))
    relays, loads = [], {}
    for i in range(n):
        relays.append(RelayConfig(
            name=f"r{i}", pin="", priority=draw(st.integers(1, 3)), on_when=parse_condition("import >= 0 W"),
            min_on=draw(st.sampled_from([0.0, 60.0, 600.0])), min_off=draw(st.sampled_from([0.0, 30.0, 120.0])),
            sheddable=True))
        loads[f"r{i}"] = draw(st.sampled_from([0.5, 1.2, 2.0, 2.5]))
    # the base load steps between levels that fit alone under target - 2 x margin
    levels = draw(st.lists(st.floats(0.0, target - 2 * margin - 0.05), min_size=1, max_size=6))
    step_s = draw(st.sampled_from([120, 300, 700]))

    def base(t: datetime) -> float:
        return levels[int((t - START).total_seconds() // step_s) % len(levels)]

    pol = Policy(ControlConfig(settle=settle, stale_after=30.0), tuple(relays), TZ,
                 capacity=CapacityConfig(True, target, False, margin, draw(st.sampled_from([10.0, 60.0]))))
    gaps = draw(st.lists(st.sampled_from([1.0, 1.0, 2.0, 5.0]), min_size=50, max_size=50))
    return pol, House(pol, loads, base, START), gaps, target


@PROFILE
@given(setups())
def test_quarters_stay_under_the_target_and_nothing_chatters(setup: tuple[Policy, House, list[float], float]) -> None:
    pol, house, gaps, target = setup
    i = 0
    while house.t < START + timedelta(minutes=45):
        house.advance(gaps[i % len(gaps)])
        i += 1
    for q, kw in house.averages_kw().items():
        assert kw <= target + 1e-9, (q, kw, target)
    last: dict[str, datetime] = {}
    settle_ref: datetime | None = None
    per_reading: dict[datetime, int] = {}
    cfg = {r.cfg.name: r.cfg for r in pol._relays}
    for e in house.events:
        if e.kind == "start":
            continue
        per_reading[e.at] = per_reading.get(e.at, 0) + 1
        assert per_reading[e.at] == 1
        if settle_ref is not None:
            assert (e.at - settle_ref).total_seconds() >= pol.control.settle
        ref = last.get(e.name, house.events[0].at + timedelta(seconds=1))
        if e.state:
            assert (e.at - ref).total_seconds() >= cfg[e.name].min_off, e
        last[e.name] = settle_ref = e.at


@settings(max_examples=12, deadline=None)
@given(setups(), st.integers(1, 7), st.floats(0.01, 100.0))
def test_the_same_decisions_at_any_replay_speed_and_batching(
        setup: tuple[Policy, House, list[float], float], batch: int, speed: float) -> None:
    pol, house, gaps, _target = setup
    i = 0
    readings: list[Reading] = []
    orig = pol.step

    def record(r: Reading, wall: datetime | None = None) -> list[SwitchEvent]:
        readings.append(r)
        return orig(r, wall)

    pol.step = record  # type: ignore[method-assign,assignment]
    while house.t < START + timedelta(minutes=40):
        house.advance(gaps[i % len(gaps)])
        i += 1
    want = [(e.name, e.state, e.at, e.reason) for e in house.events if e.kind != "start"]
    cap = pol.shaver.cfg if pol.shaver else None
    again = Policy(pol.control, tuple(r.cfg for r in pol._relays), TZ, capacity=cap)
    again.start(START)
    wall0 = datetime(2031, 1, 1, tzinfo=UTC)
    got = []
    for k in range(0, len(readings), batch):
        chunk = readings[k:k + batch]
        for r in chunk:
            wall = wall0 + (r.time - START) / speed
            got += [(e.name, e.state, e.at, e.reason) for e in again.step(r, wall)]
    assert got == want
