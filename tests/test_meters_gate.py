"""The plausibility gate in a [meter:NAME] process: an impossible reading from a real Modbus server is
counted, logged rate-limited and never delivered; the meter's own max_power is the limit."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from app.errors import ConfigError
from app.meters.modbus import ModbusPoller
from app.meters.runner import Output
from app.protocols.plausibility import DEFAULT_MAX_POWER_W
from app.records import MeterState, Reading
from tests.test_modbus import ModbusSim, spec_for


def test_an_implausible_modbus_reading_is_counted_logged_and_never_delivered(caplog: pytest.LogCaptureFixture) -> None:
    sim = ModbusSim().start()
    spec = spec_for(f"protocol = modbus\nsource = tcp://127.0.0.1:{sim.port}\npreset = sdm630\nmax_power = 5 kW\n")
    assert spec.max_power == 5000.0
    items: list[Any] = []

    def put(item: Any, _wait: bool) -> bool:
        items.append(item)
        return True

    out = Output(spec, put, log_interval_s=3600.0)
    poller = ModbusPoller(spec)
    try:
        with caplog.at_level(logging.WARNING, logger="app.meters"):
            for power in (1500.0, 7000.0, 7000.0, -6000.0, 2000.0):
                # 1 A on L1 with 1.5 kW in all: a 3-phase meter's total, not refused for V x I
                sim.set(spec.settings.registers, {"power_w": power, "import_kwh": 100.0, "voltage_v": 230.0,
                                                  "current_a": 1.0})
                out.sample(poller.poll())
    finally:
        poller.close()
        sim.stop()
    readings = [i for i in items if isinstance(i, Reading)]
    assert [r.fields["actual_total_consumption"] for r in readings] == [1.5, 2.0]  # the 7 kW and 6 kW never left
    assert out.implausible == 3
    assert [i.state for i in items if isinstance(i, MeterState)] == ["online"]
    lines = [r.getMessage() for r in caplog.records if "implausible" in r.getMessage()]
    assert len(lines) == 1, lines  # rate-limited
    assert "meter pv: implausible reading: actual_total_consumption = 7 kW outside 0..5 kW (max_power)" in lines[0]


def test_a_meter_without_max_power_has_the_gates_default_and_a_bad_one_is_named() -> None:
    spec = spec_for("protocol = modbus\nsource = tcp://127.0.0.1:1\npreset = sdm630\n")
    assert spec.max_power is None  # main gives it [meter] max_power
    out = Output(spec, lambda _i, _w: True)
    assert out.gate.max_power_w == DEFAULT_MAX_POWER_W
    with pytest.raises(ConfigError, match=r"\[meter:pv\] max_power"):
        spec_for("protocol = modbus\nsource = tcp://127.0.0.1:1\npreset = sdm630\nmax_power = lots\n")
