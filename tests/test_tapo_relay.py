"""Tapo relays (`type = tapo`): python-kasa's real SmartDevice over a fake transport answering from python-kasa's
device fixtures' shape (tests/kasa_plugs.py: the same methods and keys, our own values), driven by the relay's
worker thread (NetRelay).

The fake plug keeps state like the real one: set_device_info switches it, set_auto_off_config arms the auto-off,
and the auto-off switches it off `delay_min` minutes (scaled: MINUTE_S seconds here) after it went on; a redundant
ON does not restart that timer (the pessimistic firmware behaviour the driver documents)."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kasa import Credentials
from kasa import DeviceConfig as KasaConfig
from kasa.exceptions import _ConnectionError
from kasa.protocols.smartprotocol import SmartProtocol
from kasa.smart import SmartDevice
from kasa.transports.basetransport import BaseTransport

from app.control.relays.net import NetRelay
from app.control.relays.settings import DeviceConfig
from app.control.relays.tapo import TapoDriver
from tests.kasa_plugs import P100, P110

TIMEOUT_S = 30.0


def _until(what: Callable[[], bool], timeout_s: float = TIMEOUT_S) -> None:
    end = time.monotonic() + timeout_s
    while not what():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


class FakePlug:
    """One plug's state, shared by every transport the driver opens (it reconnects after a failure)."""

    def __init__(self, fixture: dict[str, Any], minute_s: float = 60.0) -> None:
        self.data: dict[str, Any] = copy.deepcopy(fixture)
        self.minute_s = minute_s
        self.requests: list[tuple[str, Any]] = []  # (method, params) of every set_* request, in order
        self.connects: list[float] = []  # monotonic time of each connect (one per attempt after a failure)
        self.down = False  # unreachable: every request fails as a refused connection
        self.on_since: float | None = None
        self.lock = threading.Lock()

    @property
    def is_on(self) -> bool:
        """The plug's output now (its auto-off applied)."""
        with self.lock:
            self._expire()
            return bool(self.data["get_device_info"]["device_on"])

    def press_button(self, on: bool) -> None:
        """Someone switches the plug by hand."""
        with self.lock:
            self._set_on(on)

    def sets(self, method: str) -> list[Any]:
        return [p for m, p in list(self.requests) if m == method]

    def _expire(self) -> None:
        auto = self.data.get("get_auto_off_config")
        info = self.data["get_device_info"]
        if info["device_on"] and auto and auto["enable"] and self.on_since is not None:
            left = auto["delay_min"] * self.minute_s - (time.monotonic() - self.on_since)
            if left <= 0:
                self._set_on(False)
            else:
                info["auto_off_remain_time"] = int(left / self.minute_s * 60)

    def _set_on(self, on: bool) -> None:
        info = self.data["get_device_info"]
        if on and not info["device_on"]:
            self.on_since = time.monotonic()  # auto-off counts from switching on, not from a repeated ON
        if not on:
            self.on_since = None
        info["device_on"] = on
        auto = self.data.get("get_auto_off_config")
        armed = bool(on and auto and auto["enable"])
        if "auto_off_status" in info:
            info["auto_off_status"] = "on" if armed else "off"
            info["auto_off_remain_time"] = auto["delay_min"] * 60 if armed and auto else 0

    def answer(self, method: str, params: Any) -> dict[str, Any]:
        with self.lock:
            self._expire()
            if method == "set_device_info":
                self.requests.append((method, params))
                if "device_on" in params:
                    self._set_on(bool(params["device_on"]))
                return {"method": method, "error_code": 0, "result": {}}
            if method == "set_auto_off_config":
                self.requests.append((method, params))
                if "get_auto_off_config" not in self.data:
                    return {"method": method, "error_code": -1002}
                self.data["get_auto_off_config"] = {"delay_min": params["delay_min"], "enable": params["enable"]}
                return {"method": method, "error_code": 0, "result": {}}
            if method in self.data:
                return {"method": method, "error_code": 0, "result": copy.deepcopy(self.data[method])}
            return {"method": method, "error_code": -1002}  # UNKNOWN_METHOD_ERROR, as the plug answers


class FakeTransport(BaseTransport):
    """SmartProtocol's transport, answering single and multipleRequest queries from the FakePlug."""

    def __init__(self, plug: FakePlug) -> None:
        super().__init__(config=KasaConfig("127.0.0.1", credentials=Credentials("u@example.com", "pw")))
        self.plug = plug

    @property
    def default_port(self) -> int:
        return 80

    @property
    def credentials_hash(self) -> str | None:
        return None

    async def send(self, request: str) -> dict[str, Any]:
        if self.plug.down:
            raise _ConnectionError("Unable to connect to the device: 127.0.0.1: [Errno 111] Connection refused")
        req = json.loads(request)
        if req["method"] == "multipleRequest":
            return {"error_code": 0, "result": {"responses": [self.plug.answer(r["method"], r.get("params"))
                                                              for r in req["params"]["requests"]]}}
        one = self.plug.answer(req["method"], req.get("params"))
        return {"error_code": one["error_code"], "result": one.get("result")}

    async def close(self) -> None:
        pass

    async def reset(self) -> None:
        pass


def _relay(plug: FakePlug, deadman_s: float = 60.0, refresh_s: float = 1.0) -> NetRelay:
    dev = DeviceConfig(kind="tapo", host="127.0.0.1", username="u@example.com", password="pw",
                       deadman=deadman_s, refresh=refresh_s, timeout=2.0)

    async def connect(d: DeviceConfig) -> SmartDevice:
        plug.connects.append(time.monotonic())
        if plug.down:
            raise _ConnectionError(f"Unable to connect to the device: {d.host}")
        config = KasaConfig(d.host, credentials=Credentials(d.username, d.password))
        return SmartDevice(d.host, config=config, protocol=SmartProtocol(transport=FakeTransport(plug)))

    return NetRelay("pump", dev, TapoDriver(dev, connect=connect), log_interval_s=0.0)


def test_on_arms_the_auto_off_and_is_refreshed_off_at_shutdown() -> None:
    plug = FakePlug(P110)
    assert plug.data["get_auto_off_config"] == {"delay_min": 120, "enable": False}  # as the fixture has it
    relay = _relay(plug, deadman_s=150.0, refresh_s=1.0)  # 150 s -> 3 min; re-sent every 50 s
    try:
        relay.want(True)
        _until(lambda: relay.state == "on")
        assert plug.is_on
        # The ON carried the dead-man timer: auto-off armed (both keys in one call), before switching on.
        assert plug.requests[:2] == [("set_auto_off_config", {"enable": True, "delay_min": 3}),
                                     ("set_device_info", {"device_on": True})]
        assert plug.data["get_device_info"]["auto_off_status"] == "on"
    finally:
        assert relay.close(5.0) is True  # OFF confirmed by the plug
    assert not plug.is_on and plug.requests[-1] == ("set_device_info", {"device_on": False})
    assert relay.sent is False


def test_refresh_re_sends_on_and_re_arms_an_auto_off_disabled_in_the_app() -> None:
    plug = FakePlug(P110)
    relay = _relay(plug, deadman_s=3.0, refresh_s=1.0)  # re-sent every second (3 s -> 1 min on the plug)
    try:
        relay.want(True)
        _until(lambda: relay.state == "on")
        n = len(plug.requests)
        with plug.lock:  # the owner switches the auto-off off in the Tapo app
            plug.data["get_auto_off_config"]["enable"] = False
        _until(lambda: relay.refreshes >= 2)
        later = plug.requests[n:]
        assert ("set_auto_off_config", {"enable": True, "delay_min": 1}) in later  # re-armed by a refresh
        assert later.count(("set_device_info", {"device_on": True})) >= 2
        assert plug.data["get_auto_off_config"]["enable"] is True and plug.is_on
        assert relay.mismatches == 0
    finally:
        relay.close(5.0)


def test_button_press_is_a_mismatch_and_the_rules_win() -> None:
    plug = FakePlug(P110)
    relay = _relay(plug, refresh_s=1.0)
    try:
        relay.want(True)
        _until(lambda: relay.state == "on")
        plug.press_button(False)
        _until(lambda: relay.mismatches >= 1)
        _until(lambda: plug.is_on and relay.state == "on")  # switched on again: the commanded state wins
        relay.want(False)
        _until(lambda: not plug.is_on and relay.state == "off")
        plug.press_button(True)
        _until(lambda: relay.mismatches >= 2)
        _until(lambda: not plug.is_on)
    finally:
        relay.close(5.0)


def test_unreachable_is_unknown_retried_with_backoff_then_back(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "app.control")
    plug = FakePlug(P110)
    plug.down = True
    relay = _relay(plug, deadman_s=60.0, refresh_s=4.0)  # backoff 1, 2, 4 s (capped at refresh)
    try:
        relay.want(True)
        _until(lambda: len(plug.connects) >= 4)
        assert relay.state == "unknown" and relay.reachable is False and relay.failures >= 3
        # the first read and the first ON at once, then the ON retried after 1 s, then after 2 s more
        gaps = [b - a for a, b in zip(plug.connects, plug.connects[1:], strict=False)]
        assert gaps[1] >= 0.9 and gaps[2] >= 1.8, gaps  # lower bounds only: a loaded machine only adds
        assert "unreachable" in caplog.text and "pw" not in caplog.text
        plug.down = False
        _until(lambda: relay.state == "on" and plug.is_on)
        assert "reachable again" in caplog.text
    finally:
        relay.close(5.0)


def test_plug_without_auto_off_is_never_switched_on() -> None:
    plug = FakePlug(P100)  # this P100 firmware has no auto_off component: no dead-man timer
    relay = _relay(plug, refresh_s=1.0)
    try:
        relay.want(True)
        _until(lambda: relay.failures >= 1)
        assert "no auto-off on this device" in relay.last_error
        assert ("set_device_info", {"device_on": True}) not in plug.requests and not plug.is_on
        assert relay.state == "unknown"
    finally:
        relay.close(5.0)


def test_the_auto_off_switches_the_plug_off_when_nothing_refreshes_it() -> None:
    plug = FakePlug(P110, minute_s=0.5)  # one plug minute lasts half a second here
    dev = DeviceConfig(kind="tapo", host="127.0.0.1", username="u", password="pw", deadman=60.0)

    async def connect(d: DeviceConfig) -> SmartDevice:
        return SmartDevice(d.host, config=KasaConfig(d.host), protocol=SmartProtocol(transport=FakeTransport(plug)))

    driver = TapoDriver(dev, connect=connect)
    try:
        driver.send(True, 60.0)  # then the Pi dies: nothing more is sent
        assert plug.is_on
        _until(lambda: not plug.is_on, 10.0)
    finally:
        driver.close()


def test_a_button_press_undone_by_a_refresh_before_any_read_back_still_counts() -> None:
    plug = FakePlug(P110)
    relay = _relay(plug, deadman_s=3.0, refresh_s=3600.0)  # ON re-sent every second, read back once an hour
    try:
        relay.want(True)
        _until(lambda: relay.state == "on")
        plug.press_button(False)
        _until(lambda: relay.mismatches == 1 and plug.is_on)
    finally:
        relay.close(5.0)
