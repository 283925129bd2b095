"""MQTT sink and translator against a real Mosquitto (fixture `mosquitto`, loopback ephemeral port)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from app.config import MqttConfig, TranslateConfig
from app.records import ReaderStatus, Reading
from app.sinks.mqtt import MqttSink
from app.sinks.mqtt_topics import (
    TOPICS,
    Topics,
    is_harmonized,
    lookup_key,
    number,
    parse_command,
    parse_key_map,
    reading_messages,
    sanitize,
    tasmota_time,
    translate_datacollector,
    translate_tasmota,
)
from tests.fixtures_mqtt import Broker

if TYPE_CHECKING:
    from gpiozero.pins.mock import MockFactory

    from app.pipeline import PostProcessor

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dsmr"
TZ = ZoneInfo("Europe/Brussels")
FLUVIUS = "fluvius_be_p1v50217_1.txt"
STREAM = "iskra_am550-stream_dsmr5.0_1.txt"
METER = "1SAG3100721326"  # 0-0:96.1.1 of the Fluvius capture, decoded
WAIT_S = 5.0

pytestmark = pytest.mark.timeout(60)


# ---------------------------------------------------------------- helpers


@dataclass(frozen=True)
class Msg:
    """One received publication."""

    topic: str
    payload: str
    retain: bool
    qos: int

    def json(self) -> Any:
        """Payload parsed as JSON."""
        return json.loads(self.payload)


class Collector:
    """A plain paho client that records everything on a topic filter."""

    def __init__(self, broker: Broker, topic: str = "#") -> None:
        self.msgs: list[Msg] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(callback_api_version=CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        assert self._subscribed.wait(WAIT_S), "collector could not subscribe"

    def _on_message(self, client: paho.Client, userdata: object, m: paho.MQTTMessage) -> None:
        with self._cond:
            self.msgs.append(Msg(m.topic, m.payload.decode(), bool(m.retain), m.qos))
            self._cond.notify_all()

    def wait_for(
        self, topic: str, pred: Callable[[Msg], bool] = lambda m: True, timeout: float = WAIT_S
    ) -> Msg:
        """The first message on `topic` that satisfies `pred` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.msgs:
                    if m.topic == topic and pred(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = sorted({m.topic for m in self.msgs})
                    raise AssertionError(f"nothing on {topic} within {timeout} s; seen: {seen}")
                self._cond.wait(left)

    def on(self, topic: str) -> list[Msg]:
        """All messages received on `topic`."""
        with self._cond:
            return [m for m in self.msgs if m.topic == topic]

    def under(self, prefix: str) -> list[Msg]:
        """All messages whose topic starts with `prefix`."""
        with self._cond:
            return [m for m in self.msgs if m.topic.startswith(prefix)]

    def publish(self, topic: str, payload: str, retain: bool = False) -> None:
        """Publish and wait until it has left."""
        self.client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(WAIT_S)

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector(mosquitto: Broker) -> Iterator[Collector]:
    """A subscriber on '#'."""
    c = Collector(mosquitto)
    yield c
    c.close()


def mqtt_cfg(broker: Broker, **kw: Any) -> MqttConfig:
    """[mqtt] pointing at the test broker, fast reconnects, every reading published unless told."""
    return replace(MqttConfig(enabled=True, host=broker.host, port=broker.port, keepalive=5.0,
                              reconnect_max=1.0, publish_interval=0.0), **kw)


def post_processor(broker: Broker, interval: str | None = None,
                   relay_extra: str = "") -> tuple[PostProcessor, MockFactory]:
    """A PostProcessor with MQTT on the test broker and relay `boiler` on a mock GPIO17; `interval` sets
    [control] override_min_interval. Returns (post-processor, MockFactory)."""
    from gpiozero.pins.mock import MockFactory

    from app.config import loads
    from app.pipeline import PostProcessor

    control = f"[control]\noverride_min_interval = {interval}\n" if interval is not None else ""
    cfg = loads(f"""{control}
[mqtt]
enabled = yes
host = {broker.host}
port = {broker.port}
reconnect_max = 1 s
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W for 60 s
{relay_extra}
""")
    factory = MockFactory()
    return PostProcessor(cfg, pin_factory=factory), factory


def parse(name: str, received: datetime | None = None) -> Reading:
    """One fixture telegram through the lead's parser."""
    from app.protocols.dsmr import parse_telegram

    return parse_telegram((FIXTURES / name).read_bytes(), received or datetime.now(UTC), TZ)


def replay(name: str) -> list[Reading]:
    """All complete telegrams of a raw capture, framed and parsed like the reader does."""
    from app.framing.dsmr import DsmrFramer
    from app.protocols.dsmr import parse_telegram

    framer = DsmrFramer()
    frames = framer.feed((FIXTURES / name).read_bytes()) + framer.flush()
    return [
        parse_telegram(f.data, datetime.now(UTC), TZ, seq=i, crc_ok=f.crc_ok)
        for i, f in enumerate(fr for fr in frames if fr.ok)
    ]


def wait_until(cond: Callable[[], bool], timeout: float = WAIT_S) -> None:
    """Poll `cond` until true."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    """Sinks created by a test, closed afterwards."""
    made: list[MqttSink] = []
    yield made
    for s in made:
        s.close()


def connected_sink(sinks: list[MqttSink], cfg: MqttConfig, reading: Reading, relays: list[str] | None = None,
                   on_command: Callable[[str, str], None] | None = None, **kw: Any) -> MqttSink:
    """A sink that has received one reading and is connected."""
    sink = MqttSink(cfg, TranslateConfig(), relays or [], on_command, "9.9.9-test", **kw)
    sinks.append(sink)
    sink.write(reading, {})
    wait_until(lambda: sink.connected)
    return sink


# ---------------------------------------------------------------- values


def test_topics_and_payloads_of_a_fluvius_capture(mosquitto: Broker, collector: Collector,
                                                  sinks: list[MqttSink]) -> None:
    reading = parse(FLUVIUS)
    sink = connected_sink(sinks, mqtt_cfg(mosquitto), reading)
    sink.write(reading, {})
    base = f"smartmeter/{METER}"
    meter_ts = int(datetime(2023, 11, 2, 12, 15, 48, tzinfo=TZ).timestamp())
    expected = {
        "power/power_in": 338, "power/power_out": 0,
        "power/power_in_l1": 47, "power/power_in_l2": 179, "power/power_in_l3": 111,
        "power/power_out_l1": 0, "power/power_out_l2": 0, "power/power_out_l3": 0,
        "energy/energy_in": 571.562, "energy/energy_in_t1": 301.548, "energy/energy_in_t2": 270.014,
        "energy/energy_out": 0.005, "energy/energy_out_t1": 0.005, "energy/energy_out_t2": 0,
        "voltage/l1": 232.9, "voltage/l2": 228.1, "voltage/l3": 228.1,
        "current/l1": 0.27, "current/l2": 0.88, "current/l3": 0.52,
        "demand/current_average": 52, "demand/maximum_month": 3064,
    }
    for path, value in expected.items():
        msg = collector.wait_for(f"{base}/{path}")
        assert msg.json() == {"timestamp": meter_ts, "value": value}, path
        assert not msg.retain and msg.qos == 0
    gas = collector.wait_for(f"{base}/gas/volume").json()
    assert gas == {"timestamp": int(datetime(2023, 11, 2, 12, 10, 2, tzinfo=TZ).timestamp()), "value": 92.287}
    assert collector.wait_for(f"{base}/water/volume").json()["value"] == 8.579
    values = {m.topic for m in collector.under(base + "/") if m.topic.count("/") == 3}
    assert values == {f"{base}/{p}" for p in [*expected, "gas/volume", "water/volume"]}, "only what the meter sends"


def test_replayed_stream_publishes_every_telegram_in_order(mosquitto: Broker, collector: Collector,
                                                           sinks: list[MqttSink]) -> None:
    readings = replay(STREAM)
    assert len(readings) >= 4
    sink = connected_sink(sinks, mqtt_cfg(mosquitto, retain=True, qos=1), readings[0])
    topic = f"smartmeter/{sanitize(readings[0].meter_id)}/power/power_in"
    wait_until(lambda: len(collector.on(topic)) >= 1)  # the reading held until CONNACK, published once
    before = len(collector.on(topic))
    for r in readings:
        sink.write(r, {})
    wait_until(lambda: len(collector.on(topic)) >= before + len(readings))
    got = collector.on(topic)[before:]
    assert [m.json()["value"] for m in got] == [
        number(r.fields["actual_total_consumption"] * 1000) for r in readings
    ]
    assert [m.json()["timestamp"] for m in got] == [int(r.time.timestamp()) for r in readings]
    late = Collector(mosquitto, topic)  # retain = yes: a late subscriber gets the last value
    try:
        last = late.wait_for(topic, lambda m: m.retain).json()
        assert last["timestamp"] == int(readings[-1].time.timestamp())
    finally:
        late.close()


def test_publish_interval_sends_the_latest_reading_at_most_once_per_interval(
    mosquitto: Broker, collector: Collector, sinks: list[MqttSink]
) -> None:
    now = [1000.0]
    first = parse(FLUVIUS)
    sink = connected_sink(sinks, mqtt_cfg(mosquitto, publish_interval=10.0), first, clock=lambda: now[0])
    topic = f"smartmeter/{METER}/power/power_in"
    base_fields = dict(first.fields)
    for i, w in enumerate((100, 200, 300)):
        now[0] += 1.0
        sink.write(replace(first, seq=i, fields=base_fields | {"actual_total_consumption": w / 1000}), {})
    sink.tick(now[0])
    time.sleep(0.3)
    # the first reading (338 W, at 1000 s) may or may not have beaten the connection; the next three wait
    assert [m.json()["value"] for m in collector.on(topic)] in ([], [338])
    now[0] = 1011.0
    sink.tick(now[0])
    assert collector.wait_for(topic, lambda m: m.json()["value"] != 338).json()["value"] == 300  # the latest
    sink.tick(now[0] + 1)
    time.sleep(0.3)
    assert [m.json()["value"] for m in collector.on(topic)][-1:] == [300]
    assert len([m for m in collector.on(topic) if m.json()["value"] != 338]) == 1


# ---------------------------------------------------------------- status, info, discovery


def test_status_online_and_info_are_retained(mosquitto: Broker, sinks: list[MqttSink]) -> None:
    reading = parse(FLUVIUS)
    now = [100.0]
    sink = connected_sink(sinks, mqtt_cfg(mosquitto), reading, ["boiler"], clock=lambda: now[0])
    sink.status(ReaderStatus(frames_ok=41, protocol="dsmr", header=reading.header))
    sink.status(ReaderStatus(frames_ok=42, crc_errors=2, dropped=1, lag_mean_s=0.4, lag_max_s=1.2,
                             protocol="dsmr", header=reading.header))
    time.sleep(0.2)
    assert sink.published_info == 1  # at connect; the counters wait for the 10 s interval
    now[0] += 10.0
    sink.tick(now[0])
    late = Collector(mosquitto)  # subscribes after the fact: only retained messages
    try:
        assert late.wait_for(f"smartmeter/{METER}/status").payload == "online"
        info = late.wait_for(f"smartmeter/{METER}/info", lambda m: "telegrams_ok" in m.json()).json()
    finally:
        late.close()
    assert info["version"] == "9.9.9-test"
    assert info["protocol"] == "dsmr" and info["header"] == "FLU5\\253769484_A"
    assert (info["telegrams_ok"], info["crc_errors"], info["dropped"], info["lag_max_s"]) == (42, 2, 1, 1.2)


def test_a_new_meter_id_moves_status_and_will(mosquitto: Broker, collector: Collector,
                                             sinks: list[MqttSink]) -> None:
    first = parse(FLUVIUS)
    sink = connected_sink(sinks, mqtt_cfg(mosquitto), first, ["boiler"])
    collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "online")
    other = replace(first, meter_id="E0099/2+#")
    sink.write(other, {"boiler": False})
    collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "offline")
    collector.wait_for("smartmeter/E0099_2/status", lambda m: m.payload == "online")
    collector.wait_for("smartmeter/E0099_2/relay/boiler/state")
    wait_until(lambda: sink.connected)
    sink.write(other, {"boiler": False})
    assert collector.wait_for("smartmeter/E0099_2/power/power_in").json()["value"] == 338


def test_close_publishes_offline(mosquitto: Broker, collector: Collector, sinks: list[MqttSink]) -> None:
    sink = connected_sink(sinks, mqtt_cfg(mosquitto), parse(FLUVIUS))
    collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "online")
    t0 = time.monotonic()
    sink.close()
    sink.close()
    assert time.monotonic() - t0 < 1.5
    collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "offline")


HA_SENSOR_KEYS = {"name", "unique_id", "state_topic", "device_class", "state_class", "unit_of_measurement",
                  "value_template", "device", "availability", "availability_mode", "expire_after"}
HA_DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version"}
HA_AVAILABILITY = {"availability_topic", "payload_available", "payload_not_available"}
# Home Assistant's documented keys for MQTT sensor / switch / button / select discovery (the subset we may use).
HA_ALLOWED = {
    "sensor": HA_SENSOR_KEYS | HA_AVAILABILITY | {"json_attributes_topic", "icon"},
    "select": {"name", "unique_id", "state_topic", "command_topic", "options", "optimistic", "icon", "device"}
    | HA_AVAILABILITY,
    "switch": {"name", "unique_id", "state_topic", "command_topic", "payload_on", "payload_off",
               "state_on", "state_off", "optimistic", "device", "availability_topic", "payload_available",
               "payload_not_available"},
    "button": {"name", "unique_id", "command_topic", "payload_press", "device",
               "availability_topic", "payload_available", "payload_not_available"},
}
HA_DEVICE_CLASSES = {"power": {"W", "kW"}, "energy": {"Wh", "kWh"}, "voltage": {"V"}, "current": {"A"},
                     "gas": {"m³"}, "water": {"m³"}}


def test_home_assistant_discovery(mosquitto: Broker, collector: Collector, sinks: list[MqttSink]) -> None:
    reading = parse(FLUVIUS)
    connected_sink(sinks, mqtt_cfg(mosquitto), reading, ["boiler"]).write(reading, {})
    node = f"smartmeter_{METER}"
    collector.wait_for(f"homeassistant/button/{node}/boiler_auto/config")
    wait_until(lambda: len(collector.under("homeassistant/sensor/")) == 24 + 1)  # + the relay's reason
    configs = {m.topic: m for m in collector.under("homeassistant/")}
    late = Collector(mosquitto, "homeassistant/#")  # a Home Assistant started later still finds them
    try:
        wait_until(lambda: len(late.msgs) == len(configs))
        assert all(m.retain for m in late.msgs)
    finally:
        late.close()
    unique_ids = set()
    for topic, m in configs.items():
        component = topic.split("/")[1]
        cfg = m.json()
        assert set(cfg) <= HA_ALLOWED[component], (topic, set(cfg) - HA_ALLOWED[component])
        assert set(cfg["device"]) >= HA_DEVICE_KEYS and cfg["device"]["identifiers"] == [node]
        assert cfg["device"]["manufacturer"] == "Fluvius" and cfg["device"]["sw_version"] == "9.9.9-test"
        unique_ids.add(cfg["unique_id"])
        if component != "sensor" or topic.endswith("_reason/config"):  # relay entities: the appliance is up
            assert cfg["availability_topic"] == f"smartmeter/{METER}/status"
            assert "availability" not in cfg  # HA refuses both forms at once
            continue
        # values: available while the appliance is online *and* the data is fresh
        assert "availability_topic" not in cfg and cfg["availability_mode"] == "all"
        assert [a["topic"] for a in cfg["availability"]] == [f"smartmeter/{METER}/status",
                                                              f"smartmeter/{METER}/availability"]
        assert cfg["expire_after"] == 30  # stale_after 30 s + publish_interval 0
        if component == "sensor":
            assert set(cfg) >= HA_SENSOR_KEYS, topic
            assert cfg["unit_of_measurement"] in HA_DEVICE_CLASSES[cfg["device_class"]], topic
            assert cfg["state_class"] in {"measurement", "total_increasing"}
            assert cfg["value_template"] == "{{ value_json.value }}"
            collector.wait_for(cfg["state_topic"])  # every sensor has a live topic
    assert len(unique_ids) == len(configs)
    energy_in = configs[f"homeassistant/sensor/{node}/energy_in/config"].json()
    energy_out = configs[f"homeassistant/sensor/{node}/energy_out/config"].json()
    for e in (energy_in, energy_out):  # what the Energy dashboard needs
        ha = (e["device_class"], e["state_class"], e["unit_of_measurement"])
        assert ha == ("energy", "total_increasing", "kWh")
    gas = configs[f"homeassistant/sensor/{node}/gas_volume/config"].json()
    ha_gas = (gas["device_class"], gas["state_class"], gas["unit_of_measurement"])
    assert ha_gas == ("gas", "total_increasing", "m³")
    switch = configs[f"homeassistant/switch/{node}/boiler/config"].json()
    assert switch["command_topic"] == f"smartmeter/{METER}/relay/boiler/set"
    assert switch["state_topic"] == f"smartmeter/{METER}/relay/boiler/state"
    assert (switch["payload_on"], switch["payload_off"]) == ("ON", "OFF")
    button = configs[f"homeassistant/button/{node}/boiler_auto/config"].json()
    assert button["payload_press"] == "AUTO" and button["command_topic"] == switch["command_topic"]


def test_discovery_can_be_switched_off(mosquitto: Broker, collector: Collector,
                                       sinks: list[MqttSink]) -> None:
    connected_sink(sinks, mqtt_cfg(mosquitto, discovery=False), parse(FLUVIUS), ["boiler"])
    collector.wait_for(f"smartmeter/{METER}/status")
    time.sleep(0.3)
    assert collector.under("homeassistant/") == []


# ---------------------------------------------------------------- relays: set -> pin -> state


class MockRelayController:
    """Stands in for the relay controller: override kept until AUTO, drives a gpiozero mock pin."""

    def __init__(self, sink_ref: list[MqttSink]) -> None:
        from gpiozero.pins.mock import MockFactory

        from app.config import RelayConfig
        from app.control.relays import RelayBank

        self.factory = MockFactory()
        self.bank = RelayBank((RelayConfig(name="boiler", pin="GPIO17"),), pin_factory=self.factory)
        self.pin = self.factory.pin(17)
        self.auto_state = False
        self.override: str | None = None
        self.sink_ref = sink_ref
        self.calls: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def on_command(self, name: str, mode: str) -> None:
        """What the post-processor hands to the sink: apply, then report the new states."""
        with self.lock:
            self.calls.append((name, mode))
            self.override = None if mode == "AUTO" else mode
            state = self.auto_state if self.override is None else self.override == "ON"
            self.bank.set(name, state)
            states = self.bank.states
        self.sink_ref[0].relay_event(states, datetime.now(UTC), f"override {mode}")


def test_set_commands_drive_a_mock_pin_and_state_follows(mosquitto: Broker, collector: Collector,
                                                         sinks: list[MqttSink]) -> None:
    ref: list[MqttSink] = []
    ctl = MockRelayController(ref)
    ref.append(MqttSink(mqtt_cfg(mosquitto), TranslateConfig(), ["boiler"], ctl.on_command, "t"))
    sink = ref[0]
    sinks.append(sink)
    sink.write(parse(FLUVIUS), ctl.bank.states)
    wait_until(lambda: sink.connected)
    state, set_topic = f"smartmeter/{METER}/relay/boiler/state", f"smartmeter/{METER}/relay/boiler/set"
    first = collector.wait_for(state)
    assert first.payload == "OFF"
    collector.publish(set_topic, "on")
    collector.wait_for(state, lambda m: m.payload == "ON")
    assert ctl.pin.state == 1
    collector.publish(set_topic, "OFF")
    wait_until(lambda: collector.on(state)[-1].payload == "OFF")
    assert ctl.pin.state == 0
    ctl.auto_state = True
    collector.publish(set_topic, " Auto\n")
    wait_until(lambda: collector.on(state)[-1].payload == "ON")
    assert ctl.pin.state == 1
    assert ctl.calls == [("boiler", "ON"), ("boiler", "OFF"), ("boiler", "AUTO")]
    # unknown relay and bad payload are ignored
    collector.publish(f"smartmeter/{METER}/relay/pump/set", "ON")
    collector.publish(set_topic, "TOGGLE")
    wait_until(lambda: sink.rejected_commands == 2)
    assert len(ctl.calls) == 3 and ctl.pin.state == 1
    late = Collector(mosquitto, state)  # the state is retained
    try:
        assert late.wait_for(state, lambda m: m.retain).payload == "ON"
    finally:
        late.close()
    ctl.bank.close()


def test_a_retained_command_is_not_replayed_at_start(mosquitto: Broker, collector: Collector,
                                                    sinks: list[MqttSink]) -> None:
    calls: list[tuple[str, str]] = []
    collector.publish(f"smartmeter/{METER}/relay/boiler/set", "ON", retain=True)  # someone's mistake
    sink = connected_sink(sinks, mqtt_cfg(mosquitto), parse(FLUVIUS), ["boiler"],
                          on_command=lambda n, m: calls.append((n, m)))
    wait_until(lambda: sink.rejected_commands == 1)
    assert calls == []


def test_set_through_the_relay_controller_if_present(mosquitto: Broker, collector: Collector,
                                                     sinks: list[MqttSink]) -> None:
    controller_mod = pytest.importorskip("app.control.controller")
    from gpiozero.pins.mock import MockFactory

    from app.config import ControlConfig, RelayConfig
    from app.control.conditions import parse_condition

    factory = MockFactory()
    relay = RelayConfig(name="boiler", pin="GPIO22", on_when=parse_condition("export > 1500 W for 60 s"))
    ctl = controller_mod.Controller(ControlConfig(override_min_interval=0.0), (relay,), factory)
    ctl.start()
    ref: list[MqttSink] = []

    def on_command(name: str, mode: str) -> None:
        ctl.override(name, mode)
        ref[0].relay_event(dict(ctl.states), datetime.now(UTC), f"override {mode}")

    ref.append(MqttSink(mqtt_cfg(mosquitto), TranslateConfig(), ["boiler"], on_command, "t"))
    sinks.append(ref[0])
    ref[0].write(parse(FLUVIUS), dict(ctl.states))
    wait_until(lambda: ref[0].connected)
    state = f"smartmeter/{METER}/relay/boiler/state"
    collector.wait_for(state, lambda m: m.payload == "OFF")
    set_topic = f"smartmeter/{METER}/relay/boiler/set"
    collector.publish(set_topic, "ON")
    collector.wait_for(state, lambda m: m.payload == "ON")
    assert factory.pin(22).state == 1 and ctl.modes["boiler"] == "ON"
    collector.publish(set_topic, "OFF")
    wait_until(lambda: collector.on(state)[-1].payload == "OFF")
    assert factory.pin(22).state == 0 and ctl.modes["boiler"] == "OFF"
    collector.publish(set_topic, "AUTO")  # back to the rules (applied from the next reading)
    wait_until(lambda: ctl.modes["boiler"] == "AUTO")
    ctl.close()


# ---------------------------------------------------------------- outages


KILL_CHILD = """
import sys, time
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo
from app.config import MqttConfig, TranslateConfig
from app.protocols.dsmr import parse_telegram
from app.sinks.mqtt import MqttSink
data = Path(sys.argv[2]).read_bytes()
reading = parse_telegram(data, datetime.now(timezone.utc), ZoneInfo("Europe/Brussels"))
sink = MqttSink(MqttConfig(enabled=True, host="127.0.0.1", port=int(sys.argv[1]), keepalive=5.0),
                TranslateConfig(), ["boiler"], None, "child")
sink.relay_event({"boiler": True}, datetime.now(timezone.utc), "test")
sink.write(reading, {"boiler": True})
while not sink.connected:
    time.sleep(0.02)
print("READY", flush=True)
time.sleep(60)
"""


def test_last_will_when_the_appliance_is_killed(mosquitto: Broker, collector: Collector) -> None:
    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(mosquitto.port), str(FIXTURES / FLUVIUS)],
                             cwd=REPO, stdout=subprocess.PIPE, env=os.environ | {"PYTHONPATH": str(REPO)})
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"READY"
        collector.wait_for(f"smartmeter/{METER}/relay/boiler/state", lambda m: m.payload == "ON")
        collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "online")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=5)
        if child.stdout:
            child.stdout.close()
    collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "offline")
    late = Collector(mosquitto)
    try:
        status = late.wait_for(f"smartmeter/{METER}/status")
        assert status.retain and status.payload == "offline"
        assert late.wait_for(f"smartmeter/{METER}/relay/boiler/state").payload == "ON"
    finally:
        late.close()


def test_broker_restart_is_survived(mosquitto: Broker, sinks: list[MqttSink]) -> None:
    reading = parse(FLUVIUS)
    sink = connected_sink(sinks, mqtt_cfg(mosquitto, retain=True), reading, ["boiler"])
    sink.relay_event({"boiler": True}, datetime.now(UTC), "test")
    mosquitto.stop()
    wait_until(lambda: not sink.connected)
    t0 = time.monotonic()
    for _ in range(5):
        sink.write(reading, {"boiler": True})
        sink.tick(time.monotonic())
    assert time.monotonic() - t0 < 0.5, "writes must not wait for the broker"
    assert sink.dropped >= 4 * 24  # the last reading is held for the reconnect
    mosquitto.start()
    c = Collector(mosquitto)
    try:
        wait_until(lambda: sink.connected, timeout=10)
        assert c.wait_for(f"smartmeter/{METER}/status").payload == "online"  # republished (persistence off)
        assert c.wait_for(f"smartmeter/{METER}/relay/boiler/state").payload == "ON"
        # the held reading goes out on reconnect, without waiting for the next one
        assert c.wait_for(f"smartmeter/{METER}/power/power_in").json()["value"] == 338
    finally:
        c.close()


def _make_pki(d: Path) -> dict[str, Path]:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate (PEM files)."""
    import ipaddress
    from datetime import timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name | None,
             issuer_key: ec.EllipticCurvePrivateKey, ca: bool, san: x509.SubjectAlternativeName | None
             ) -> x509.Certificate:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
        b = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer or name)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if san is not None:
            b = b.add_extension(san, critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    files: dict[str, Path] = {}

    def write(stem: str, c: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
        files[stem] = d / f"{stem}.crt"
        files[stem].write_bytes(c.public_bytes(serialization.Encoding.PEM))
        files[stem + "_key"] = d / f"{stem}.key"
        files[stem + "_key"].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = cert("test CA", ca_key, None, ca_key, True, None)
    write("ca", ca, ca_key)
    loopback = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    for stem, san in (("server", loopback), ("client", None)):
        key = ec.generate_private_key(ec.SECP256R1())
        write(stem, cert(stem, key, ca.subject, ca_key, False, san), key)
    return files


def test_tls_with_a_client_certificate(tmp_path: Path, mosquitto: Broker, sinks: list[MqttSink]) -> None:
    pki = _make_pki(tmp_path)
    tls_dir = tmp_path / "tls"
    tls_dir.mkdir()
    broker = Broker(tls_dir, f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
                             "require_certificate true\n")
    broker.start()
    try:
        cfg = mqtt_cfg(broker, tls=True, ca_file=str(pki["ca"]), cert_file=str(pki["client"]),
                       key_file=str(pki["client_key"]))
        sink = connected_sink(sinks, cfg, parse(FLUVIUS))
        assert sink.connects == 1
        no_cert = MqttSink(replace(cfg, cert_file="", key_file=""), TranslateConfig(), [], None, "t")
        sinks.append(no_cert)
        no_cert.write(parse(FLUVIUS), {})
        time.sleep(0.5)
        assert not no_cert.connected  # the broker wants a client certificate
    finally:
        for s in sinks:
            s.close()
        broker.stop()


def test_unreadable_tls_files_are_a_config_error(tmp_path: Path) -> None:
    from app.errors import ConfigError

    cfg = MqttConfig(enabled=True, tls=True, ca_file=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(ConfigError, match=r"\[mqtt\] tls"):
        MqttSink(cfg, TranslateConfig(), [], None, "t")


def test_absent_broker_never_blocks() -> None:
    cfg = MqttConfig(enabled=True, host="127.0.0.1", port=1, reconnect_max=1.0,  # nothing listens on port 1
                     publish_interval=0.0)
    sink = MqttSink(cfg, TranslateConfig(), ["boiler"], None, "t")
    t0 = time.monotonic()
    reading = parse(FLUVIUS)
    for _ in range(3):
        sink.write(reading, {"boiler": False})
        sink.relay_event({"boiler": True}, datetime.now(UTC), "x")
        sink.status(ReaderStatus())
        sink.tick(time.monotonic())
    assert time.monotonic() - t0 < 0.5
    assert not sink.connected and sink.dropped == 2 * 24  # the latest is held for a connection
    t0 = time.monotonic()
    sink.close()
    assert time.monotonic() - t0 < 3.0
    assert sink.dropped == 3 * 24


# ---------------------------------------------------------------- translator


def test_translator_maps_both_raw_shapes(mosquitto: Broker, collector: Collector) -> None:
    from app.sinks.mqtt_translate import Translator

    # datacollector_topics wider than the default on purpose: our own output matches it (loop guard)
    tcfg = TranslateConfig(enabled=True, datacollector_topics=("smartmeter/#",),
                           tasmota_map=(("z.Pi", "power/power_in"), ("Po", "power/power_out"),
                                        ("E_in", "energy/energy_in*0.001")))
    tr = Translator(mqtt_cfg(mosquitto), tcfg, tz=TZ)
    tr.start()
    try:
        wait_until(lambda: tr.connected)
        time.sleep(0.2)  # subscription settles
        collector.publish("smartmeter/lgz1/ACTIVE_POWER_P", '{"value": 1, "timestamp": 1629055611}')
        collector.publish("smartmeter/lgz1/ACTIVE_ENERGY_N", '{"value": 123456, "timestamp": 1629055611}')
        collector.publish("smartmeter/lgz1/REACTIVE_POWER_P", '{"value": 5, "timestamp": 1629055611}')
        collector.publish("tele/tasmota_p1/SENSOR",
                          '{"Time":"2021-09-24T17:56:38","z":{"Pi":12,"Po":3,"E_in":4567890}}')
        ts = int(datetime(2021, 9, 24, 17, 56, 38, tzinfo=TZ).timestamp())
        assert collector.wait_for("smartmeter/lgz1/power/power_in").json() == {"timestamp": 1629055611,
                                                                                 "value": 1}
        assert collector.wait_for("smartmeter/lgz1/energy/energy_out").json() == {"timestamp": 1629055611,
                                                                                    "value": 123.456}
        tas = "smartmeter/tasmota_p1"
        assert collector.wait_for(f"{tas}/power/power_in").json() == {"timestamp": ts, "value": 12}
        assert collector.wait_for(f"{tas}/power/power_out").json() == {"timestamp": ts, "value": 3}
        assert collector.wait_for("smartmeter/tasmota_p1/energy/energy_in").json() == {"timestamp": ts,
                                                                                         "value": 4567.89}
        time.sleep(0.5)
        assert tr.published == 5, "each raw value republished once, never our own output again"
        assert len(collector.under("smartmeter/")) == 3 + 5
    finally:
        tr.close()


def test_translator_runs_inside_the_sink_when_enabled(mosquitto: Broker, collector: Collector,
                                                      sinks: list[MqttSink]) -> None:
    sink = MqttSink(mqtt_cfg(mosquitto), TranslateConfig(enabled=True), [], None, "t")
    sinks.append(sink)
    assert sink.translator is not None
    wait_until(lambda: sink.translator.connected)
    time.sleep(0.2)
    collector.publish("smartmeter/abc/VOLTAGE_L2", '{"value": 231.5, "timestamp": 1629055611}')
    assert collector.wait_for("smartmeter/abc/voltage/l2").json()["value"] == 231.5


# ---------------------------------------------------------------- pure converters


def test_pure_helpers() -> None:
    assert sanitize("a/b+c#d e") == "a_b_c_d_e" and sanitize(" / ") == "unknown"
    assert [parse_command(p) for p in (b"on", b" OFF\n", "Auto", b"toggle", b"\xff")] == ["ON", "OFF", "AUTO",
                                                                                          None, None]
    assert number(0.338 * 1000) == 338 and number(301.548 + 270.014) == 571.562
    assert lookup_key({"z": {"Pi": 1}}, "z.Pi") == 1 and lookup_key({"z": {"Pi": 1}}, "Pi") == 1
    assert lookup_key({"z": {"y": {"Pi": 1}}}, "Pi") is None and lookup_key({"Pi": 2}, "z.Pi") is None
    assert tasmota_time("2021-09-24T17:56:38", UTC) == 1632506198 and tasmota_time(3, None) is None
    assert parse_key_map([("Pi", "power/power_in*1000"), ("E", "/energy/energy_in")]) == [
        ("Pi", "power/power_in", 1000.0), ("E", "energy/energy_in", 1.0)]
    t = Topics.of("smartmeter", "id/1")
    assert t.relay_of_set("smartmeter/id_1/relay/boiler/set") == "boiler"
    assert t.relay_of_set("smartmeter/id_1/relay/a/b/set") is None
    assert t.relay_of_set("smartmeter/other/relay/boiler/set") is None
    for own in ("smartmeter/x/power/power_in", "smartmeter/x/status", "smartmeter/x/info",
                "smartmeter/x/relay/boiler/state"):
        assert is_harmonized(own, "smartmeter"), own
        assert translate_datacollector(own, '{"value": 1}', "smartmeter", 0) == []
        assert translate_tasmota(own, '{"Pi": 1}', "smartmeter", [("Pi", "power/power_in", 1.0)], 0) == []
    assert not is_harmonized("smartmeter/x/ACTIVE_POWER_P", "smartmeter")
    assert translate_datacollector("smartmeter/x/ACTIVE_POWER_P", "not json", "smartmeter", 0) == []
    assert translate_datacollector("smartmeter/x/ACTIVE_POWER_P", '{"value": "nan"}', "smartmeter", 0) == []
    no_ts = translate_datacollector("smartmeter/x/ACTIVE_POWER_P", '{"value": 7}', "smartmeter", 99)
    assert no_ts[0].payload == '{"timestamp": 99, "value": 7}'
    assert len({t.topic for t in TOPICS}) == len(TOPICS) == 25


@settings(max_examples=60, deadline=None)
@given(
    meter_id=st.text(max_size=20),
    values=st.dictionaries(st.sampled_from([t.field for t in TOPICS]),
                           st.floats(allow_nan=True, allow_infinity=True), max_size=12),
)
def test_any_reading_gives_valid_topics_and_json(meter_id: str, values: dict[str, float]) -> None:
    reading = Reading(seq=1, protocol="dsmr", meter_id=meter_id, header="", meter_time=None,
                      received=datetime(2024, 1, 1, tzinfo=UTC), values={}, fields=values)
    msgs = reading_messages(reading, "smartmeter")
    scale = {t.field: t.scale for t in TOPICS}
    assert len(msgs) == sum(1 for f, v in values.items() if math.isfinite(v * scale[f]))
    for m in msgs:
        levels = m.topic.split("/")
        assert len(levels) == 4 and all(levels) and not set("+#") & set(m.topic)
        body = json.loads(m.payload)
        assert body["timestamp"] == 1704067200 and math.isfinite(body["value"])


@settings(max_examples=60, deadline=None)
@given(topic=st.text(max_size=40), payload=st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
def test_translators_never_raise_on_garbage(topic: str, payload: bytes) -> None:
    key_map = parse_key_map(TranslateConfig().tasmota_map)
    for m in translate_datacollector(topic, payload, "smartmeter", 0) + translate_tasmota(
        topic, payload, "smartmeter", key_map, 0
    ):
        assert is_harmonized(m.topic, "smartmeter")
        assert math.isfinite(json.loads(m.payload)["value"])


def test_end_to_end_through_the_post_processor(mosquitto: Broker, collector: Collector) -> None:
    """set -> PostProcessor command queue -> Controller -> mock pin -> relay_event -> state topic."""
    pp, factory = post_processor(mosquitto)
    state = f"smartmeter/{METER}/relay/boiler/state"
    try:
        pp.start()
        pp.on_reading(parse(FLUVIUS))
        collector.wait_for(state, lambda m: m.payload == "OFF")
        collector.publish(f"smartmeter/{METER}/relay/boiler/set", "ON")

        def applied() -> bool:
            pp.tick()  # the main loop drains the command queue
            return bool(collector.on(state)) and collector.on(state)[-1].payload == "ON"

        wait_until(applied)
        assert factory.pin(17).state == 1
    finally:
        pp.close()
    collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "offline")
    assert collector.on(state)[-1].payload == "OFF"  # safe state at shutdown, published before offline
    assert factory.pin(17).state == 0
