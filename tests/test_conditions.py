"""Relay conditions: grammar, units, errors, and the quantities they compare."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.config import ConfigError, loads
from app.control.conditions import Condition, parse_condition, parse_duration_s
from app.control.quantities import quantities
from app.records import Reading


@pytest.mark.parametrize(
    ("text", "quantity", "op", "threshold", "duration_s", "mean_s", "unit"),
    [
        ("export > 1500 W for 60 s", "export", ">", 1500.0, 60.0, None, "W"),
        ("export < 200 W for 30 s", "export", "<", 200.0, 30.0, None, "W"),
        ("import >= 4.5 kW for 2 min", "import", ">=", 4500.0, 120.0, None, "kW"),
        ("import<=2kW", "import", "<=", 2000.0, 0.0, None, "kW"),
        ("net > -1000", "net", ">", -1000.0, 0.0, None, "W"),
        ("IMPORT_L2 > 3000 FOR 1 H", "import_l2", ">", 3000.0, 3600.0, None, "W"),
        ("export_l3 > 100 w", "export_l3", ">", 100.0, 0.0, None, "W"),
        ("current_l1 > 20 A for 10 s", "current_l1", ">", 20.0, 10.0, None, "A"),
        ("voltage_l3 < 207 V", "voltage_l3", "<", 207.0, 0.0, None, "V"),
        ("voltage_l1 > 250", "voltage_l1", ">", 250.0, 0.0, None, "V"),
        ("demand > 2.5 kW", "demand", ">", 2500.0, 0.0, None, "kW"),
        ("actual_total_injection > 1.2 kW", "actual_total_injection", ">", 1200.0, 0.0, None, "kW"),
        ("actual_total_injection > 1200", "actual_total_injection", ">", 1200.0, 0.0, None, "W"),
        ("l1_current >= 16 A", "l1_current", ">=", 16.0, 0.0, None, "A"),
        ("mean(export, 2 min) > 1500 W", "export", ">", 1500.0, 0.0, 120.0, "W"),
        ("mean( import , 30 s ) > 3 kW for 1 min", "import", ">", 3000.0, 60.0, 30.0, "kW"),
        ("export > 1500 W for 1.5 min", "export", ">", 1500.0, 90.0, None, "W"),
    ],
)
def test_parse(
    text: str, quantity: str, op: str, threshold: float, duration_s: float, mean_s: float | None, unit: str
) -> None:
    c = parse_condition(text)
    assert (c.quantity, c.op, c.threshold, c.duration_s, c.mean_window_s, c.unit) == (
        quantity,
        op,
        threshold,
        duration_s,
        mean_s,
        unit,
    )
    assert c.text == text.strip()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty condition"),
        ("export > 5 V", "unit 'V' does not fit 'export', which is in W"),
        ("current_l1 > 5 kW", "unit 'kW' does not fit 'current_l1', which is in A"),
        ("voltage_l1 > 5 A", "does not fit 'voltage_l1'"),
        ("export > 5 lumen", "unknown unit 'lumen'"),
        ("exprot > 5", "unknown quantity 'exprot'"),
        ("export = 5", "operator '=' is not allowed"),
        ("export == 5", "operator '==' is not allowed"),
        ("export != 5", "operator '!=' is not allowed"),
        ("export 5", "expected an operator"),
        ("export >", "expected a number after '>'"),
        ("export > lots", "expected a number"),
        ("export > 5 W during 3 s", "unexpected 'during 3 s'"),
        ("export > 5 W for", "'for' needs a duration"),
        ("export > 5 W for 3 days", "bad duration '3 days'"),
        ("export > 5 W for soon", "bad duration 'soon'"),
        ("mean(export) > 5", "expected 'mean(<quantity>, <duration>)'"),
        ("mean(export, ) > 5", "mean() needs a window"),
        ("mean(export, 0 s) > 5", "longer than 0 s"),
        ("mean(export, 1 week) > 5", "bad duration '1 week'"),
        ("mean(bogus, 1 min) > 5", "unknown quantity 'bogus'"),
        ("> 5", "expected a quantity"),
    ],
)
def test_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=None) as info:
        parse_condition(text)
    assert message in str(info.value)


def test_config_error_quotes_the_condition() -> None:
    ini = "[relay:boiler]\npin = GPIO17\non_when = export > 5 V\n"
    with pytest.raises(ConfigError) as info:
        loads(ini)
    text = str(info.value)
    assert "[relay:boiler] on_when = 'export > 5 V'" in text
    assert "does not fit 'export'" in text


def test_config_builds_conditions() -> None:
    ini = (
        "[relay:boiler]\npin = GPIO17\non_when = export > 1500 W for 60 s ; surplus\n"
        "off_when = mean(export, 2 min) < 0.2 kW\n"
    )
    relay = loads(ini).relays[0]
    assert relay.on_when == parse_condition("export > 1500 W for 60 s")
    assert relay.off_when is not None and relay.off_when.mean_window_s == 120.0
    assert relay.off_when.threshold == 200.0


def test_every_named_field_is_a_quantity() -> None:
    from app.obis import FIELD_NAMES

    for name in FIELD_NAMES:
        assert parse_condition(f"{name} > 1").quantity == name


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2500.0, "export 2500 W > 1500 W for 60 s"),
        (1500.4, "export 1500 W > 1500 W for 60 s"),
        (None, "export n/a > 1500 W for 60 s"),
    ],
)
def test_describe(value: float | None, expected: str) -> None:
    assert parse_condition("export > 1500 W for 60 s").describe(value) == expected


def test_describe_keeps_written_units() -> None:
    assert parse_condition("mean(import, 2 min) > 2.5 kW").describe(3100.0) == (
        "mean(import, 2 min) 3.1 kW > 2.5 kW"
    )
    assert parse_condition("voltage_l1 < 207 V").describe(205.25) == "voltage_l1 205.25 V < 207 V"
    assert parse_condition("export > 1500").describe(1200.0, negated=True) == "export 1200 W not > 1500 W"


@pytest.mark.parametrize(
    ("op", "value", "result"),
    [
        (">", 10.0, False),
        (">", 10.5, True),
        (">=", 10.0, True),
        ("<", 10.0, False),
        ("<=", 10.0, True),
        ("<", 9.0, True),
    ],
)
def test_comparison(op: str, value: float, result: bool) -> None:
    assert Condition("x", "import", op, 10.0).test(value) is result


def test_durations() -> None:
    assert parse_duration_s("30 s") == 30
    assert parse_duration_s("5 min") == 300
    assert parse_duration_s("1 h") == 3600
    assert parse_duration_s("2 hours") == 7200
    assert parse_duration_s("45") == 45
    with pytest.raises(ValueError):
        parse_duration_s("5 fortnights")


def _reading(fields: dict[str, float]) -> Reading:
    t = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
    return Reading(0, "dsmr", "X", "h", t, t, {}, fields)


def test_quantities_in_base_units() -> None:
    q = quantities(
        _reading(
            {
                "actual_total_consumption": 0.25,
                "actual_total_injection": 2.5,
                "actual_l1_consumption": 0.1,
                "actual_l2_injection": 1.2,
                "l3_current": 7.5,
                "l1_voltage": 231.2,
                "current_average_demand": 1.75,
                "total_consumption": 1234.5,
            }
        )
    )
    assert q["import"] == 250.0
    assert q["export"] == 2500.0
    assert q["net"] == -2250.0
    assert q["import_l1"] == 100.0
    assert q["export_l2"] == 1200.0
    assert q["current_l3"] == 7.5
    assert q["voltage_l1"] == 231.2
    assert q["demand"] == 1750.0
    assert q["actual_total_injection"] == 2500.0  # power fields in W like every power quantity
    assert q["total_consumption"] == 1234.5  # energy keeps kWh
    assert "import_l2" not in q and "current_l1" not in q


def test_net_without_export_register() -> None:
    assert quantities(_reading({"actual_total_consumption": 1.0}))["net"] == 1000.0
    assert "net" not in quantities(_reading({}))
