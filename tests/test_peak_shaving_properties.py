"""Hypothesis properties of peak shaving in a closed loop (house.py: power constant between readings).

- every quarter's average stays under the target while the sheddable load is enough (the base load alone
  fits under target - 2 x margin) and the forecast is right (power constant between readings);
- no chatter: min_off is kept by every switch on, settle between any two rule switches, at most one per
  reading; min_on is kept by relays that are not sheddable;
- the same decisions whatever the replay speed (wall clock) and however the readings are batched.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import event, example, given, settings
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


# ---------------------------------------------------------------- the meter's own 1-0:1.4.0 as a cross-check


@PROFILE
@given(setups())
def test_a_meter_sending_its_own_quarter_average_agrees_and_the_quarters_still_fit(
        setup: tuple[Policy, House, list[float], float]) -> None:
    """1-0:1.4.0 as a Fluvius meter sends it (the quarter so far / 15 min, 3 decimals): it agrees with the counters,
    the forecast uses it (the billed figure) and every quarter still stays under the target."""
    pol, house, gaps, target = setup
    house.demand = lambda _t, exact_kw: round(exact_kw, 3)
    sources: set[str] = set()
    i = 0
    while house.t < START + timedelta(minutes=45):
        house.advance(gaps[i % len(gaps)])
        i += 1
        assert pol.forecast is not None
        sources.add(pol.forecast.source)
        assert pol.forecast.disagree_s == 0.0
    assert sources == {"meter"} and pol.shaver is not None and pol.shaver.disagreements == 0
    for q, kw in house.averages_kw().items():
        assert kw <= target + 1e-9, (q, kw, target)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10), st.floats(0.0, 8.0)), min_size=60, max_size=150),
       st.lists(st.tuples(st.integers(0, 400), st.integers(0, 200)), min_size=1, max_size=3),
       st.floats(0.2, 3.0), st.sampled_from([1.0, -1.0]))
@example([(5, 3.0)] * 100, [(100, 120), (300, 30)], 1.0, 1.0)  # one 120-s episode, one too short to count
def test_a_disagreement_counts_once_it_lasts_and_only_then_the_meter_wins(
        steps: list[tuple[int, float]], windows: list[tuple[int, int]], offset_kw: float, sign: float) -> None:
    """Within one quarter: readings where the meter's value is off by more than the tolerance form runs; a run
    lasting DISAGREE_S of meter time is one counted episode, and from then on its forecast uses the meter's
    value; before that (and whenever they agree) the forecast is the counters' one or the same within it."""
    from app.control.capacity import DISAGREE_S, PeakShaver, quarter_start

    cfg = CapacityConfig(True, 2.5, False, 0.2, 60.0)
    sh, ref = PeakShaver(cfg, TZ), PeakShaver(cfg, TZ)
    t0 = START + timedelta(seconds=1)
    t, kwh, kw = t0, 100.0, 0.0
    runs: list[tuple[datetime, datetime]] = []
    prev_t: datetime | None = None
    prev_disagreed = False
    for dt, next_kw in steps:
        if (t + timedelta(seconds=dt) - quarter_start(t0)).total_seconds() >= 899:
            break
        t += timedelta(seconds=dt)
        kwh += kw * dt / 3600
        kw = next_kw
        plain = ref.update(t, kwh, kw)  # the counters alone
        counted_kw = plain.so_far_kwh / 0.25
        into_s = (t - t0).total_seconds()
        off = any(a <= into_s < a + n for a, n in windows)  # the meter's value is off by offset_kw in these
        sent = max(0.0, counted_kw + sign * offset_kw) if off else counted_kw
        fc = sh.update(t, kwh, kw, sent)
        assert fc.counted_kw == counted_kw
        disagrees = abs(sent - (fc.counted_kw or 0.0)) > fc.demand_tolerance_kw
        if disagrees:
            if runs and runs[-1][1] == prev_t and prev_disagreed:
                runs[-1] = (runs[-1][0], t)
            else:
                runs.append((t, t))
            lasting = (t - runs[-1][0]).total_seconds()
            assert fc.disagree_s == lasting
            if lasting >= DISAGREE_S:
                assert fc.source == "meter" and abs(fc.so_far_kwh - sent * 0.25) < 1e-12
            else:
                assert fc.source == "counters" and fc.forecast_kw == plain.forecast_kw
        else:
            assert fc.disagree_s == 0.0 and fc.source == "meter"
            assert abs(fc.forecast_kw - plain.forecast_kw) <= fc.demand_tolerance_kw + 1e-9
        prev_t, prev_disagreed = t, disagrees
    assert sh.disagreements == sum(1 for a, b in runs if (b - a).total_seconds() >= DISAGREE_S)
    event(f"episodes={min(sh.disagreements, 2)}")
