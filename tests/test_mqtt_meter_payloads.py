"""The payload -> quantities mapping shared by MQTT and HTTP meters (pure; hypothesis)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.meters.payloads import PayloadError, at_path, check_path, parse, status

# The WAGO load-management guide's meter answer
WAGO = {"power_kw": 25.5, "total_kwh": 12345.6, "voltage": 230.2, "current": 36.9, "power_factor": 0.97}


def test_wago_fields() -> None:
    q = parse(json.dumps(WAGO).encode())
    assert q == pytest.approx({"power_w": 25500.0, "import_kwh": 12345.6, "voltage_v": 230.2, "current_a": 36.9,
                               "power_factor": 0.97})


def test_alternates_and_power_unit() -> None:
    assert parse(b'{"power": 2500, "energy": 12.5}') == {"power_w": 2500.0, "import_kwh": 12.5}
    assert parse(b'{"activePower": 2.5, "totalEnergy": 12.5}', power_unit="kW") == {"power_w": 2500.0,
                                                                                  "import_kwh": 12.5}
    assert parse(b'{"power": 2.5, "unit": "kW"}') == {"power_w": 2500.0}
    assert parse(b'{"power": {"value": 2500, "unit": "W"}, "energy": {"value": 1500, "unit": "Wh"}}',
                 power_unit="kW") == {"power_w": 2500.0, "import_kwh": 1.5}
    assert parse(b'{"data": {"power_kw": -1.2}}') == {"power_w": -1200.0}  # nested, export negative


def test_plain_numbers_and_home_assistant_state() -> None:
    assert parse(b"2500", only="power_w") == {"power_w": 2500.0}
    assert parse(b"2.5", only="power_w", power_unit="kW") == {"power_w": 2500.0}
    assert parse(b'"230.1"', only="voltage_v") == {"voltage_v": 230.1}
    assert parse(b"1234.5", only="import_kwh") == {"import_kwh": 1234.5}
    ha = {"entity_id": "sensor.pv_power", "state": "1.5", "attributes": {"unit_of_measurement": "kW"}}
    assert parse(json.dumps(ha).encode(), only="power_w") == {"power_w": 1500.0}
    with pytest.raises(PayloadError, match="no quantity to give it to"):
        parse(b"12")
    with pytest.raises(PayloadError, match="not a number"):
        parse(b'"unavailable"', only="power_w")


def test_shelly_gen2_em_and_emdata() -> None:
    em = {"id": 0, "a_current": 4.029, "a_voltage": 236.1, "a_act_power": 951.2, "total_current": 4.029,
          "total_act_power": 951.2, "total_aprt_power": 1000.0}
    q = parse(json.dumps(em).encode())
    assert q == pytest.approx({"power_w": 951.2, "voltage_v": 236.1, "current_a": 4.029})
    data = {"id": 0, "total_act": 1234567.0, "total_act_ret": 7654.0}
    assert parse(json.dumps(data).encode()) == pytest.approx({"import_kwh": 1234.567, "export_kwh": 7.654})


def test_json_paths() -> None:
    doc = {"data": {"meters": [{"p": 1}, {"p": 2.5, "e": 3000}]}}
    assert at_path(doc, "data.meters[1].p") == 2.5
    assert at_path(doc, "data.meters[5].p") is None
    q = parse(json.dumps(doc).encode(), power_unit="kW", energy_unit="Wh",
              paths={"power_w": "data.meters[1].p", "import_kwh": "data.meters[1].e"})
    assert q == {"power_w": 2500.0, "import_kwh": 3.0}
    with pytest.raises(ValueError):
        check_path("data..x")


def test_errors_say_why() -> None:
    with pytest.raises(PayloadError, match="neither a number nor JSON"):
        parse(b"<html>oops</html>")
    with pytest.raises(PayloadError, match="no known quantity"):
        parse(b'{"foo": 1}')
    with pytest.raises(PayloadError, match="unknown power unit"):
        parse(b'{"power": {"value": 1, "unit": "hp"}}')
    with pytest.raises(PayloadError, match="empty"):
        parse(b"  ")


def test_status_payloads() -> None:
    assert status(b"online") is True and status(b"offline") is False
    assert status(b'{"online": false}') is False and status(b'{"status": "online"}') is True
    assert status(b"what") is None and status(b"\xff") is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, "power_w", "import_kwh", "voltage_v"]))
def test_garbage_gives_payload_error_only(payload: bytes, only: str | None) -> None:
    try:
        q = parse(payload, only=only)
    except PayloadError:
        return
    assert all(isinstance(v, float) for v in q.values())


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["power", "power_kw", "energy", "unit", "value", "state", "voltage", "data", "x"]),
        inner, max_size=5),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_any_json_gives_finite_quantities_or_payload_error(doc: object) -> None:
    try:
        q = parse(json.dumps(doc).encode(), only="power_w")
        assert status(json.dumps(doc).encode()) in (True, False, None)
    except PayloadError:
        return
    except ValueError as exc:  # json.dumps of NaN is fine for Python; json.loads reads it back
        raise AssertionError(exc) from None
    assert all(v == v and abs(v) != float("inf") for v in q.values())


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), st.sampled_from(["W", "kW"]))
def test_power_round_trips_in_either_unit(watts: float, unit: str) -> None:
    sent = watts / 1000.0 if unit == "kW" else watts
    assert parse(json.dumps({"power": sent}).encode(), power_unit=unit)["power_w"] == pytest.approx(watts)
    assert parse(json.dumps({"power": sent, "unit": unit}).encode())["power_w"] == pytest.approx(watts)


def test_a_value_that_overflows_when_scaled_is_dropped() -> None:
    # found by hypothesis: power_kw 1.8e305 x 1000 is inf
    with pytest.raises(PayloadError):
        parse(b'{"power_kw": 1.797693134862316e+305}')
    assert parse(b'{"power_kw": 1e306, "voltage": 230}') == {"voltage_v": 230.0}
    with pytest.raises(PayloadError, match="out of range"):
        parse(b"1e308", only="power_w", power_unit="kW")
