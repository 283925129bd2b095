"""MQTT meters: presets and the message mapping (pure, hypothesis), and a meter fed through the real Mosquitto."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from app.config import Section, loads
from app.errors import ConfigError
from app.meters import MeterSpec, parse_meter
from app.meters.mqtt_meter import Mapper, Topic, run
from app.meters.payloads import PayloadError
from app.meters.sample import Sample
from tests.fixtures_mqtt import Broker


def _spec(items: dict[str, str], name: str = "pv") -> MeterSpec:
    return parse_meter(Section(f"meter:{name}", {"protocol": "mqtt", **items}), name)


def test_shelly_gen1_preset_topics_and_units() -> None:
    spec = _spec({"preset": "shelly_gen1", "device": "shellyem-C45BBE6B1234", "channel": "1"})
    assert spec.poll_interval is None and spec.offline_after == 30.0
    topics = {t.topic: t for t in spec.settings.topics}
    assert topics["shellies/shellyem-C45BBE6B1234/emeter/1/power"] == Topic(
        "shellies/shellyem-C45BBE6B1234/emeter/1/power", "power_w", "W")
    assert topics["shellies/shellyem-C45BBE6B1234/online"].quantity == "status"
    m = Mapper(spec.settings)
    assert m.feed("shellies/shellyem-C45BBE6B1234/emeter/1/total", b"1234567.8") is None  # Wh, no power yet
    s = m.feed("shellies/shellyem-C45BBE6B1234/emeter/1/power", b"-812.35")
    assert isinstance(s, Sample) and s.power_w == -812.35 and s.import_kwh == pytest.approx(1234.5678)
    assert m.feed("shellies/shellyem-C45BBE6B1234/online", b"false") is False


def test_shelly_gen2_json() -> None:
    m = Mapper(_spec({"preset": "shelly_gen2", "device": "shellypro3em-a0b1c2"}).settings)
    assert m.feed("shellypro3em-a0b1c2/status/emdata:0", json.dumps({"id": 0, "total_act": 5000.0,
                                                                      "total_act_ret": 250.0}).encode()) is None
    s = m.feed("shellypro3em-a0b1c2/status/em:0", json.dumps({"id": 0, "a_voltage": 231.0, "total_current": 5.5,
                                                               "total_act_power": 1200.5}).encode())
    assert s == Sample(power_w=1200.5, import_kwh=5.0, export_kwh=0.25, voltage_v=231.0, current_a=5.5)


def test_home_assistant_statestream_with_unit_topic() -> None:
    spec = _spec({"preset": "home_assistant", "entity_power": "sensor.pv_power", "entity_energy": "sensor.pv_total"})
    m = Mapper(spec.settings)
    assert m.feed("homeassistant/sensor/pv_power/unit_of_measurement", b'"kW"') is None
    s = m.feed("homeassistant/sensor/pv_power/state", b"1.25")
    assert isinstance(s, Sample) and s.power_w == 1250.0


def test_wago_topics_json_plain_and_power_unit() -> None:
    m = Mapper(_spec({"topic_power": "site/pv/power", "topic_voltage": "site/pv/voltage", "power_unit": "kW",
                      "topic_status": "site/pv/status"}).settings)
    s = m.feed("site/pv/power", json.dumps({"power_kw": 25.5, "voltage": 230.2}).encode())
    assert s == Sample(power_w=25500.0, voltage_v=230.2)
    assert m.feed("site/pv/voltage", b"229.9") is None
    assert m.feed("site/pv/power", b"2.5") == Sample(power_w=2500.0, voltage_v=229.9)
    assert m.feed("site/pv/status", b"offline") is False and m.feed("site/pv/status", b"online") is True
    assert m.feed("other/topic", b"1") is None
    with pytest.raises(PayloadError):
        m.feed("site/pv/power", b"banana")


def test_energy_only_meter_reads_on_every_message() -> None:
    m = Mapper(_spec({"topic_energy": "x/energy"}).settings)
    assert m.feed("x/energy", b"12.5") == Sample(import_kwh=12.5)


def test_config_errors_and_broker_from_mqtt_section() -> None:
    with pytest.raises(ConfigError, match=r"\[meter:pv\] topic_power: missing"):
        _spec({})
    with pytest.raises(ConfigError, match=r"\[meter:pv\] topic_power = 'a/#'"):
        _spec({"topic_power": "a/#"})
    with pytest.raises(ConfigError, match=r"\[meter:pv\] device: missing"):
        _spec({"preset": "shelly_gen1"})
    with pytest.raises(ConfigError, match=r"\[meter:pv\] entity_power = 'pv_power'"):
        _spec({"preset": "home_assistant", "entity_power": "pv_power"})
    cfg = loads("""
[meter]
source = /dev/null
[mqtt]
host = broker.lan
port = 1884
username = u
password = p4ss
[meter:pv]
protocol = mqtt
role = solar
topic_power = pv/power
[meter:plug]
protocol = mqtt
topic_power = plug/power
host = other.lan
""")
    pv, plug = cfg.meters
    assert (pv.settings.host, pv.settings.port, pv.settings.username, pv.settings.password) == (
        "broker.lan", 1884, "u", "p4ss")
    assert (plug.settings.host, plug.settings.port, plug.settings.username) == ("other.lan", 1883, "")
    assert "p4ss" not in repr(pv)


mqtt_topics = st.sampled_from(["site/pv/power", "site/pv/voltage", "site/pv/status", "x"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(mqtt_topics, st.binary(max_size=80) | st.sampled_from(
    [b"1", b"2.5", b'{"power": 1}', b'{"power_kw": "x"}', b"nan", b"inf", b"1e400", b"[]", b'{"unit": "kW"}']))))
def test_mapper_raises_only_payload_errors(messages: list[tuple[str, bytes]]) -> None:
    m = Mapper(_spec({"topic_power": "site/pv/power", "topic_voltage": "site/pv/voltage",
                      "topic_status": "site/pv/status"}).settings)
    for topic, payload in messages:
        try:
            out = m.feed(topic, payload)
        except PayloadError:
            continue
        if isinstance(out, Sample):
            assert all(v is None or v == v for v in (out.power_w, out.voltage_v))


# --- through the real Mosquitto -------------------------------------------------------------------------------


class _Out:
    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.errors: list[str] = []

    def sample(self, s: Sample) -> None:
        self.samples.append(s)

    def error(self, reason: str) -> None:
        self.errors.append(reason)


def _wait(cond: Any, timeout: float = 15.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_meter_through_mosquitto(mosquitto: Broker) -> None:
    cfg = loads(f"""
[meter]
source = /dev/null
[mqtt]
host = {mosquitto.host}
port = {mosquitto.port}
[meter:em]
protocol = mqtt
preset = shelly_gen1
device = shellyem-1
""")
    spec = cfg.meters[0]
    out = _Out()
    stopping = threading.Event()
    t = threading.Thread(target=run, args=(spec, out, stopping.is_set), daemon=True)
    t.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    try:
        base = "shellies/shellyem-1/emeter/0"

        def publish_until(topic: str, payload: bytes, cond: Any) -> bool:
            # the meter subscribes after its CONNACK: publish again until it has seen it
            end = time.monotonic() + 15
            while time.monotonic() < end:
                pub.publish(topic, payload, qos=1).wait_for_publish(5)
                if _wait(cond, 0.5):
                    return True
            return False

        pub.publish(f"{base}/total", b"2000000", qos=1, retain=True).wait_for_publish(5)
        assert publish_until(f"{base}/power", b"1500.5", lambda: out.samples)
        assert out.samples[-1].power_w == 1500.5 and out.samples[-1].import_kwh == 2000.0
        n = len(out.samples)
        pub.publish(f"{base}/power", b"\xff\xfe garbage", qos=1).wait_for_publish(5)
        pub.publish(f"{base}/power", b"-300", qos=1).wait_for_publish(5)
        assert _wait(lambda: len(out.samples) > n)
        assert out.samples[-1].power_w == -300.0  # the garbage was counted and skipped, the meter went on
        pub.publish("shellies/shellyem-1/online", b"false", qos=1).wait_for_publish(5)
        assert _wait(lambda: any("reports offline" in e for e in out.errors))
        pub.loop_stop()
        pub.disconnect()
        mosquitto.stop()
        assert _wait(lambda: any("lost the broker" in e for e in out.errors))
        mosquitto.start()
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        n = len(out.samples)
        assert publish_until(f"{base}/power", b"42", lambda: len(out.samples) > n)  # reconnected, resubscribed
        assert t.is_alive()
    finally:
        stopping.set()
        t.join(timeout=10)
        pub.loop_stop()
        pub.disconnect()
    assert not t.is_alive()
