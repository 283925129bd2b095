"""Tapo/Kasa plugs: python-kasa's own device classes (SmartDevice for P115/P110, IotPlug for KP115) and
Energy modules over fake transports.

python-kasa's device fixtures are not in its wheel, and files taken from its repository are not committed here
(GPL-3.0 data; this workplace keeps fetched data out of the project), so the transports answer from dicts
shaped like its fixtures (python-kasa tests/fixtures/smart/P115(EU)_1.0_1.2.3.json, P110(EU)_1.0_1.0.7.json,
tests/fixtures/iot/KP115(EU)_1.0_1.0.16.json: the same methods, keys and units), with values of our own.
Everything above the transport (request batching, module discovery, the Energy modules' units) is
python-kasa's real code."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from kasa import Credentials, DeviceConfig
from kasa.protocols.smartprotocol import SmartProtocol
from kasa.smart import SmartDevice
from kasa.transports.basetransport import BaseTransport

from app.config import Section
from app.errors import ConfigError
from app.meters import MeterSpec, parse_meter
from app.meters.sample import MeterError
from app.meters.tapo_meter import TapoPoller, TapoSettings
from tests.kasa_plugs import P115


class FakeTransport(BaseTransport):
    """Answers SmartProtocol's requests (single and multipleRequest) from a fixture-shaped dict."""

    def __init__(self, data: dict[str, Any], fail: list[str]) -> None:
        super().__init__(config=DeviceConfig("127.0.0.1", credentials=Credentials("u@example.com", "pw")))
        self.data = data
        self.fail = fail  # "timeout" | "auth": the next send fails so
        self.requests = 0

    @property
    def default_port(self) -> int:
        return 80

    @property
    def credentials_hash(self) -> str | None:
        return None

    def _one(self, method: str) -> dict[str, Any]:
        if method in self.data:
            return {"method": method, "error_code": 0, "result": copy.deepcopy(self.data[method])}
        return {"method": method, "error_code": -1002}  # UNKNOWN_METHOD_ERROR

    async def send(self, request: str) -> dict[str, Any]:
        self.requests += 1
        if self.fail:
            what = self.fail.pop(0)
            if what == "timeout":
                raise TimeoutError("the plug did not answer")
            return {"error_code": -1501}  # the login was refused
        req = json.loads(request)
        if req["method"] == "multipleRequest":
            return {"error_code": 0, "result": {"responses": [self._one(r["method"])
                                                              for r in req["params"]["requests"]]}}
        one = self._one(req["method"])
        return {"error_code": one["error_code"], "result": one.get("result")}

    async def close(self) -> None:
        pass

    async def reset(self) -> None:
        pass


def _poller(data: dict[str, Any], fail: list[str] | None = None) -> tuple[TapoPoller, list[FakeTransport]]:
    made: list[FakeTransport] = []
    pending = fail if fail is not None else []

    async def connect(s: TapoSettings) -> SmartDevice:
        t = FakeTransport(data, pending)
        made.append(t)
        config = DeviceConfig(s.host, credentials=Credentials(s.username, s.password))
        return SmartDevice(s.host, config=config, protocol=SmartProtocol(transport=t))

    spec = MeterSpec(name="dishwasher", role="zone", protocol="tapo", poll_interval=10.0,
                     settings=TapoSettings(host="127.0.0.1", username="u@example.com", password="pw", timeout=2))
    return TapoPoller(spec, connect=connect), made


def test_p115_power_through_python_kasa() -> None:
    poller, made = _poller(P115)
    try:
        s = poller.poll()
        assert s.power_w == pytest.approx(1843.25)  # power_mw
        assert (s.voltage_v, s.current_a) == pytest.approx((231.5, 7.962))
        assert s.import_kwh is None  # a Tapo plug keeps no lifetime counter (day and month only)
        assert poller.dev.model == "P115"
        s2 = poller.poll()  # the device is kept between polls
        assert s2.power_w == pytest.approx(1843.25) and len(made) == 1
    finally:
        poller.close()


def test_plug_without_energy_monitoring_says_so() -> None:
    data = copy.deepcopy(P115)
    data["component_nego"]["component_list"] = [c for c in data["component_nego"]["component_list"]
                                                if c["id"] != "energy_monitoring"]
    data["get_device_info"]["model"] = "P100"
    poller, _ = _poller(data)
    try:
        with pytest.raises(MeterError, match="has no energy monitoring"):
            poller.poll()
    finally:
        poller.close()


def test_timeout_and_refused_login_are_errors_then_it_reconnects() -> None:
    poller, made = _poller(P115, ["timeout", "timeout", "timeout", "timeout", "timeout", "timeout"])
    try:
        with pytest.raises(MeterError, match="plug at 127.0.0.1"):
            poller.poll()
        assert poller.dev is None  # dropped: found again next time
        made[-1].fail.clear()
        assert poller.poll().power_w == pytest.approx(1843.25)
        assert len(made) == 2
    finally:
        poller.close()
    poller, _ = _poller(P115, ["auth"] * 10)
    try:
        with pytest.raises(MeterError, match="refused the login: check username/password"):
            poller.poll()
    finally:
        poller.close()


def test_config(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = parse_meter(Section("meter:plug", {"protocol": "tapo", "host": "192.168.1.80", "username": "a@b.c",
                                             "password": "secret-pw"}), "plug")
    assert spec.role == "zone" and spec.poll_interval == 10.0 and "secret-pw" not in repr(spec)
    monkeypatch.setenv("SMARTMETER_METER_PLUG_PASSWORD", "from-env")
    spec = parse_meter(Section("meter:plug", {"protocol": "tapo", "host": "192.168.1.80", "username": "a@b.c",
                                             "password": "secret-pw"}), "plug")
    assert spec.settings.password == "from-env"
    with pytest.raises(ConfigError, match=r"\[meter:plug\] host: missing"):
        parse_meter(Section("meter:plug", {"protocol": "tapo"}), "plug")
    monkeypatch.delenv("SMARTMETER_METER_PLUG_PASSWORD")
    with pytest.raises(ConfigError, match=r"\[meter:plug\] password: missing"):
        parse_meter(Section("meter:plug", {"protocol": "tapo", "host": "h", "username": "a@b.c"}), "plug")


# --- a P110 on the first energy_monitoring firmware: only get_energy_usage (python-kasa's P110(EU) 1.0.7
# fixture's shape: no get_current_power, no get_emeter_data, energy_monitoring ver_code 1), our own values
P110_V1: dict[str, Any] = copy.deepcopy(P115)
for _c in P110_V1["component_nego"]["component_list"]:
    if _c["id"] == "energy_monitoring":
        _c["ver_code"] = 1
for _gone in ("get_current_power", "get_emeter_data", "get_emeter_vgain_igain", "get_max_power",
              "get_protection_power", "get_electricity_price_config"):
    del P110_V1[_gone]
P110_V1["component_nego"]["component_list"] = [c for c in P110_V1["component_nego"]["component_list"]
                                               if c["id"] != "power_protection"]
P110_V1["get_device_info"] |= {"model": "P110", "fw_ver": "1.0.7 Build 210629 Rel.174901"}
P110_V1["get_energy_usage"] = {"current_power": 905000, "local_time": "2026-01-01 12:00:00", "month_energy": 410,
                               "month_runtime": 900, "today_energy": 55, "today_runtime": 60}


def test_p110_on_the_first_energy_firmware_gives_power_from_the_energy_usage() -> None:
    poller, _ = _poller(P110_V1)
    try:
        s = poller.poll()
        assert poller.dev.model == "P110"
        assert s.power_w == pytest.approx(905.0)  # current_power in mW
        assert s.import_kwh is None and s.voltage_v is None  # no lifetime counter, no V on this firmware
    finally:
        poller.close()


# --- a Kasa KP115 (IOT protocol, emeter module): python-kasa's IotPlug over a fake IOT transport. The dict has
# the shape of python-kasa's KP115(EU) 1.0.16 fixture (system.get_sysinfo, emeter.get_realtime), our own values.
KP115: dict[str, Any] = {
    "system": {"get_sysinfo": {
        "active_mode": "none", "alias": "dishwasher", "dev_name": "Smart Wi-Fi Plug Mini", "deviceId": "0" * 40,
        "err_code": 0, "feature": "TIM:ENE", "hwId": "0" * 32, "hw_ver": "1.0", "icon_hash": "", "latitude_i": 0,
        "led_off": 0, "longitude_i": 0, "mac": "C0:06:C3:00:00:01", "mic_type": "IOT.SMARTPLUGSWITCH",
        "model": "KP115(EU)", "next_action": {"type": -1}, "ntc_state": 0, "obd_src": "tplink", "oemId": "0" * 32,
        "on_time": 3600, "relay_state": 1, "rssi": -52, "status": "new", "sw_ver": "1.0.16 Build 210205 Rel.163735",
        "updating": 0}},
    "emeter": {"get_realtime": {"current_ma": 8123, "err_code": 0, "power_mw": 1870250, "total_wh": 345678,
                                "voltage_mv": 229800}},
}


class FakeIotTransport(BaseTransport):
    """Answers IotProtocol's requests ({module: {method: params}}) from a fixture-shaped dict; a module or
    method the device lacks gets the device's own `module not support` error."""

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(config=DeviceConfig("127.0.0.1"))
        self.data = data
        self.asked: list[str] = []

    @property
    def default_port(self) -> int:
        return 9999

    @property
    def credentials_hash(self) -> str | None:
        return None

    async def send(self, request: str) -> dict[str, Any]:
        req = json.loads(request)
        out: dict[str, Any] = {}
        for module, methods in req.items():
            out[module] = {}
            for method in methods:
                self.asked.append(f"{module}.{method}")
                known = self.data.get(module, {})
                if method in known:
                    out[module][method] = copy.deepcopy(known[method])
                elif module in self.data:
                    out[module][method] = {"err_code": -2, "err_msg": "member not support"}
                else:
                    out[module] = {"err_code": -1, "err_msg": "module not support"}
        return out

    async def close(self) -> None:
        pass

    async def reset(self) -> None:
        pass


def test_kp115_over_the_iot_protocol_gives_power_and_its_lifetime_counter() -> None:
    from kasa.iot import IotPlug
    from kasa.protocols.iotprotocol import IotProtocol

    transports: list[FakeIotTransport] = []

    async def connect(s: TapoSettings) -> IotPlug:
        t = FakeIotTransport(KP115)
        transports.append(t)
        return IotPlug(s.host, config=DeviceConfig(s.host), protocol=IotProtocol(transport=t))

    spec = MeterSpec(name="dishwasher", role="zone", protocol="tapo", poll_interval=10.0,
                     settings=TapoSettings(host="127.0.0.1", timeout=2))
    poller = TapoPoller(spec, connect=connect)
    try:
        s = poller.poll()
        assert poller.dev.model == "KP115"  # python-kasa drops the region
        assert s.power_w == pytest.approx(1870.25)
        assert s.import_kwh == pytest.approx(345.678)  # total_wh: a Kasa plug keeps a lifetime counter
        assert (s.voltage_v, s.current_a) == pytest.approx((229.8, 8.123))
        assert "emeter.get_realtime" in transports[0].asked
        KP115["emeter"]["get_realtime"]["power_mw"] = 12000
        assert poller.poll().power_w == pytest.approx(12.0) and len(transports) == 1  # kept between polls
    finally:
        KP115["emeter"]["get_realtime"]["power_mw"] = 1870250
        poller.close()


def test_a_kasa_plug_without_an_emeter_says_so() -> None:
    from kasa.iot import IotPlug
    from kasa.protocols.iotprotocol import IotProtocol

    hs100 = {"system": {"get_sysinfo": {**KP115["system"]["get_sysinfo"], "model": "HS100(EU)", "feature": "TIM"}}}

    async def connect(s: TapoSettings) -> IotPlug:
        return IotPlug(s.host, config=DeviceConfig(s.host), protocol=IotProtocol(transport=FakeIotTransport(hs100)))

    poller = TapoPoller(MeterSpec(name="p", role="zone", protocol="tapo", settings=TapoSettings(host="127.0.0.1")),
                        connect=connect)
    try:
        with pytest.raises(MeterError, match=r"\(HS100\) has no energy monitoring"):
            poller.poll()
    finally:
        poller.close()
