"""Every [meter:NAME] meter in the web API: its own status (online / offline / error with the reason),
values and role in GET /api/energy-meters, and /consumption/building summing the grid and building
meters; a real PostProcessor feeds a real uvicorn server over the real live channel."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from app.meters.sample import Sample, to_reading
from app.records import MeterState
from tests.test_web import INI, FakeHistory, Served, reading, wait_until

METERS = INI + """
[meter:pv]
role = solar
location = garage, inverter output
protocol = modbus
source = tcp://127.0.0.1:1
preset = sdm630
offline_after = 1 h
[meter:heatpump]
role = building
location = cellar
protocol = modbus
source = tcp://127.0.0.1:1
preset = sdm120
offline_after = 1 h
"""


@pytest.fixture
def served() -> Iterator[Served]:
    FakeHistory.calls, FakeHistory.fail = [], None
    s = Served(METERS)
    yield s
    s.close()


def _by_id(s: Served) -> dict[str, dict[str, object]]:
    status, body = s.get("/api/energy-meters")
    assert status == 200 and body["success"] is True and body["count"] == len(body["data"])
    return {m["id"]: m for m in body["data"]}


def test_every_meter_is_listed_with_its_own_status_values_role_and_location(served: Served) -> None:
    meters = _by_id(served)
    assert list(meters) == ["grid", "pv", "heatpump"]
    pv = meters["pv"]
    assert (pv["meterType"], pv["location"], pv["protocol"], pv["status"], pv["statusReason"]) == (
        "solar", "garage, inverter output", "modbus", "offline", "no reading yet")
    assert pv["currentPower"] is None and pv["lastUpdate"] is None
    status, body = served.get("/api/energy-meters/pv/reading")
    assert status == 503 and "no reading from meter 'pv' yet" in body["error"]

    now = datetime.now(UTC)
    served.send(MeterState("pv", "online"))
    served.send(to_reading(Sample(power_w=-2150.0, import_kwh=12.5, export_kwh=4321.5, voltage_v=231.2,
                                  current_a=9.3, power_factor=0.98, frequency_hz=50.01),
                           "pv", "solar", "modbus", 1, now))
    served.send(to_reading(Sample(power_w=1800.0, import_kwh=950.25, voltage_v=229.0), "heatpump", "building",
                           "modbus", 1, now))
    served.send(reading(1, import_w=1200.0, export_w=200.0))
    wait_until(lambda: _by_id(served)["pv"]["status"] == "online" and _by_id(served)["heatpump"]["status"] == "online")
    meters = _by_id(served)
    pv = meters["pv"]
    assert (pv["currentPower"], pv["totalEnergy"], pv["voltage"], pv["current"], pv["powerFactor"],
            pv["frequency"], pv["statusReason"]) == (-2.15, 12.5, 231.2, 9.3, 0.98, 50.01, None)
    assert pv["lastUpdate"] == now.isoformat()
    assert set(pv) == set(meters["grid"])  # one shape for every meter
    status, one = served.get("/api/energy-meters/pv")
    assert status == 200 and one == {"success": True, "data": pv}
    status, r = served.get("/api/energy-meters/pv/reading")
    assert status == 200 and r["data"]["totalExport"] == 4321.5 and r["data"]["currentPower"] == -2.15

    # building = grid's net import (1 kW) + the heat pump's (1.8 kW); the PV meter is not counted
    status, b = served.get("/api/energy-meters/consumption/building")
    assert status == 200 and b["data"]["currentPower"] == pytest.approx(2.8) and b["data"]["meterCount"] == 2
    assert b["data"]["totalEnergy"] == pytest.approx(150.5 + 950.25)

    served.send(MeterState("heatpump", "error", "no answer from 127.0.0.1:1 unit 1"))
    wait_until(lambda: _by_id(served)["heatpump"]["status"] == "error")
    assert _by_id(served)["heatpump"]["statusReason"].startswith("no answer from 127.0.0.1:1 unit 1")
    status, missing = served.get("/api/energy-meters/nope")
    assert status == 404 and "grid, pv, heatpump" in missing["error"]
