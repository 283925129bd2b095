"""MQTT and Home Assistant (issue 10): nothing lost before CONNACK, stale data unavailable, relay mode and
reason entities, a publish_interval that suits HA's recorder. Real Mosquitto (fixture `mosquitto`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from app.config import MqttConfig, TranslateConfig, loads
from app.records import ReaderStatus
from app.sinks.mqtt import MqttSink
from app.sinks.mqtt_topics import reading_values
from tests.fixtures_mqtt import Broker
from tests.test_mqtt import FLUVIUS, METER, Collector, mqtt_cfg, parse, post_processor, wait_until

pytestmark = pytest.mark.timeout(120)
BASE = f"smartmeter/{METER}"
NODE = f"smartmeter_{METER}"
VALUES = len(reading_values(parse(FLUVIUS)))  # value topics of the Fluvius capture


@pytest.fixture
def collector(mosquitto: Broker) -> Iterator[Collector]:
    """A subscriber on '#'."""
    c = Collector(mosquitto)
    yield c
    c.close()


@pytest.fixture
def sinks() -> Iterator[list[MqttSink]]:
    """Sinks created by a test, closed afterwards."""
    made: list[MqttSink] = []
    yield made
    for s in made:
        s.close()


def new_sink(sinks: list[MqttSink], cfg: MqttConfig, relays: list[str] | None = None, **kw: object) -> MqttSink:
    sink = MqttSink(cfg, TranslateConfig(), relays or [], None, "9.9.9-test", **kw)  # type: ignore[arg-type]
    sinks.append(sink)
    return sink


# ---------------------------------------------------------------- nothing published before CONNACK


def test_the_first_reading_is_published_and_no_false_drop_warning(
    mosquitto: Broker, collector: Collector, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    sink = new_sink(sinks, mqtt_cfg(mosquitto))
    with caplog.at_level(logging.INFO, logger="app.sinks.mqtt"):
        sink.write(parse(FLUVIUS), {})  # one reading only: it arrives before the broker said CONNACK
        wait_until(lambda: sink.connected)
        assert collector.wait_for(f"{BASE}/power/power_in").json()["value"] == 338
        wait_until(lambda: len(collector.under(f"{BASE}/")) >= VALUES + 2)  # values + status + availability
        sink.tick(sink._clock())
    assert sink.dropped == 0 and sink.published == VALUES
    assert not [r for r in caplog.records if "dropped" in r.getMessage()], "nothing was unreachable"


def test_a_new_meter_id_loses_no_value_either(mosquitto: Broker, collector: Collector,
                                             sinks: list[MqttSink]) -> None:
    first = parse(FLUVIUS)
    sink = new_sink(sinks, mqtt_cfg(mosquitto))
    sink.write(first, {})
    collector.wait_for(f"{BASE}/power/power_in")
    sink.write(replace(first, meter_id="OTHER1"), {})  # reconnects with a new will: held again until CONNACK
    assert collector.wait_for("smartmeter/OTHER1/power/power_in").json()["value"] == 338
    sink.tick(sink._clock())
    assert sink.dropped == 0


def test_readings_while_the_broker_is_away_are_counted_and_the_latest_is_sent_on_connect(
    mosquitto: Broker, sinks: list[MqttSink], caplog: pytest.LogCaptureFixture
) -> None:
    reading = parse(FLUVIUS)
    mosquitto.stop()
    sink = new_sink(sinks, mqtt_cfg(mosquitto, retain=True))
    for w in (100, 200, 300):
        sink.write(replace(reading, fields=reading.fields | {"actual_total_consumption": w / 1000}), {})
    assert sink.dropped == 2 * VALUES  # two readings replaced while nobody listened; the third is held
    with caplog.at_level(logging.WARNING, logger="app.sinks.mqtt"):
        sink.tick(sink._clock())
    assert any(f"dropped {2 * VALUES} value messages" in r.getMessage() for r in caplog.records)
    mosquitto.start()
    late = Collector(mosquitto, f"{BASE}/power/power_in")
    try:
        wait_until(lambda: sink.connected, timeout=15)
        assert late.wait_for(f"{BASE}/power/power_in").json()["value"] == 300
    finally:
        late.close()


# ---------------------------------------------------------------- stale data -> unavailable in HA


def test_stale_data_marks_values_unavailable_and_back(mosquitto: Broker, collector: Collector,
                                                      sinks: list[MqttSink]) -> None:
    now = [1000.0]
    sink = new_sink(sinks, mqtt_cfg(mosquitto), ["boiler"], clock=lambda: now[0], stale_after=30.0)
    reading = parse(FLUVIUS)
    sink.write(reading, {})
    avail = f"{BASE}/availability"
    assert collector.wait_for(avail).payload == "online"
    now[0] += 20.0
    sink.tick(now[0])
    assert [m.payload for m in collector.on(avail)] == ["online"]  # within stale_after
    now[0] += 11.0
    sink.tick(now[0])  # 31 s without a reading
    collector.wait_for(avail, lambda m: m.payload == "offline")
    assert collector.on(f"{BASE}/status")[-1].payload == "online"  # the appliance itself is up
    late = Collector(mosquitto, avail)
    try:
        assert late.wait_for(avail, lambda m: m.retain).payload == "offline"  # HA started later knows too
    finally:
        late.close()
    sink.write(reading, {})
    wait_until(lambda: collector.on(avail)[-1].payload == "online")
    sink.status(ReaderStatus(connected=False))  # the reader lost the meter (serial port gone)
    wait_until(lambda: collector.on(avail)[-1].payload == "offline")
    sink.write(reading, {})
    wait_until(lambda: collector.on(avail)[-1].payload == "online")
    assert [m.payload for m in collector.on(avail)] == ["online", "offline", "online", "offline", "online"]


def test_value_sensors_follow_the_availability_topic_and_expire(mosquitto: Broker, collector: Collector,
                                                               sinks: list[MqttSink]) -> None:
    sink = new_sink(sinks, mqtt_cfg(mosquitto, publish_interval=10.0), ["boiler"], stale_after=45.0)
    sink.write(parse(FLUVIUS), {})
    cfg = collector.wait_for(f"homeassistant/sensor/{NODE}/power_in/config").json()
    assert cfg["availability_mode"] == "all"
    assert {a["topic"] for a in cfg["availability"]} == {f"{BASE}/status", f"{BASE}/availability"}
    assert cfg["expire_after"] == 55  # stale_after + publish_interval: a value older than that is not shown


# ---------------------------------------------------------------- relay mode (select) and reason (sensor)


def test_relay_mode_select_and_reason_sensor(mosquitto: Broker, collector: Collector) -> None:
    pp, factory = post_processor(mosquitto, "0 s")
    mode, reason = f"{BASE}/relay/boiler/mode", f"{BASE}/relay/boiler/reason"
    try:
        pp.start()
        pp.on_reading(parse(FLUVIUS))
        select = collector.wait_for(f"homeassistant/select/{NODE}/boiler_mode/config").json()
        assert select["options"] == ["AUTO", "ON", "OFF"]
        assert select["state_topic"] == mode and select["command_topic"] == f"{BASE}/relay/boiler/set"
        sensor = collector.wait_for(f"homeassistant/sensor/{NODE}/boiler_reason/config").json()
        assert sensor["state_topic"] == reason and sensor["json_attributes_topic"] == reason
        assert collector.wait_for(mode).payload == "AUTO"
        first = collector.wait_for(reason).json()
        assert (first["reason"], first["state"], first["mode"]) == ("start: safe state", "OFF", "AUTO")
        collector.publish(f"{BASE}/relay/boiler/set", "ON")  # the switch's toggle: an override, now visible

        def shows(topic: str, payload: str) -> bool:
            pp.tick()
            return bool(collector.on(topic)) and collector.on(topic)[-1].payload == payload

        wait_until(lambda: shows(mode, "ON"))
        wait_until(lambda: collector.on(reason)[-1].json()["reason"] == "manual override ON")
        assert collector.on(f"{BASE}/relay/boiler/state")[-1].payload == "ON"
        assert factory.pin(17).state == 1
        collector.publish(f"{BASE}/relay/boiler/set", "AUTO")  # what the select sends
        wait_until(lambda: shows(mode, "AUTO"))
        late = Collector(mosquitto, f"{BASE}/relay/#")
        try:
            assert late.wait_for(mode, lambda m: m.retain).payload == "AUTO"
            assert late.wait_for(reason, lambda m: m.retain).json()["at"] is not None
        finally:
            late.close()
    finally:
        pp.close()


def test_a_deferred_override_shows_why_in_the_reason(mosquitto: Broker, collector: Collector) -> None:
    pp, _ = post_processor(mosquitto, "1 h")
    reason = f"{BASE}/relay/boiler/reason"
    try:
        pp.start()
        pp.on_reading(parse(FLUVIUS))
        assert pp.command("sauna", "ON").result(0).outcome == "ignored"  # at once: nothing to queue
        fut_auto = pp.command("boiler", "AUTO")
        pp.tick()  # the main loop applies commands
        assert fut_auto.result(1).outcome == "unchanged"
        fut_on = pp.command("boiler", "ON")
        pp.tick()
        assert fut_on.result(1).outcome == "applied"
        fut_off = pp.command("boiler", "OFF")
        pp.tick()
        result = fut_off.result(1)
        assert result.outcome == "deferred" and result.detail == "override_min_interval 3600 s"
        assert result.until is not None and result.until > datetime.now(UTC)
        msg = collector.wait_for(reason, lambda m: m.json()["pending"] != "")
        assert msg.json()["pending"].startswith("OFF deferred until ")
        assert "override_min_interval 3600 s" in msg.json()["pending"]
    finally:
        pp.close()


# ---------------------------------------------------------------- publish_interval for HA's recorder


def test_publish_interval_defaults_to_10_s_and_relay_states_stay_immediate(
    mosquitto: Broker, collector: Collector, sinks: list[MqttSink]
) -> None:
    cfg = loads(f"[mqtt]\nenabled = yes\nhost = {mosquitto.host}\nport = {mosquitto.port}\n").mqtt
    assert cfg.publish_interval == 10.0 and MqttConfig().publish_interval == 10.0
    now = [500.0]
    sink = new_sink(sinks, cfg, ["boiler"], clock=lambda: now[0])
    reading = parse(FLUVIUS)
    sink.write(reading, {"boiler": False})
    collector.wait_for(f"{BASE}/power/power_in")
    for _ in range(9):  # 9 more readings within 10 s: held back, only the latest counts
        now[0] += 1.0
        sink.write(reading, {"boiler": False})
        sink.tick(now[0])
    sink.relay_event({"boiler": True}, datetime.now(UTC), "override")
    collector.wait_for(f"{BASE}/relay/boiler/state", lambda m: m.payload == "ON")  # at once
    assert len(collector.on(f"{BASE}/power/power_in")) == 1
    now[0] += 1.0
    sink.tick(now[0])
    wait_until(lambda: len(collector.on(f"{BASE}/power/power_in")) == 2)
