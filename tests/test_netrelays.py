"""Network relays (Shelly Gen2+, Tasmota over HTTP and MQTT) against device simulators written from the
vendors' API docs: dead-man timers, read-back, manual toggles, unreachable devices, shutdown."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.config import MqttConfig, RelayConfig, loads, redacted
from app.control.conditions import parse_condition
from app.control.relays import RelayBank
from app.control.relays.http import digest_header, parse_challenge
from app.control.relays.settings import DeviceConfig
from app.control.relays.tasmota import pulse_seconds, pulse_time
from app.errors import ConfigError
from tests.appliance import Appliance, Pty, wait_for
from tests.fixtures_mqtt import Broker
from tests.sim_shelly import REALM, ShellySim
from tests.sim_tasmota import TasmotaSim
from tests.test_faults import _telegrams

PASSWORD = "s3cret-Plug!"


def relay(name: str, device: DeviceConfig) -> RelayConfig:
    """A relay on a network device (rules do not matter here: the bank is driven directly)."""
    return RelayConfig(name=name, pin="", on_when=parse_condition("export > 1500 W"), device=device)


def shelly(sim: ShellySim, **kw: object) -> DeviceConfig:
    base = DeviceConfig(kind="shelly", host=sim.host, username="admin", password=PASSWORD, deadman=3.0,
                        refresh=1.0, timeout=2.0)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture
def shelly_sim() -> Iterator[ShellySim]:
    sim = ShellySim(password=PASSWORD)
    yield sim
    sim.close()


# ---------------------------------------------------------------- config


BASE_INI = """
[relay:boiler]
on_when = export > 1500 W
{keys}
"""


def test_network_relay_keys_parse_and_the_password_stays_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = loads(BASE_INI.format(keys="type = shelly\nhost = plug.lan:8080\nchannel = 1\npassword = hunter22\n"
                                     "deadman = 90 s\nrefresh = 5 s"))
    dev = cfg.relays[0].device
    assert dev == DeviceConfig(kind="shelly", host="plug.lan:8080", channel=1, username="admin",
                               password="hunter22", deadman=90.0, refresh=5.0)
    assert "hunter22" not in repr(cfg.relays[0])
    assert redacted(cfg)["relay:boiler"]["device"]["password"] == "***"
    assert cfg.relays[0].pin == ""
    monkeypatch.setenv("SMARTMETER_RELAY_BOILER_PASSWORD", "from-env")
    cfg = loads(BASE_INI.format(keys="type = tasmota\nhost = 10.0.0.7"))
    assert cfg.relays[0].device is not None and cfg.relays[0].device.password == "from-env"
    assert cfg.relays[0].device.channel == 1  # Tasmota counts relays from 1
    assert loads(BASE_INI.format(keys="pin = GPIO17")).relays[0].device is None  # type = gpio stays the default


@pytest.mark.parametrize(("keys", "message"), [
    ("type = shelly", "[relay:boiler] host = '': missing for type = shelly"),
    ("type = shelly\nhost = http://plug/", "[relay:boiler] host = 'http://plug/': expected a host name"),
    ("type = shelly\nhost = plug\npin = GPIO17", "[relay:boiler] pin = 'GPIO17': a type = shelly relay has no pin"),
    ("type = shelly\nhost = plug\nsafe_state = on", "[relay:boiler] safe_state = 'on': a network relay's safe"),
    ("type = shelly\nhost = plug\ndeadman = 1 s", "[relay:boiler] deadman = '1 s'"),
    ("type = tasmota\nhost = plug\nmqtt_topic = t1", "[relay:boiler] mqtt_topic = 't1': set host (HTTP) or"),
    ("type = tasmota\nmqtt_topic = t1", "[relay:boiler] mqtt_topic = 't1': needs [mqtt] enabled = yes"),
    ("type = tasmota\nhost = plug\nchannel = 0", "[relay:boiler] channel = '0': Tasmota relays count from 1"),
    ("type = tapo\nhost = plug", "[relay:boiler] username = '': type = tapo needs username and password"),
    ("type = zigbee", "[relay:boiler] type = 'zigbee': expected one of gpio, shelly, tasmota, tapo"),
    ("type = shelly\nhost = plug\nmqtt_topic = x", "[relay:boiler] mqtt_topic = 'x': unknown key"),
    ("type = shelly\nhost = plug\npassword = hunter22\nchanel = 1", "[relay:boiler] chanel = '1': unknown key"),
])
def test_network_relay_config_errors_name_the_key(keys: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(BASE_INI.format(keys=keys))
    assert message in str(err.value)
    assert "hunter22" not in str(err.value)


def test_two_network_relays_need_no_gpio_and_no_pins(shelly_sim: ShellySim) -> None:
    bank = RelayBank((relay("a", shelly(shelly_sim)), relay("b", shelly(shelly_sim, channel=0))))
    bank.close()


# ---------------------------------------------------------------- Shelly


def test_shelly_on_carries_toggle_after_and_digest_auth(shelly_sim: ShellySim) -> None:
    bank = RelayBank((relay("boiler", shelly(shelly_sim, deadman=120.0, refresh=60.0)),))
    try:
        bank.set("boiler", True)
        sw = shelly_sim.switches[0]
        assert wait_for(lambda: sw.state(), 10)
        sets = [p for m, p, ok in shelly_sim.requests if m == "Switch.Set" and ok]
        assert sets[-1] == {"id": 0, "on": True, "toggle_after": 120}
        assert shelly_sim.unauthorized >= 1  # the first call met the challenge, the answer was accepted
        with sw.lock:
            assert sw.deadline is not None and 100 < sw.deadline - time.monotonic() <= 120
        assert wait_for(lambda: bank.devices()["boiler"]["state"] == "on", 10)
        bank.set("boiler", False)
        assert wait_for(lambda: not sw.state(), 10)
        assert [p for m, p, ok in shelly_sim.requests if m == "Switch.Set" and ok][-1] == {"id": 0, "on": False}
        with sw.lock:
            assert sw.deadline is None  # OFF needs no timer
    finally:
        bank.close()


def test_shelly_wrong_password_is_a_failure_never_a_hang(shelly_sim: ShellySim,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bank = RelayBank((relay("boiler", shelly(shelly_sim, password="wrong-pw")),))
    try:
        t0 = time.monotonic()
        bank.set("boiler", True)
        assert time.monotonic() - t0 < 0.1  # the post-processor never waits for a device
        assert wait_for(lambda: bank.devices()["boiler"]["failures"] >= 1, 10)
        assert bank.devices()["boiler"]["state"] == "unknown"
        assert "401 unauthorized (wrong username or password)" in caplog.text
        assert not shelly_sim.switches[0].state()
    finally:
        bank.close()
    assert "wrong-pw" not in caplog.text and PASSWORD not in caplog.text


def test_shelly_dead_man_is_refreshed_while_on_and_runs_out_when_the_worker_dies(shelly_sim: ShellySim) -> None:
    bank = RelayBank((relay("boiler", shelly(shelly_sim, deadman=3.0)),))
    sw = shelly_sim.switches[0]
    try:
        bank.set("boiler", True)
        assert wait_for(lambda: sw.state(), 10)
        assert wait_for(lambda: bank._net["boiler"].refreshes >= 3, 20)  # 3 s timer pushed out 3 times
        assert sw.state() and sw.expired == 0  # never ran out while this appliance was alive
        ons = sw.ons
        # the worker thread dies without a word (a hung Pi): nothing is sent any more
        bank._net["boiler"].driver.send = _dead  # type: ignore[method-assign,assignment]
        bank._net["boiler"].driver.read = _dead  # type: ignore[method-assign]
        t0 = time.monotonic()
        assert wait_for(lambda: sw.expired == 1, 15)
        assert time.monotonic() - t0 <= 3.0 + 5.0  # within the dead-man time (plus a loaded machine)
        assert not sw.state() and sw.ons == ons
    finally:
        bank.close()


def _dead(*args: object) -> bool:
    from app.control.relays.net import DeviceError

    raise DeviceError("simulated: no network")


def test_a_button_press_is_seen_on_read_back_and_the_rules_win(shelly_sim: ShellySim,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bank = RelayBank((relay("boiler", shelly(shelly_sim, deadman=120.0, refresh=1.0)),))
    sw = shelly_sim.switches[0]
    try:
        bank.set("boiler", True)
        assert wait_for(lambda: sw.state(), 10)
        sw.press()  # someone switches the boiler off at the plug
        assert not sw.state()
        assert wait_for(lambda: bank.devices()["boiler"]["mismatches"] == 1, 10)
        assert wait_for(lambda: sw.state(), 10)  # switched on again, with its timer
        with sw.lock:
            assert sw.deadline is not None
        assert "relay boiler: the device is off but this appliance switched it on" in caplog.text
    finally:
        bank.close()


def test_an_unreachable_shelly_is_unknown_retried_and_recovers(shelly_sim: ShellySim,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    bank = RelayBank((relay("boiler", shelly(shelly_sim, deadman=3.0, refresh=1.0, timeout=0.5)),))
    sw = shelly_sim.switches[0]
    try:
        bank.set("boiler", True)
        assert wait_for(lambda: sw.state(), 10)
        shelly_sim.stop()  # Wi-Fi gone
        assert wait_for(lambda: bank.devices()["boiler"]["state"] == "unknown", 10)
        assert wait_for(lambda: sw.expired == 1, 15)  # the plug switched itself off: no load left on
        failures = bank.devices()["boiler"]["failures"]
        time.sleep(2.5)
        assert bank.devices()["boiler"]["failures"] - failures <= 10  # backoff: about 2 a second, no busy loop
        shelly_sim.start()  # back
        assert wait_for(lambda: sw.state(), 15)  # the rules still want it on: sent again, with its timer
        assert wait_for(lambda: bank.devices()["boiler"]["state"] == "on", 10)
        assert "unreachable" in caplog.text and "reachable again" in caplog.text
    finally:
        bank.close()


def test_shutdown_sends_off_within_the_budget_or_leaves_it_to_the_timer(shelly_sim: ShellySim) -> None:
    bank = RelayBank((relay("boiler", shelly(shelly_sim, deadman=4.0)),))
    sw = shelly_sim.switches[0]
    bank.set("boiler", True)
    assert wait_for(lambda: sw.state(), 10)
    t0 = time.monotonic()
    bank.close()
    assert time.monotonic() - t0 < 1.5
    assert wait_for(lambda: not sw.state(), 5) and sw.expired == 0  # OFF sent, not the timer

    bank = RelayBank((relay("boiler", shelly(shelly_sim, deadman=4.0, timeout=5.0)),))
    bank.set("boiler", True)
    assert wait_for(lambda: sw.state(), 10)
    shelly_sim.hang_s = 3.0  # the device answers too late for the 2 s shutdown budget
    t0 = time.monotonic()
    bank.close()
    assert time.monotonic() - t0 < 1.5
    assert wait_for(lambda: not sw.state(), 15)  # the late OFF or the dead-man timer: off either way


# ---------------------------------------------------------------- Tasmota


@given(st.floats(min_value=0.1, max_value=64800.0))
def test_pulse_time_encoding_round_trips_to_the_next_step(seconds: float) -> None:
    value = pulse_time(seconds)
    assert 1 <= value <= 64900
    assert abs(pulse_seconds(value) - seconds) <= (0.05 if seconds <= 11.1 else 0.5) + 1e-9


def test_tasmota_http_sets_pulsetime_then_power_and_reads_back() -> None:
    sim = TasmotaSim(password=PASSWORD)
    dev = DeviceConfig(kind="tasmota", host=sim.host, channel=1, username="admin", password=PASSWORD,
                       deadman=3.0, refresh=1.0)
    sw = sim.switches[0]
    bank = RelayBank((relay("pump", dev),))
    try:
        bank.set("pump", True)
        assert wait_for(lambda: sw.state(), 10)
        assert sim.pulse == [30]  # 3 s in Tasmota's tenths
        assert [c for c in sim.commands if c != "Power1"][:2] == ["PulseTime1 30", "Power1 ON"]  # no reads
        assert wait_for(lambda: bank._net["pump"].refreshes >= 2, 15)
        assert sw.expired == 0 and sw.state()
        bank.set("pump", False)
        assert wait_for(lambda: not sw.state(), 10)
    finally:
        bank.close()
    # a long dead-man time, so that no refresh ON can hide the button press from the read-back
    bank = RelayBank((relay("pump", replace(dev, deadman=600.0)),))
    try:
        bank.set("pump", True)
        assert wait_for(lambda: sw.state() and bank.devices()["pump"]["state"] == "on", 10)
        assert sim.pulse == [700]  # 600 s: seconds + 100
        sw.press()
        assert wait_for(lambda: bank.devices()["pump"]["mismatches"] == 1, 10)
        assert wait_for(lambda: sw.state(), 10)
    finally:
        bank.close()
        sim.close()


def test_tasmota_over_mqtt_with_pulsetime_expiring_when_the_appliance_is_gone(mosquitto: Broker) -> None:
    sim = TasmotaSim(topic="tasmota_5A1B2C", broker=(mosquitto.host, mosquitto.port), http=False)
    mqtt = MqttConfig(enabled=True, host=mosquitto.host, port=mosquitto.port)
    dev = DeviceConfig(kind="tasmota", mqtt_topic="tasmota_5A1B2C", channel=1, deadman=600.0, refresh=1.0,
                       timeout=3.0)
    sw = sim.switches[0]
    bank = RelayBank((relay("pump", dev),), mqtt=mqtt)
    try:
        bank.set("pump", True)
        assert wait_for(lambda: sw.state(), 15)
        assert sim.pulse == [700]
        assert wait_for(lambda: bank.devices()["pump"]["state"] == "on", 10)
        sw.press()  # the button: Tasmota publishes stat/.../POWER OFF, the read-back sees it
        assert wait_for(lambda: bank.devices()["pump"]["mismatches"] == 1, 10)
        assert wait_for(lambda: sw.state(), 10)
    finally:
        bank.close()
    assert wait_for(lambda: not sw.state(), 5)  # OFF on shutdown
    bank = RelayBank((relay("pump", replace(dev, deadman=3.0)),), mqtt=mqtt)
    try:
        bank.set("pump", True)
        assert wait_for(lambda: sw.state() and sim.pulse == [30], 15)
        bank._net["pump"].driver.send = _dead  # type: ignore[method-assign,assignment]
        bank._net["pump"].driver.read = _dead  # type: ignore[method-assign]
        assert wait_for(lambda: sw.expired == 1, 15)  # PulseTime ran out on the device
        assert not sw.state()
    finally:
        bank.close()
        sim.close()


# ---------------------------------------------------------------- the whole appliance


APPLIANCE_INI = """
[meter]
source = {source}
protocol = dsmr
[control]
settle = 0 s
stale_after = 120 s
[relay:boiler]
type = shelly
host = {host}
password = {password}
deadman = 3 s
refresh = 1 s
on_when = import >= 0 W
"""


def test_sigkilled_appliance_leaves_the_shelly_off_within_the_dead_man_time(tmp_path: Path,
                                                                         shelly_sim: ShellySim) -> None:
    pty = Pty(tmp_path / "ttyP1")
    ini = tmp_path / "app.ini"
    ini.write_text(APPLIANCE_INI.format(source=pty.link, host=shelly_sim.host, password=PASSWORD))
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen(Appliance.command(ini), stdout=log, stderr=subprocess.STDOUT,
                            env=Appliance.environment(), start_new_session=True)
    sw = shelly_sim.switches[0]
    try:
        assert wait_for(lambda: "reading " in (tmp_path / "app.log").read_text(), 30)
        telegrams = iter(_telegrams(60))

        def fed_and_on() -> bool:
            pty.write(next(telegrams))
            return sw.state()

        assert wait_for(fed_and_on, 30, every_s=0.5), (tmp_path / "app.log").read_text()
        ons = sw.ons
        assert wait_for(lambda: sw.ons >= ons + 3, 20)  # refreshed every second while alive
        assert sw.expired == 0 and sw.state()
        os.killpg(proc.pid, signal.SIGKILL)  # the whole appliance at once: nobody sends OFF
        proc.wait(10)
        t0 = time.monotonic()
        assert wait_for(lambda: not sw.state(), 15), (tmp_path / "app.log").read_text()
        assert sw.expired == 1 and time.monotonic() - t0 < 3.0 + 5.0
        assert sw.history[-1][2] == "timer"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()
        pty.close()
    text = (tmp_path / "app.log").read_text()
    assert "relay boiler -> on" in text
    assert PASSWORD not in text


def test_digest_header_answers_a_shelly_challenge() -> None:
    chal = parse_challenge(f'Digest qop="auth", realm="{REALM}", nonce="abc", algorithm=SHA-256')
    sim = ShellySim(password=PASSWORD)
    try:
        sim.nonces.add("abc")
        good = digest_header(chal, "admin", PASSWORD, "GET", "/rpc/Switch.GetStatus?id=0", 1, "c1")
        assert sim.authorized(good, "GET", "/rpc/Switch.GetStatus?id=0")
        bad = digest_header(chal, "admin", "nope", "GET", "/rpc/Switch.GetStatus?id=0", 1, "c1")
        assert not sim.authorized(bad, "GET", "/rpc/Switch.GetStatus?id=0")
    finally:
        sim.close()


VISIBLE_INI = APPLIANCE_INI + """
[mqtt]
enabled = yes
host = {mqtt_host}
port = {mqtt_port}
discovery = yes
[history]
enabled = no
[web]
enabled = yes
host = 127.0.0.1
port = {web_port}
"""


def test_mismatch_and_unknown_show_on_the_web_api_and_the_mqtt_relay_topics(
        tmp_path: Path, shelly_sim: ShellySim, mosquitto: Broker) -> None:
    """A button press and an unreachable Shelly are visible to the owner, not only in the log."""
    import json
    import urllib.request

    from tests.test_mqtt import Collector
    from tests.test_web_process import free_port

    collector = Collector(mosquitto)
    pty = Pty(tmp_path / "ttyP1")
    web_port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(VISIBLE_INI.format(source=pty.link, host=shelly_sim.host, password=PASSWORD,
                                      mqtt_host=mosquitto.host, mqtt_port=mosquitto.port, web_port=web_port))
    app = Appliance(ini)
    sw = shelly_sim.switches[0]

    def web_device() -> dict[str, object]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/api/relays", timeout=10) as resp:
                relays = json.loads(resp.read())["relays"]
        except OSError:
            return {}
        return next(r for r in relays if r["name"] == "boiler")["device"] or {}

    def mqtt_last(suffix: str) -> str | None:
        got = [m.payload for m in list(collector.msgs) if m.topic.endswith(suffix)]
        return got[-1] if got else None

    def mqtt_device() -> dict[str, object]:
        reason = mqtt_last("/relay/boiler/reason")
        return json.loads(reason).get("device", {}) if reason else {}

    try:
        app.wait_log(r"reading .*ttyP1", 30)
        telegrams = iter(_telegrams(600))

        def fed(check: Callable[[], object]) -> Callable[[], object]:
            def step() -> object:
                pty.write(next(telegrams))
                return check()
            return step

        assert wait_for(fed(lambda: sw.state() and web_device().get("state") == "on"), 60, every_s=0.5), app.log()
        assert web_device()["type"] == "shelly" and web_device()["mismatches"] == 0
        assert wait_for(lambda: mqtt_last("/relay/boiler/device") == "ON", 30)
        sw.set(False, None, "button")  # someone presses the button: the read-back sees it, the rules win
        assert wait_for(fed(lambda: web_device().get("mismatches") == 1), 60, every_s=0.5), app.log()
        assert web_device()["last_mismatch"] is not None
        assert wait_for(lambda: mqtt_device().get("mismatches") == 1, 30), mqtt_last("/relay/boiler/reason")
        assert mqtt_device()["last_mismatch"] is not None
        assert wait_for(lambda: sw.state(), 30)
        shelly_sim.stop()  # unreachable: the state is unknown
        assert wait_for(fed(lambda: web_device().get("state") == "unknown"), 60, every_s=0.5), app.log()
        assert web_device()["reachable"] is False and web_device()["error"]
        assert wait_for(lambda: mqtt_last("/relay/boiler/device") == "UNKNOWN", 30)
        assert mqtt_device()["state"] == "unknown" and PASSWORD not in str(mqtt_device())
        # Home Assistant: the relay's reason sensor carries the reason JSON (device included) as attributes, and
        # a network relay gets a sensor of its own for the device's state
        disc = [m.payload for m in list(collector.msgs) if m.topic.endswith("_reason/config")]
        assert disc and json.loads(disc[-1])["json_attributes_topic"].endswith("/relay/boiler/reason")
        dev = [json.loads(m.payload) for m in list(collector.msgs) if m.topic.endswith("/boiler_device/config")]
        assert dev and dev[-1]["state_topic"].endswith("/relay/boiler/device")
        shelly_sim.start()
        assert wait_for(fed(lambda: web_device().get("state") == "on"), 60, every_s=0.5), app.log()
        assert wait_for(lambda: mqtt_last("/relay/boiler/device") == "ON", 30)
        assert app.stop() == 0
    finally:
        app.kill()
        pty.close()
        collector.close()
    assert PASSWORD not in app.log()


def test_a_button_press_undone_by_a_dead_man_refresh_still_counts_as_a_mismatch(shelly_sim: ShellySim,
                                                                                caplog: pytest.LogCaptureFixture
                                                                                ) -> None:
    """The ON re-sent for the dead-man timer may come before the next read-back: Switch.Set's was_on tells."""
    caplog.set_level(logging.INFO)
    bank = RelayBank((relay("boiler", shelly(shelly_sim, deadman=3.0, refresh=3600.0)),))  # re-sent every 1 s
    sw = shelly_sim.switches[0]
    try:
        bank.set("boiler", True)
        assert wait_for(lambda: sw.state() and bank.devices()["boiler"]["state"] == "on", 10)
        sw.press()
        assert wait_for(lambda: bank.devices()["boiler"]["mismatches"] == 1, 10)
        assert sw.state()
        assert "relay boiler: the device was off but this appliance switched it on" in caplog.text
    finally:
        bank.close()
