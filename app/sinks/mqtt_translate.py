"""[mqtt_translate]: republish other adapters' raw topics in the harmonized profile.

Runs its own paho client (own network thread, no Last Will) so it works from start-up, before
or without any reading of our own meter. Two raw shapes are understood:

    smartmeter/<id>/ACTIVE_POWER_P  {"value": 1, "timestamp": 1629055611}     (smartmeter-datacollector)
    tele/<device>/SENSOR            {"Time": "2021-09-24T17:56:38", "z": {"Pi": 12}}   (Tasmota SML)

Loop guard: a message on one of our own harmonized topics (`<prefix>/<id>/<group>/<name>`,
`<prefix>/<id>/status|info`, relay topics) is never translated, whatever the subscriptions.

No message stops it: a payload that makes the converter fail is counted as `bad`, logged at a
limited rate, and its error kept as `last_error`; `health()` goes into the sink's `info` JSON.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import tzinfo
from typing import Any

import paho.mqtt.client as paho

from app.config import MqttConfig, TranslateConfig
from app.logutil import RateLimited
from app.sinks.mqtt import LOG_INTERVAL_S, _RateLimit, guarded, make_client
from app.sinks.mqtt_topics import (
    Message,
    is_harmonized,
    parse_key_map,
    translate_datacollector,
    translate_tasmota,
)

log = logging.getLogger(__name__)


class Translator:
    """Subscribes to the raw topics and republishes each value in the harmonized profile."""

    def __init__(self, cfg: MqttConfig, tcfg: TranslateConfig, tz: tzinfo | None = None) -> None:
        self.cfg = cfg
        self.tcfg = tcfg
        self.tz = tz
        self.key_map = parse_key_map(tcfg.tasmota_map)
        self.received = 0
        self.published = 0
        self.ignored = 0
        self.dropped = 0
        self.bad = 0  # messages the converter failed on
        self.callback_errors = 0  # exceptions caught at the top of a paho callback
        self.last_error = ""
        self.callback_log = RateLimited(log, LOG_INTERVAL_S)
        self._connected = False
        self._closed = False
        self._lock = threading.Lock()
        self._ignore_log = _RateLimit(LOG_INTERVAL_S)
        client_id = f"{cfg.client_id}-translate" if cfg.client_id else ""
        self._client = make_client(cfg, client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._started = False

    @property
    def connected(self) -> bool:
        """Whether the translator's client is connected."""
        return self._connected

    def health(self) -> dict[str, Any]:
        """Counters for the info JSON: messages ok / ignored / bad, the last error."""
        return {"connected": self._connected, "received": self.received, "published": self.published,
                "ignored": self.ignored, "bad": self.bad + self.callback_errors, "dropped": self.dropped,
                "last_error": self.last_error}

    def start(self) -> None:
        """Connect in the background (never blocks; retries with backoff)."""
        if self._started:
            return
        self._started = True
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=int(self.cfg.keepalive))
        self._client.loop_start()
        log.info("MQTT translate: subscribing to %s", ", ".join(self._filters()) or "nothing")

    def close(self) -> None:
        """Disconnect and stop the network thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
        log.info("MQTT translate: %d received, %d published, %d ignored, %d bad, %d dropped",
                 self.received, self.published, self.ignored, self.bad + self.callback_errors, self.dropped)

    def translate(self, topic: str, payload: bytes, now_s: int) -> list[Message]:
        """The harmonized messages for one raw message (pure apart from choosing the shape)."""
        prefix, qos, retain = self.cfg.prefix, self.cfg.qos, self.cfg.retain
        if is_harmonized(topic, prefix):
            return []
        if any(paho.topic_matches_sub(f, topic) for f in self.tcfg.datacollector_topics):
            out = translate_datacollector(topic, payload, prefix, now_s, qos, retain)
            if out:
                return out
        if any(paho.topic_matches_sub(f, topic) for f in self.tcfg.tasmota_topics):
            return translate_tasmota(topic, payload, prefix, self.key_map, now_s, self.tz, qos, retain)
        return []

    def _filters(self) -> list[str]:
        return list(dict.fromkeys((*self.tcfg.datacollector_topics, *self.tcfg.tasmota_topics)))

    @guarded("translator on_connect")
    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason_code: Any, properties: object
    ) -> None:
        if reason_code.is_failure:
            log.warning("MQTT translate: broker refused the connection: %s", reason_code)
            return
        self._connected = True
        filters = self._filters()
        if filters:
            client.subscribe([(f, self.cfg.qos) for f in filters])
        log.info("MQTT translate: connected to %s:%d", self.cfg.host, self.cfg.port)

    @guarded("translator on_disconnect")
    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason_code: Any, properties: object
    ) -> None:
        self._connected = False
        if not self._closed:
            log.warning("MQTT translate: disconnected (%s); reconnecting", reason_code)

    @guarded("translator on_message")
    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received += 1
            topic = msg.topic
            try:
                out = self.translate(topic, msg.payload, int(time.time()))
            except (ValueError, TypeError, ArithmeticError, RecursionError, UnicodeError) as exc:
                self.bad += 1
                self.last_error = f"{topic[:120]}: {type(exc).__name__}: {str(exc)[:200]}"
                self.callback_log.warning("bad", "MQTT translate: bad message (%d so far): %s",
                                          self.bad, self.last_error)
                return
            if not out:
                self.ignored += 1
                if not is_harmonized(topic, self.cfg.prefix) and self._ignore_log.ready(time.monotonic()):
                    log.info("MQTT translate: nothing to translate in %s %r (rate-limited)",
                             topic[:120], msg.payload[:80])
                return
            for m in out:
                info = client.publish(m.topic, m.payload, m.qos, m.retain)
                if info.rc == paho.MQTT_ERR_SUCCESS:
                    self.published += 1
                else:
                    self.dropped += 1
