"""Alerts: config, the pure state machine (hypothesis), delivery to a local webhook receiver and to the
real broker (retained state + Home Assistant binary_sensor discovery), and the post-processor's specials."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.alerts import Alerts, Facts
from app.alerts.rules import FIRING, REPEAT, RESOLVED, AlertState
from app.alerts.settings import AlertConfig, parse_trigger
from app.config import MqttConfig, loads, redacted
from app.errors import ConfigError
from app.pipeline import PostProcessor
from app.records import Reading
from tests.appliance import wait_for
from tests.fixtures_mqtt import Broker

T0 = datetime(2026, 1, 12, 18, 0, tzinfo=UTC)
TOKEN = "wh-7f3a9c-secret"


def reading(t_s: float, import_kw: float, meter_id: str = "E0031") -> Reading:
    t = T0 + timedelta(seconds=t_s)
    return Reading(int(t_s) + 1, "dsmr", meter_id, "/ISK5MT382", t, t, {},
                   {"actual_total_consumption": import_kw, "actual_total_injection": 0.0})


class Receiver:
    """A local webhook receiver: remembers every POST (path, headers, JSON body)."""

    def __init__(self, status: int = 200) -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.status = status
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                rec.posts.append((self.path, dict(self.headers), json.loads(body)))
                self.send_response(rec.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# ---------------------------------------------------------------- config


def test_alert_sections_parse() -> None:
    cfg = loads("""
[alert:peak]
when = import > 5 kW for 2 min
notify = log, webhook
url = https://user:pw@ntfy.example/meter
repeat = 30 min
[alert:offline]
when = meter offline for 5 min
resolve = no
[alert:backlog]
when = sink backlog > 5000
""")
    peak, offline, backlog = cfg.alerts
    assert peak.when.condition is not None and peak.when.condition.threshold == 5000.0
    assert peak.notify == ("log", "webhook") and peak.repeat == 1800.0 and peak.resolve
    assert offline.when.kind == "meter offline" and offline.when.offline_s == 300.0 and not offline.resolve
    assert backlog.when.backlog == 5000 and backlog.notify == ("log",)
    shown = redacted(cfg)["alert:peak"]
    assert shown["url"] == "https://ntfy.example/…" and "pw" not in json.dumps(shown)


@pytest.mark.parametrize(("section", "message"), [
    ("when = import > 5 kW\nnotify = webhook", "[alert:a] url = '': notify = webhook needs a url"),
    ("when = import > 5 kW\nnotify = sms", "[alert:a] notify = 'sms': expected one or more of log, mqtt, webhook"),
    ("when = import > 5 kW\nnotify = mqtt", "[alert:a] notify = 'mqtt': mqtt needs [mqtt] enabled = yes"),
    ("notify = log", "[alert:a] when = '': missing"),
    ("when = meter offline for ever", "[alert:a] when = 'meter offline for ever': bad duration"),
    ("when = sink backlog 5", "[alert:a] when = 'sink backlog 5': expected 'sink backlog'"),
    ("when = the boiler is cold", "or one of: meter offline, relay mismatch, sink backlog, decrypt errors"),
    ("when = mean(import) > 3 kW", "expected 'mean(<quantity>, <duration>)'"),
    (f"when = import > 5 kW\nnotify = webhook\nurl = ftp://x:{TOKEN}@h/", "[alert:a] url = '<not shown>': expected"),
    (f"when = import > 5 kW\nurl = https://h/{TOKEN}", "url = '<not shown>': set, but notify has no webhook"),
])
def test_alert_config_errors_name_the_key_and_hide_the_url(section: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        loads(f"[alert:a]\n{section}\n")
    assert message in str(err.value)
    assert TOKEN not in str(err.value)


# ---------------------------------------------------------------- mean() in alert conditions


def test_mean_alert_ignores_a_spike_and_fires_on_a_sustained_average() -> None:
    alerts = Alerts((AlertConfig("avg", parse_trigger("mean(import, 5 min) > 3 kW"), ("log",), repeat=0.0),))
    try:
        t = 0.0
        for kw in [1.0] * 300 + [6.0] * 60 + [1.0] * 60:  # one minute at 6 kW: the 5-min mean stays ~2 kW
            alerts.on_reading(reading(t, kw))
            t += 1.0
            assert not alerts.active["avg"]
        for _ in range(300):  # 3.5 kW for five minutes: the mean climbs over 3 kW
            alerts.on_reading(reading(t, 3.5))
            t += 1.0
        assert alerts.active["avg"]
        fired = alerts.notices[-1]
        assert fired.state == FIRING and "mean(import, 5 min)" in fired.message and "> 3 kW" in fired.message
    finally:
        alerts.close()


@given(st.lists(st.tuples(st.integers(1, 40), st.floats(0, 10, allow_nan=False)), min_size=1, max_size=60),
       st.floats(0.5, 9.5), st.sampled_from([30.0, 60.0, 300.0]))
def test_mean_alert_is_active_exactly_while_the_window_mean_is_over(
        steps: list[tuple[int, float]], threshold_kw: float, window_s: float) -> None:
    """Reference: the plain mean of the readings in (t - window, t], once the readings span the window."""
    trigger = parse_trigger(f"mean(import, {window_s:g} s) > {threshold_kw} kW")
    alerts = Alerts((AlertConfig("m", trigger, ("log",), repeat=0.0, resolve=False),))
    try:
        t = 0.0
        seen: list[tuple[float, float]] = []
        for dt, kw in steps:
            t += dt
            alerts.on_reading(reading(t, kw))
            seen.append((t, kw * 1000.0))
            inside = [w for at, w in seen if at > t - window_s]
            covered = t - seen[0][0] >= window_s
            assert alerts.active["m"] == (covered and sum(inside) / len(inside) > threshold_kw * 1000.0)
    finally:
        alerts.close()


# ---------------------------------------------------------------- the state machine


@given(st.lists(st.tuples(st.floats(0, 120), st.booleans()), max_size=80), st.floats(0, 60),
       st.sampled_from([0.0, 30.0, 600.0]))
def test_alert_state_fires_once_per_episode_repeats_no_faster_and_resolves(
        steps: list[tuple[float, bool]], hold_s: float, repeat_s: float) -> None:
    state = AlertState("a", hold_s=hold_s, repeat_s=repeat_s)
    t = 0.0
    active = False
    last_sent: float | None = None
    true_since: float | None = None
    for dt, true in steps:
        t += dt
        notice = state.update(t, true, "x")
        true_since = (true_since if true_since is not None else t) if true else None
        if notice is None:
            assert state.active == active or (not true and not active)
        elif notice.state == FIRING:
            assert not active and true and true_since is not None and t - true_since >= hold_s
            last_sent = t
        elif notice.state == REPEAT:
            assert active and repeat_s > 0 and last_sent is not None and t - last_sent >= repeat_s
            last_sent = t
        else:
            assert notice.state == RESOLVED and active and not true
        active = state.active
        assert active == (notice.active if notice else active)
        if not true:
            assert not state.active


# ---------------------------------------------------------------- delivery


def _alerts(receiver: Receiver, when: str, **kw: Any) -> Alerts:
    url = f"http://bob:{TOKEN}@127.0.0.1:{receiver.port}/api/webhook/{TOKEN}"
    cfg = AlertConfig(name="peak", when=parse_trigger(when), notify=("log", "webhook"), url=url, **kw)
    return Alerts((cfg,))


def test_a_condition_alert_fires_after_its_hold_on_meter_time_and_resolves(
        receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    alerts = _alerts(receiver, "import > 4 kW for 60 s", repeat=0.0)
    try:
        alerts.on_reading(reading(0, 5.0))
        alerts.on_reading(reading(30, 5.2))
        assert alerts.active == {"peak": False}  # 30 s of meter time < the 60 s hold
        alerts.on_reading(reading(61, 5.4))
        assert alerts.active == {"peak": True}
        alerts.on_reading(reading(90, 5.1))  # still on: no second notice (repeat = 0)
        alerts.on_reading(reading(120, 1.0))
        assert alerts.active == {"peak": False}
        assert wait_for(lambda: len(receiver.posts) == 2, 15)
    finally:
        alerts.close(5)
    (path, headers, fired), (_, _, resolved) = receiver.posts
    assert path == f"/api/webhook/{TOKEN}"
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"bob:{TOKEN}".encode()).decode()
    assert fired["alert"] == "peak" and fired["state"] == "firing" and fired["active"] is True
    assert fired["meter"] == "E0031" and "import 5.4 kW > 4 kW for 60 s" in fired["message"]
    assert resolved["state"] == "resolved" and resolved["active"] is False
    assert "alert peak firing: peak: import 5.4 kW > 4 kW for 60 s" in caplog.text
    assert TOKEN not in caplog.text


def test_a_dead_webhook_never_blocks_and_its_url_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rec = Receiver(status=404)
    url = f"http://bob:{TOKEN}@127.0.0.1:{rec.port}/hook/{TOKEN}"
    alerts = Alerts((AlertConfig("off", parse_trigger("meter offline for 1 s"), ("webhook",), url),))
    try:
        t0 = time.monotonic()
        alerts.tick(100.0, Facts(last_valid_s=50.0))
        assert time.monotonic() - t0 < 0.1
        assert wait_for(lambda: alerts.notifier.failed == 1, 15)
    finally:
        alerts.close(5)
        rec.close()
    assert "webhook http://127.0.0.1:" in caplog.text and "HTTP 404" in caplog.text
    assert TOKEN not in caplog.text and "bob" not in caplog.text


def test_specials_follow_the_facts(receiver: Receiver) -> None:
    cfgs = tuple(AlertConfig(n, parse_trigger(w), ("log",), repeat=0.0) for n, w in [
        ("offline", "meter offline for 30 s"), ("mismatch", "relay mismatch"), ("backlog", "sink backlog > 10"),
        ("decrypt", "decrypt errors")])
    alerts = Alerts(cfgs)
    try:
        alerts.tick(0.0, Facts(last_valid_s=0.0))
        assert not any(alerts.active.values())
        alerts.tick(40.0, Facts(last_valid_s=0.0, relays_unknown=("boiler",), sink_backlog={"influxdb": 11},
                                decrypt_errors=0))
        assert alerts.active == {"offline": True, "mismatch": True, "backlog": True, "decrypt": False}
        alerts.tick(41.0, Facts(last_valid_s=41.0, relay_mismatches=0, decrypt_errors=3))
        assert alerts.active == {"offline": False, "mismatch": False, "backlog": False, "decrypt": True}
        alerts.tick(50.0, Facts(last_valid_s=50.0, relay_mismatches=1, decrypt_errors=3))
        assert alerts.active["mismatch"]  # a manual toggle seen on read-back
        alerts.tick(50.0 + 301, Facts(last_valid_s=351.0, relay_mismatches=1, decrypt_errors=3))
        assert not any(alerts.active.values())  # 5 min without a new one: resolved
    finally:
        alerts.close(2)
    assert [n.state for n in alerts.notices if n.alert == "decrypt"] == ["firing", "resolved"]


def test_alerts_on_the_broker_retained_with_home_assistant_discovery(mosquitto: Broker) -> None:
    mqtt = MqttConfig(enabled=True, host=mosquitto.host, port=mosquitto.port, prefix="sm")
    alerts = Alerts((AlertConfig("grid_peak", parse_trigger("import > 4 kW"), ("mqtt",)),), mqtt, "9.9")
    try:
        alerts.on_reading(reading(0, 5.0, meter_id="E0031"))
        alerts.on_reading(reading(10, 1.0, meter_id="E0031"))
        assert wait_for(lambda: alerts.notifier.sent == 2, 10)
    finally:
        alerts.close(5)
    got: dict[str, str] = {}
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    client.on_connect = lambda c, *a: c.subscribe([("sm/#", 1), ("homeassistant/#", 1)])
    client.on_message = lambda c, u, m: got.__setitem__(m.topic, m.payload.decode())
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    try:
        assert wait_for(lambda: "sm/E0031/alert/grid_peak" in got and len(got) >= 3, 10), got
    finally:
        client.disconnect()
        client.loop_stop()
    assert got["sm/E0031/alert/grid_peak"] == "OFF"  # retained: the last state
    assert json.loads(got["sm/E0031/alert/grid_peak/attributes"])["state"] == "resolved"
    disc = json.loads(got["homeassistant/binary_sensor/smartmeter_E0031/alert_grid_peak/config"])
    assert disc["state_topic"] == "sm/E0031/alert/grid_peak" and disc["device_class"] == "problem"
    assert disc["device"]["identifiers"] == ["smartmeter_E0031"]


def test_the_post_processor_alerts_when_the_meter_goes_quiet(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cfg = loads("[alert:quiet]\nwhen = meter offline for 1 s\n")
    pp = PostProcessor(cfg, sinks=[])
    try:
        pp.on_reading(reading(0, 1.0))
        pp.tick()
        assert pp.alerts is not None and not pp.alerts.active["quiet"]
        assert wait_for(lambda: pp.tick() or (pp.alerts is not None and pp.alerts.active["quiet"]), 10)
        pp.on_reading(reading(5, 1.0))
        pp.tick()
        assert not pp.alerts.active["quiet"]
    finally:
        pp.close()
    assert "alert quiet firing: quiet: no valid reading for" in caplog.text
    assert "alert quiet resolved" in caplog.text
