"""Alert delivery in one thread behind a bounded queue: the log, a webhook (POST JSON), MQTT.

    webhook body: {"alert": "grid_peak", "state": "firing", "active": true, "message": "...",
                   "title": "smartmeter alert grid_peak", "meter": "E0031...", "time": "2026-...Z"}
    MQTT: <prefix>/<meter id>/alert/<name>  retained ON / OFF, and .../alert/<name>/message (the text);
          Home Assistant discovery: one binary_sensor per alert (device class problem)

Nothing here ever blocks the caller; a full queue drops its oldest notice (counted), each alert may
send at most RATE_MAX notices per RATE_WINDOW_S (more are dropped, counted and said in the log),
and the webhook URL is never logged beyond its host (it may carry credentials or a webhook id).
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from app.alerts.rules import RESOLVED, Notice
from app.alerts.settings import AlertConfig, safe_url
from app.logutil import RateLimited

if TYPE_CHECKING:
    from app.config import MqttConfig

log = logging.getLogger("app.alerts")
QUEUE_SIZE = 100
RATE_MAX = 6
RATE_WINDOW_S = 600.0
WEBHOOK_TIMEOUT_S = 5.0
WEBHOOK_TRIES = 3
RETRY_S = 5.0


class Notifier:
    """Delivers notices of the configured alerts; `send` never blocks."""

    def __init__(self, alerts: tuple[AlertConfig, ...], mqtt: MqttConfig | None, version: str = "",
                 log_interval_s: float = 60.0) -> None:
        self.alerts = {a.name: a for a in alerts}
        self.mqtt_cfg = mqtt
        self.version = version
        self.q: queue.Queue[tuple[Notice, str, dict[str, str]] | None] = queue.Queue(QUEUE_SIZE)
        self.dropped = 0  # queue full
        self.limited = 0  # over the per-alert rate
        self.failed = 0  # webhook deliveries given up
        self.sent = 0
        self._recent: dict[str, deque[float]] = {}
        self._log = RateLimited(log, log_interval_s)
        self._client: Any = None
        self._announced: set[tuple[str, str]] = set()
        self.thread = threading.Thread(target=self._run, name="alerts", daemon=True)
        self.thread.start()

    def send(self, notice: Notice, meter_id: str, device: dict[str, str]) -> None:
        """Queue a notice (`device`: header/protocol of the meter for HA discovery); never blocks."""
        while True:
            try:
                self.q.put_nowait((notice, meter_id, device))
                return
            except queue.Full:
                try:
                    self.q.get_nowait()
                    self.dropped += 1
                    self._log.warning("full", "alerts are falling behind: %d notices dropped", self.dropped)
                except queue.Empty:
                    pass

    def close(self, timeout_s: float) -> None:
        """Deliver what is queued within `timeout_s`, then stop."""
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass
        self.thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                break
            notice, meter_id, device = item
            try:
                self._deliver(notice, meter_id, device)
            except Exception:  # the top of this thread: one bad notice must not end the alerts
                self._log.log(logging.ERROR, "deliver", "alert %s could not be delivered", notice.alert,
                              exc_info=True)
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _allowed(self, name: str, now: float) -> bool:
        recent = self._recent.setdefault(name, deque())
        while recent and now - recent[0] > RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= RATE_MAX:
            self.limited += 1
            self._log.warning(f"rate {name}", "alert %s flaps: more than %d notices in %.0f min, %d held back",
                              name, RATE_MAX, RATE_WINDOW_S / 60, self.limited)
            return False
        recent.append(now)
        return True

    def _deliver(self, notice: Notice, meter_id: str, device: dict[str, str]) -> None:
        cfg = self.alerts[notice.alert]
        if "mqtt" in cfg.notify:  # the retained state always follows, whatever the rate
            self._mqtt(cfg, notice, meter_id, device)
        if not self._allowed(notice.alert, time.monotonic()):
            return
        self.sent += 1
        if "log" in cfg.notify:
            log.log(logging.INFO if notice.state == RESOLVED else logging.WARNING, "alert %s %s: %s", notice.alert,
                    notice.state, notice.message)
        if "webhook" in cfg.notify:
            self._webhook(cfg, notice, meter_id)

    def _webhook(self, cfg: AlertConfig, notice: Notice, meter_id: str) -> None:
        body = json.dumps({
            "alert": notice.alert, "state": notice.state, "active": notice.active, "message": notice.message,
            "title": notice.title, "meter": meter_id,
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        }).encode()
        u = urllib.parse.urlsplit(cfg.url)
        netloc = u.hostname or ""
        if u.port:
            netloc += f":{u.port}"
        url = urllib.parse.urlunsplit((u.scheme, netloc, u.path, u.query, ""))
        headers = {"Content-Type": "application/json", "Title": notice.title,
                   "Tags": "white_check_mark" if notice.state == RESOLVED else "warning"}  # ntfy reads these
        if u.username:
            pair = f"{urllib.parse.unquote(u.username)}:{urllib.parse.unquote(u.password or '')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        where = safe_url(cfg.url)
        for attempt in range(1, WEBHOOK_TRIES + 1):
            req = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=WEBHOOK_TIMEOUT_S) as resp:
                    resp.read(1024)
                return
            except urllib.error.HTTPError as exc:
                why = f"HTTP {exc.code}"
                exc.close()
                if exc.code < 500 and exc.code != 429:
                    break  # the URL or its credentials are wrong: retrying will not help
            except (urllib.error.URLError, OSError) as exc:
                why = str(getattr(exc, "reason", exc))
            if attempt < WEBHOOK_TRIES and self.q.empty():
                time.sleep(RETRY_S * attempt)
        self.failed += 1
        self._log.warning(f"webhook {cfg.name}", "alert %s: webhook %s failed (%s); %d notices lost so far",
                          cfg.name, where, why, self.failed)

    def _mqtt(self, cfg: AlertConfig, notice: Notice, meter_id: str, device: dict[str, str]) -> None:
        if self.mqtt_cfg is None:
            return
        from app.sinks.mqtt_topics import Topics, device_block, node_id

        if self._client is None:
            from app.sinks.mqtt import make_client

            self._client = make_client(self.mqtt_cfg, f"{self.mqtt_cfg.client_id or 'smartmeter'}-alerts"[:64])
            self._client.connect_async(self.mqtt_cfg.host, self.mqtt_cfg.port, int(self.mqtt_cfg.keepalive))
            self._client.loop_start()
        topics = Topics.of(self.mqtt_cfg.prefix, meter_id)
        state_topic = f"{topics.base}/alert/{cfg.name}"
        qos = self.mqtt_cfg.state_qos
        if self.mqtt_cfg.discovery and (meter_id, cfg.name) not in self._announced:
            self._announced.add((meter_id, cfg.name))
            node = node_id(topics.meter_id)
            config = {
                "name": f"Alert {cfg.name}", "unique_id": f"{node}_alert_{cfg.name}", "state_topic": state_topic,
                "payload_on": "ON", "payload_off": "OFF", "device_class": "problem",
                "json_attributes_topic": f"{state_topic}/attributes",
                "device": device_block(meter_id, device.get("header", ""), device.get("protocol", ""),
                                       self.version),
            }
            self._client.publish(f"{self.mqtt_cfg.discovery_prefix}/binary_sensor/{node}/alert_{cfg.name}/config",
                                 json.dumps(config), qos, True)
        self._client.publish(state_topic, "ON" if notice.active else "OFF", qos, True)
        self._client.publish(f"{state_topic}/attributes", json.dumps(
            {"state": notice.state, "message": notice.message}), qos, True)
