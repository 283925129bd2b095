"""Combined quantities over several meters (pure): building, solar, available, <meter>.power; an offline
meter takes its sums away; the board's statuses and the relays it holds safe."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.control.quantities import combined, depends_on, meter_quantities
from app.meters.board import Board
from app.meters.sample import Sample, to_reading
from app.records import MeterState

T0 = datetime(2026, 6, 21, 12, 0, tzinfo=UTC)
powers = st.floats(-20000, 20000, allow_nan=False)
roles = st.sampled_from(["grid", "building", "solar", "zone"])


@given(st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.tuples(roles, powers), min_size=1,
                       max_size=6), st.floats(1000, 50000, allow_nan=False))
def test_available_is_capacity_plus_solar_minus_building(meters: dict[str, tuple[str, float]], cap: float) -> None:
    role_of = {n: r for n, (r, _) in meters.items()}
    latest = {n: {"power": p} for n, (_, p) in meters.items()}
    q = combined(role_of, latest, cap)
    building = sum(p for r, p in meters.values() if r in ("grid", "building"))
    solar = sum(abs(p) for r, p in meters.values() if r == "solar")
    assert q["building"] == pytest.approx(building)
    assert q["solar"] == pytest.approx(solar) and q["solar"] >= 0
    assert q["available"] == pytest.approx(cap + solar - building)
    for n, (_, p) in meters.items():
        assert q[f"{n}.power"] == p
    # the order the meters come in does not matter
    assert combined(dict(reversed(role_of.items())), dict(reversed(latest.items())), cap) == pytest.approx(q)


@given(st.dictionaries(st.from_regex(r"[a-z]{1,6}", fullmatch=True), st.tuples(roles, powers), min_size=1,
                       max_size=6), st.data())
def test_an_offline_meter_takes_away_exactly_what_depends_on_it(meters: dict[str, tuple[str, float]],
                                                                 data: st.DataObject) -> None:
    role_of = {n: r for n, (r, _) in meters.items()}
    gone = data.draw(st.sampled_from(sorted(meters)))
    latest = {n: {"power": p} for n, (_, p) in meters.items() if n != gone}
    q = combined(role_of, latest, 9200.0)
    for quantity in ("building", "solar", "available", f"{gone}.power"):
        needs = depends_on(quantity, role_of, "main")
        assert (quantity in q) == (gone not in needs), quantity


def test_a_meter_reading_gives_its_own_quantities_signed() -> None:
    r = to_reading(Sample(power_w=-2150.0, voltage_v=230.0, current_a=9.0), "pv", "solar", "modbus", 1, T0)
    assert meter_quantities(r) == {"import": 0.0, "export": 2150.0, "power": -2150.0, "voltage": 230.0, "current": 9.0}
    inv = to_reading(Sample(power_w=-2150.0, import_kwh=5.0), "pv", "solar", "modbus", 1, T0, invert=True)
    assert meter_quantities(inv)["power"] == 2150.0 and inv.fields["total_injection"] == 5.0


def test_the_board_says_online_offline_error_once_each_and_holds_dependent_relays() -> None:
    b = Board("grid", "grid", 30.0, {"pv": ("solar", 15.0)}, 9200.0, now=0.0)
    changes = b.check(1.0)
    assert changes == []  # offline from the start, no change yet
    b.update(to_reading(Sample(power_w=-3000.0), "pv", "solar", "modbus", 1, T0), 2.0)
    b.update(to_reading(Sample(power_w=500.0), "", "", "dsmr", 1, T0), 2.0)
    assert [str(c) for c in b.check(2.5)] == ["meter grid: offline -> online", "meter pv: offline -> online"]
    assert b.quantities(2.5)["available"] == 9200.0 + 3000.0 - 500.0
    needs = {"boiler": frozenset({"available"}), "pump": frozenset({"export"})}
    assert b.blocked(needs, 2.5) == {}
    b.on_state(MeterState("pv", "error", "cannot connect to 10.0.0.5:502"))
    assert [c.new for c in b.check(3.0)] == ["error"]
    assert b.check(3.5) == []  # logged once
    assert "available" in b.quantities(3.0)  # the last reading is still fresh
    b.update(to_reading(Sample(power_w=500.0), "", "", "dsmr", 2, T0), 20.0)
    changes = b.check(20.0)
    assert [(c.meter, c.new) for c in changes] == []  # still error: its reason stands
    b.on_state(MeterState("pv", "online"))
    changes = b.check(20.0)
    assert [(c.meter, c.new, c.reason) for c in changes] == [
        ("pv", "offline", "no reading for 18 s, offline_after is 15 s")]
    assert "available" not in b.quantities(20.0) and "pv.power" not in b.quantities(20.0)
    assert b.blocked(needs, 20.0) == {"boiler": "stale: meter pv offline"}


def test_a_meters_reading_keeps_name_and_role_through_pickling_and_p1_readings_stay_as_small() -> None:
    import pickle

    r = to_reading(Sample(power_w=100.0, import_kwh=1.0), "pv", "solar", "modbus", 3, T0)
    back = pickle.loads(pickle.dumps(r))
    assert back == r and (back.meter, back.role) == ("pv", "solar")
    p1 = to_reading(Sample(power_w=100.0, import_kwh=1.0), "", "", "dsmr", 3, T0)
    assert len(pickle.dumps(p1)) < len(pickle.dumps(r))  # the [meter] meter's readings carry no extra fields
    assert pickle.loads(pickle.dumps(p1)) == p1


def test_influx_points_of_a_meter_carry_its_name_as_the_meter_tag() -> None:
    from app.sinks.influx import reading_point

    r = to_reading(Sample(power_w=-100.0), "pv", "solar", "modbus", 1, T0)
    point = reading_point(r, {}, "smartmeter")
    assert point is not None and "meter=pv" in point.to_line_protocol()
    p1 = to_reading(Sample(power_w=100.0), "", "", "dsmr", 1, T0)
    line = reading_point(p1, {}, "smartmeter")
    assert line is not None and "meter=" not in line.to_line_protocol().split(" ")[0].replace("meter_id=", "")
