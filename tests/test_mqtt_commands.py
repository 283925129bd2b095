"""Issue 11 items 6 and 7: no MQTT message stops a paho thread; command floods respect the relay's protection.

Real Mosquitto (fixture `mosquitto`), gpiozero's MockFactory for the pins, hypothesis for the payloads and
for the override rules."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from itertools import pairwise

import paho.mqtt.client as paho
import pytest
from gpiozero.pins.mock import MockFactory
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import ControlConfig, MqttConfig, RelayConfig, TranslateConfig
from app.control.conditions import parse_condition
from app.control.controller import Controller
from app.sinks.mqtt_translate import Translator
from tests.fixtures_mqtt import Broker
from tests.test_mqtt import FLUVIUS, METER, TZ, Collector, mqtt_cfg, parse, post_processor, wait_until

pytestmark = pytest.mark.timeout(180)
SET = f"smartmeter/{METER}/relay/boiler/set"
DEEP_JSON = "[" * 10_000 + "]" * 10_000  # 20 KB: json.loads raises RecursionError
ZERO_TIME = '{"Time":"0001-01-01T00:00:00","z":{"Pi":12}}'  # Tasmota before its clock is set


@pytest.fixture
def collector(mosquitto: Broker) -> Iterator[Collector]:
    """A subscriber on '#'."""
    c = Collector(mosquitto)
    yield c
    c.close()


# ---------------------------------------------------------------- item 6: the translator survives anything


def _translator(mosquitto: Broker) -> Translator:
    tr = Translator(mqtt_cfg(mosquitto), TranslateConfig(enabled=True, tasmota_topics=("tele/+/SENSOR",)),
                    tz=TZ)
    tr.start()
    wait_until(lambda: tr.connected)
    time.sleep(0.2)  # the subscription settles
    return tr


@pytest.mark.parametrize("payload", [DEEP_JSON, '{"Time": {"a": ' * 3000 + "1" + "}" * 3000],
                         ids=["list", "object"])
def test_deeply_nested_json_does_not_stop_the_translator(mosquitto: Broker, collector: Collector,
                                                         payload: str) -> None:
    tr = _translator(mosquitto)
    try:
        collector.publish("tele/bad/SENSOR", payload)
        wait_until(lambda: tr.received >= 1)
        collector.publish("tele/good/SENSOR", '{"Time":"2021-09-24T17:56:38","z":{"Pi":12}}')
        assert collector.wait_for("smartmeter/good/power/power_in").json()["value"] == 12
        health = tr.health()
        assert health["bad"] == 1 and "RecursionError" in health["last_error"]
        assert health["published"] == 1 and health["received"] == 2
    finally:
        tr.close()


def test_a_tasmota_zero_time_is_translated_with_the_receive_time(mosquitto: Broker,
                                                                 collector: Collector) -> None:
    tr = _translator(mosquitto)
    try:
        t0 = int(time.time())
        collector.publish("tele/noclock/SENSOR", ZERO_TIME)
        msg = collector.wait_for("smartmeter/noclock/power/power_in").json()
        assert msg["value"] == 12 and msg["timestamp"] >= t0
        collector.publish("tele/good/SENSOR", '{"z":{"Pi":13}}')
        assert collector.wait_for("smartmeter/good/power/power_in").json()["value"] == 13
    finally:
        tr.close()


def test_an_unexpected_error_is_counted_and_the_thread_goes_on(mosquitto: Broker, collector: Collector,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    tr = _translator(mosquitto)
    real = tr.translate
    monkeypatch.setattr(tr, "translate", lambda topic, payload, now_s: (
        (_ for _ in ()).throw(KeyError("boom")) if b"boom" in payload else real(topic, payload, now_s)))
    try:
        with caplog.at_level(logging.ERROR):
            for _ in range(20):
                collector.publish("tele/x/SENSOR", '{"boom": 1}')
            collector.publish("tele/ok/SENSOR", '{"Pi": 5}')
            assert collector.wait_for("smartmeter/ok/power/power_in").json()["value"] == 5
        assert tr.callback_errors == 20 and tr.health()["bad"] == 20
        assert "KeyError" in tr.health()["last_error"]
        assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1  # rate-limited
    finally:
        tr.close()


@settings(max_examples=150, deadline=None)
@given(
    topic=st.sampled_from(["tele/a/SENSOR", "smartmeter/a/ACTIVE_POWER_P", "smartmeter/a/power/power_in"]),
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                     max_leaves=30).map(lambda o: json.dumps(o).encode()),
        st.integers(1, 30_000).map(lambda n: b'{"Pi": ' + b"[" * n + b"1" + b"]" * n + b"}"),
        st.text(max_size=30).map(lambda t: json.dumps({"Time": t, "Pi": 1, "value": 1}).encode()),
        st.datetimes().map(lambda d: json.dumps({"Time": d.isoformat(), "z": {"Pi": 2}}).encode()),
    ),
)
def test_arbitrary_payloads_never_escape_the_callback(topic: str, payload: bytes) -> None:
    """What paho's network thread calls: no payload makes `_on_message` raise (which would end the thread)."""
    tr = Translator(MqttConfig(enabled=True, host="127.0.0.1", port=1),  # never started: no network
                    TranslateConfig(enabled=True, datacollector_topics=("smartmeter/#",)))
    msg = paho.MQTTMessage(topic=topic.encode())
    msg.payload = payload
    tr._on_message(tr._client, None, msg)
    assert tr.received == 1 and tr.published + tr.ignored + tr.bad + tr.callback_errors + tr.dropped >= 1


# ---------------------------------------------------------------- item 7: command floods


def test_a_flood_of_5000_alternating_commands_gives_a_handful_of_switches(
    mosquitto: Broker, collector: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    pp, factory = post_processor(mosquitto, "1 s")
    pin = factory.pin(17)
    stop = threading.Event()
    try:
        pp.start()
        pp.on_reading(parse(FLUVIUS))
        collector.wait_for(f"smartmeter/{METER}/relay/boiler/state", lambda m: m.payload == "OFF")
        t0 = time.monotonic()

        def flood() -> None:
            for i in range(5000):
                collector.client.publish(SET, "ON" if i % 2 == 0 else "OFF", qos=0)
            collector.client.publish(SET, "ON", qos=1).wait_for_publish(30)  # the last command: ON
            stop.set()

        with caplog.at_level(logging.INFO):
            sender = threading.Thread(target=flood)
            sender.start()
            while not stop.is_set():  # the post-processor's main loop, ticking as fast as it ever does
                pp.tick()
                time.sleep(0.05)
            sender.join()
            elapsed_s = time.monotonic() - t0

            def settled() -> bool:
                pp.tick()
                return pp.controller is not None and pp.controller.modes["boiler"] == "ON" and pin.state == 1

            wait_until(settled, timeout=10)
        switches = len(pin.states) - 1
        # one override change per override_min_interval at most (plus the start's safe state)
        assert switches <= 2 + elapsed_s / 1.0, (switches, elapsed_s)
        assert pp.controller is not None and pp.controller.states["boiler"] is True
        requested = [r for r in caplog.records if "requested" in r.getMessage()]
        assert len(requested) <= 3, "5,000 commands, a few log lines"
    finally:
        pp.close()


def test_overrides_wait_for_min_off_and_the_last_command_wins(mosquitto: Broker) -> None:
    pp, factory = post_processor(mosquitto, "0 s", "min_off = 2 s\nmin_on = 2 s")
    try:
        pp.start()  # the safe state at start counts as a switch: min_off runs from now
        pp.on_reading(parse(FLUVIUS))
        futures = [pp.command("boiler", m) for m in ("ON", "OFF", "ON")]
        pp.tick()
        outcomes = [f.result(1) for f in futures]
        assert [r.outcome for r in outcomes[:2]] == ["superseded", "superseded"]
        assert outcomes[2].outcome == "deferred" and outcomes[2].detail == "min_off 2 s"
        assert factory.pin(17).state == 0
        wait_until(lambda: (pp.tick(), factory.pin(17).state == 1)[1], timeout=10)
        assert pp.controller is not None and pp.controller.results["boiler"].outcome == "applied"
        off = pp.command("boiler", "OFF")
        pp.tick()
        assert off.result(1).outcome == "deferred" and off.result(1).detail == "min_on 2 s"
    finally:
        pp.close()


def test_junk_commands_are_ignored_and_logged_rate_limited(mosquitto: Broker, collector: Collector,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    pp, factory = post_processor(mosquitto, "0 s")
    mqtt = pp.workers[0].sink
    try:
        pp.start()
        pp.on_reading(parse(FLUVIUS))
        wait_until(lambda: getattr(mqtt, "connected", False))
        time.sleep(0.2)
        with caplog.at_level(logging.INFO):
            for i in range(1000):
                collector.client.publish(SET if i % 2 else f"smartmeter/{METER}/relay/pump/set",
                                         "TOGGLE" if i % 2 else "ON", qos=0)
            collector.publish(SET, "bogus")
            wait_until(lambda: getattr(mqtt, "rejected_commands", 0) == 1001, timeout=20)
            pp.tick()
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert 1 <= len(warnings) <= 2, [r.getMessage() for r in warnings]
        assert len(factory.pin(17).states) == 1  # never switched
    finally:
        pp.close()


# ---------------------------------------------------------------- the rule itself (pure, hypothesis)


@settings(max_examples=200, deadline=None)
@given(
    min_on=st.sampled_from([0.0, 3.0, 60.0]),
    min_off=st.sampled_from([0.0, 3.0, 60.0]),
    interval=st.sampled_from([0.0, 1.0, 5.0]),
    commands=st.lists(st.tuples(st.floats(0.0, 20.0), st.sampled_from(["ON", "OFF", "AUTO"])),
                      min_size=1, max_size=40),
)
def test_override_switches_respect_the_protection(min_on: float, min_off: float, interval: float,
                                                  commands: list[tuple[float, str]]) -> None:
    relay = RelayConfig(name="boiler", pin="GPIO17", on_when=parse_condition("export > 1500 W for 60 s"),
                        min_on=min_on, min_off=min_off)
    ctl = Controller(ControlConfig(override_min_interval=interval, stale_after=3600.0), (relay,),
                     pin_factory=MockFactory())
    now = 0.0
    ctl.start(now_monotonic=now)
    switches: list[tuple[float, bool]] = [(now, False)]
    changes: list[float] = []
    for dt, mode in commands:
        now += dt
        for ev in ctl.poll_overrides(now):
            switches.append((now, ev.state))
        result = ctl.override("boiler", mode, now)
        if result.outcome == "applied":
            changes.append(now)
        switches.extend((now, ev.state) for ev in result.events)
    for t in (now + 1.0, now + 10.0, now + 100.0):  # afterwards: the last command gets through
        for ev in ctl.poll_overrides(t):
            switches.append((t, ev.state))
    ctl.close()
    for (t1, s1), (t2, _) in pairwise(switches):
        assert t2 - t1 >= (min_on if s1 else min_off), switches
    for a, b in pairwise(changes):
        assert b - a >= interval
    last = commands[-1][1]
    assert ctl.modes["boiler"] == last
    if last != "AUTO":
        assert switches[-1][1] == (last == "ON")


def test_override_wait_names_the_rule() -> None:
    from app.control.override import override_wait

    assert override_wait("ON", "AUTO", False, 10.0, 100.0, 0.0, 300.0, 5.0) == (290.0, "min_off 300 s")
    assert override_wait("OFF", "ON", True, 100.0, 1.0, 60.0, 0.0, 5.0) == (4.0, "override_min_interval 5 s")
    assert override_wait("ON", "ON", True, 0.0, 0.0, 60.0, 60.0, 5.0) is None
    assert override_wait("AUTO", "ON", True, 0.0, 100.0, 60.0, 60.0, 5.0) == (0.0, "override_min_interval 5 s")


def test_the_translators_health_is_in_info(mosquitto: Broker, collector: Collector) -> None:
    from app.records import ReaderStatus
    from app.sinks.mqtt import MqttSink

    now = [100.0]
    sink = MqttSink(mqtt_cfg(mosquitto), TranslateConfig(enabled=True), [], None, "t", clock=lambda: now[0])
    try:
        sink.write(parse(FLUVIUS), {})
        wait_until(lambda: sink.connected and sink.translator.connected)
        time.sleep(0.2)  # the translator's subscription settles
        collector.publish("tele/bad/SENSOR", DEEP_JSON)
        collector.publish("tele/good/SENSOR", '{"Pi": 7}')
        collector.wait_for("smartmeter/good/power/power_in")
        sink.status(ReaderStatus(frames_ok=1))
        now[0] += 10.0
        sink.tick(now[0])
        info = collector.wait_for(f"smartmeter/{METER}/info", lambda m: "translator" in m.json()
                                  and m.json()["translator"]["bad"] == 1).json()
        assert info["translator"]["published"] == 1 and "RecursionError" in info["translator"]["last_error"]
        assert info["mqtt_callback_errors"] == 0 and info["data_stale"] is False
    finally:
        sink.close()


def test_a_failing_command_callback_does_not_stop_the_sink(mosquitto: Broker, collector: Collector) -> None:
    from app.sinks.mqtt import MqttSink

    calls: list[str] = []

    def on_command(name: str, mode: str) -> None:
        calls.append(mode)
        if mode == "ON":
            raise RuntimeError("controller bug")

    sink = MqttSink(mqtt_cfg(mosquitto), TranslateConfig(), ["boiler"], on_command, "t")
    try:
        sink.write(parse(FLUVIUS), {})
        wait_until(lambda: sink.connected)
        time.sleep(0.2)
        collector.publish(SET, "ON")
        collector.publish(SET, "OFF")
        wait_until(lambda: calls == ["ON", "OFF"])  # paho's thread is still there for the second
        assert sink.callback_errors == 1 and "controller bug" in sink.last_error
    finally:
        sink.close()
