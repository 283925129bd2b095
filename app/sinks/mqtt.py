"""MQTT sink: harmonized value topics, relay state and override, status/info, Home Assistant discovery.

paho-mqtt runs its own network thread (`loop_start`); this sink's methods run in the
post-processor's worker thread and never wait for the broker except in `close()` (bounded).

Connection lifecycle: the Last Will topic `<prefix>/<meter id>/status` needs the meter id,
which is only known from the first reading, so the client is *built* (TLS files checked) in
the constructor but *connects* when the first reading arrives. Should a later reading carry
another meter id, the sink says `offline` for the old id and reconnects with the new will.
Until the broker has acknowledged the connection (CONNACK) the latest reading is *held* and
published on connect; a reading replaced while the broker stays away is dropped and counted
(values are live data; the InfluxDB spool is the history). State, mode, reason, status,
availability, info and discovery are all retained and are published again from the current
state on every (re)connect, so nothing else needs queueing.

Stale data: no reading for `stale_after` (wall clock) or the reader reporting the meter
disconnected sets `<base>/availability` to `offline`, which makes every value sensor in Home
Assistant unavailable (its discovery also carries `expire_after`); the next reading sets it
back to `online`. No paho callback lets an exception escape (counted, logged rate-limited).
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from app.config import MqttConfig, TranslateConfig
from app.errors import ConfigError
from app.logutil import RateLimited
from app.records import ReaderStatus, Reading
from app.sinks import Sink
from app.sinks.mqtt_topics import (
    Message,
    Topics,
    TopicSpec,
    availability_message,
    device_block,
    discovery_messages,
    expire_after_s,
    info_payload,
    parse_command,
    reading_messages,
    reading_values,
    relay_detail_messages,
    relay_device_discovery,
    relay_messages,
    sanitize,
    status_message,
)

if TYPE_CHECKING:
    from app.control.override import RelayView

log = logging.getLogger(__name__)

MAX_QUEUED_MESSAGES = 1000  # paho's outgoing queue (in-flight QoS>0 and bursts), bounded
INFO_INTERVAL_S = 10.0
LOG_INTERVAL_S = 60.0
CLOSE_TIMEOUT_S = 1.0  # the post-processor gives all sinks 1.5 s together at shutdown
CONNECT_TIMEOUT_S = 5.0

CommandCallback = Callable[[str, str], object]
F = TypeVar("F", bound=Callable[..., None])


def guarded(what: str) -> Callable[[F], F]:
    """Decorate a paho callback method: an exception is counted in `self.callback_errors` and logged
    (rate-limited), never raised into paho's network thread, which it would end for good."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(self: Any, *args: Any) -> None:
            try:
                fn(self, *args)
            except Exception as exc:  # the top of a callback: paho's thread must survive anything
                self.callback_errors += 1
                self.last_error = f"{what}: {type(exc).__name__}: {str(exc)[:200]}"
                self.callback_log.log(logging.ERROR, what, "MQTT: %s failed (%d so far): %s", what,
                                      self.callback_errors, self.last_error, exc_info=True)

        return inner  # type: ignore[return-value]

    return wrap


class _RateLimit:
    """True at most once per interval (monotonic seconds)."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = -float("inf")

    def ready(self, now: float) -> bool:
        """Whether the interval has passed since the last True; marks it if so."""
        if now - self._last < self.interval_s:
            return False
        self._last = now
        return True


def make_client(cfg: MqttConfig, client_id: str = "") -> paho.Client:
    """A paho 2.x client with credentials, TLS and reconnect backoff set; not connected yet.

    Raises OSError / ssl.SSLError for unreadable TLS files (a configuration error).
    """
    client = paho.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    if cfg.username:
        client.username_pw_set(cfg.username, cfg.password or None)
    if cfg.tls:
        client.tls_set(
            ca_certs=cfg.ca_file or None,
            certfile=cfg.cert_file or None,
            keyfile=cfg.key_file or None,
        )
    client.reconnect_delay_set(min_delay=1, max_delay=max(1, int(cfg.reconnect_max)))
    client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
    client.connect_timeout = CONNECT_TIMEOUT_S
    return client


class MqttSink(Sink):
    """Publishes readings in the harmonized profile and relays overrides from `.../relay/<name>/set`."""

    name = "mqtt"
    lossless = False  # live data: the InfluxDB spool is the history

    def __init__(
        self,
        cfg: MqttConfig,
        translate: TranslateConfig,
        relay_names: list[str],
        on_command: CommandCallback | None,
        version: str,
        clock: Callable[[], float] = time.monotonic,
        stale_after: float = 30.0,
    ) -> None:
        self.cfg = cfg
        self.stale_after = stale_after
        self.relay_names = list(relay_names)
        self.on_command = on_command
        self.version = version
        self._clock = clock
        self._lock = threading.RLock()
        self._client: paho.Client | None = None
        self._probe_tls()
        self._topics: Topics | None = None
        self._connected = False
        self._closed = False
        self._header = ""
        self._protocol = ""
        self._relays: dict[str, bool] = {}
        self._published_relays: dict[str, bool] = {}
        self._specs: dict[str, TopicSpec] = {}  # value topics seen so far (for discovery)
        self._discovered: set[str] = set()
        self._relays_discovered = False
        self._devices_discovered: set[str] = set()  # network relays whose device sensor was announced
        self._device: dict[str, Any] = {}
        self._reader_status: ReaderStatus | None = None
        self._info_dirty = False
        self._info_last = -float("inf")
        self._pending: Reading | None = None  # the latest reading not published yet
        self._last_value_publish = -float("inf")
        self._last_data: float | None = None  # clock() of the last reading
        self._stale = False  # no reading within stale_after, or the meter is disconnected
        self._meter_state: str | None = None  # a [meter:NAME] meter's status JSON (retained on <base>/meter)
        self._views: dict[str, RelayView] = {}
        self._published_views: dict[str, RelayView] = {}
        self.published = 0
        self.published_info = 0
        self.dropped = 0  # value messages dropped while the broker was away, or with paho's queue full
        self._dropped_reported = 0
        self.commands = 0
        self.rejected_commands = 0
        self.connects = 0
        self.callback_errors = 0
        self.last_error = ""
        self.callback_log = RateLimited(log, LOG_INTERVAL_S)
        self._command_log = RateLimited(log, LOG_INTERVAL_S)
        self._drop_log = _RateLimit(LOG_INTERVAL_S)
        self._fail_log = _RateLimit(LOG_INTERVAL_S)
        self.translator: Any = None
        if translate.enabled:
            from app.sinks.mqtt_translate import Translator

            self.translator = Translator(cfg, translate)
            self.translator.start()

    # ------------------------------------------------------------ Sink API (worker thread)

    def write(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        """Publish a reading (subject to publish_interval; held until connected) and changed relay states."""
        if self._closed:
            return
        self._ensure_meter(reading)  # outside the lock: it may wait for the network thread
        now = self._clock()
        with self._lock:
            self._header = reading.header or self._header
            self._protocol = reading.protocol or self._protocol
            self._relays.update(relays)
            new_specs = [spec for spec, _, _ in reading_values(reading) if spec.topic not in self._specs]
            for spec in new_specs:
                self._specs[spec.topic] = spec
            if self._connected and new_specs:
                self._publish_discovery()
            self._publish_relays(changed_only=True)
            self._last_data = now
            if self._stale:
                self._set_stale(False, "readings again")
            self._offer(reading, now)

    def relay_event(self, states: Mapping[str, bool], at: datetime, reason: str) -> None:
        """Relay states changed outside a reading (override, stale data, shutdown): publish them."""
        if self._closed:
            return
        with self._lock:
            self._relays.update(states)
            self._publish_relays(changed_only=True)

    def relay_detail(self, view: Mapping[str, RelayView]) -> None:
        """Each relay's mode and last switch reason (and a command waiting for its protection)."""
        if self._closed:
            return
        with self._lock:
            self._views.update(view)
            self._relays.update({name: v.state for name, v in view.items()})
            self._publish_relays(changed_only=True)
            self._publish_views(changed_only=True)

    def status(self, status: ReaderStatus) -> None:
        """Remember the reader counters (info JSON at most every 10 s); a disconnected meter is stale data."""
        with self._lock:
            self._reader_status = status
            self._info_dirty = True
            if not status.connected and not self._stale:
                self._set_stale(True, "the reader reports the meter disconnected")
        self._maybe_publish_info(self._clock())

    def meter_status(self, meter: str, status: str, reason: str) -> None:
        """A [meter:NAME] meter's status: retained JSON on `<prefix>/<NAME>/meter` ({"status", "reason"});
        offline or error also marks its values unavailable."""
        if self._closed:
            return
        import json

        with self._lock:
            self._meter_state = json.dumps({"status": status, "reason": reason})  # also sent on (re)connect
            if self._topics is None:
                return
            self._send(Message(f"{self._topics.base}/meter", self._meter_state, self.cfg.state_qos, True))
            if status != "online" and not self._stale:
                self._set_stale(True, f"meter {meter or self._topics.meter_id} {status}")

    def tick(self, now: float) -> None:
        """Flush a reading held back by publish_interval, mark stale data, the info JSON, report drops."""
        if self._closed:
            return
        with self._lock:
            if self._pending is not None and self._connected and self._due(now):
                self._flush(now)
            if (not self._stale and self._last_data is not None
                    and now - self._last_data > self.stale_after):
                self._set_stale(True, f"no reading for {now - self._last_data:.0f} s "
                                      f"(stale_after is {self.stale_after:g} s)")
        self._maybe_publish_info(now)
        self._report_drops(now)

    def close(self) -> None:
        """Publish `offline` (retained), disconnect, stop the network thread; bounded time; idempotent."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            if self._pending is not None and not self._connected:
                self.dropped += len(reading_values(self._pending))  # held, but the broker never came
            self._pending = None
        self._stop_client()
        if self.translator is not None:
            self.translator.close()
        if self.dropped:
            log.info("MQTT: %d value messages were dropped while the broker was unreachable", self.dropped)

    # ------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """Whether the client is connected to the broker right now."""
        return self._connected

    @property
    def topics(self) -> Topics | None:
        """The topic names in use (None before the first reading)."""
        return self._topics

    def _probe_tls(self) -> None:
        """Build a throw-away client so bad TLS files fail at start-up (ConfigError), not later."""
        if self.cfg.tls:
            try:
                make_client(self.cfg)
            except (OSError, ssl.SSLError) as exc:
                c = self.cfg
                files = f"ca_file={c.ca_file!r} cert_file={c.cert_file!r} key_file={c.key_file!r}"
                raise ConfigError(f"[mqtt] tls: cannot load {files}: {exc}", "mqtt", "ca_file") from exc

    def _ensure_meter(self, reading: Reading) -> None:
        """Connect on the first reading; reconnect with a new will if the meter id changes."""
        meter_id = sanitize(reading.meter_id)
        if self._topics is not None and self._topics.meter_id == meter_id:
            return
        if self._topics is not None:
            log.warning("MQTT: meter id changed from %s to %s; reconnecting", self._topics.meter_id, meter_id)
            self._stop_client()
        with self._lock:
            self._specs.clear()
            self._published_relays.clear()
            self._published_views.clear()
            self._topics = Topics(self.cfg.prefix, meter_id)
            self._device = device_block(meter_id, reading.header, reading.protocol, self.version)
            self._start_client()

    def _start_client(self) -> None:
        assert self._topics is not None
        client = make_client(self.cfg, self.cfg.client_id)
        will = status_message(self._topics, online=False, qos=self.cfg.state_qos)
        client.will_set(will.topic, will.payload, will.qos, will.retain)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        self._client = client
        self._connected = False
        client.connect_async(self.cfg.host, self.cfg.port, keepalive=int(self.cfg.keepalive))
        client.loop_start()
        log.info(
            "MQTT: connecting to %s:%d as %s (will on %s)",
            self.cfg.host, self.cfg.port, self.cfg.client_id or "<random id>", will.topic,
        )

    def _stop_client(self) -> None:
        client, topics = self._client, self._topics
        if client is None or topics is None:
            return
        self._client = None
        if self._connected:
            offline = status_message(topics, online=False, qos=self.cfg.state_qos)
            info = client.publish(*offline)
            try:
                info.wait_for_publish(timeout=CLOSE_TIMEOUT_S)
            except (RuntimeError, ValueError) as exc:
                log.warning("MQTT: could not publish offline status: %s", exc)
        self._connected = False
        client.disconnect()
        client.loop_stop()

    @guarded("on_connect")
    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason_code: Any, properties: object
    ) -> None:
        if reason_code.is_failure:
            if self._fail_log.ready(self._clock()):
                log.warning("MQTT: broker %s:%d refused the connection: %s", self.cfg.host, self.cfg.port,
                            reason_code)
            return
        with self._lock:
            if client is not self._client or self._topics is None:
                return
            self._connected = True
            self.connects += 1
            topics = self._topics
            client.subscribe(topics.set_filter, qos=self.cfg.state_qos)
            self._send(status_message(topics, online=True, qos=self.cfg.state_qos))
            if self._send(self._info_message()):
                self.published_info += 1
            self._info_dirty = False
            self._info_last = self._clock()
            self._discovered.clear()
            self._relays_discovered = False
            self._devices_discovered.clear()
            self._publish_discovery()
            self._published_relays.clear()
            self._publish_relays(changed_only=False)
            self._published_views.clear()
            self._publish_views(changed_only=False)
            self._send(availability_message(topics, not self._stale, self.cfg.state_qos))
            if self._meter_state is not None:
                self._send(Message(f"{topics.base}/meter", self._meter_state, self.cfg.state_qos, True))
            if self._pending is not None:  # held until the broker acknowledged: publish it now
                self._flush(self._clock())
        log.info("MQTT: connected to %s:%d, publishing under %s", self.cfg.host, self.cfg.port, topics.base)

    @guarded("on_disconnect")
    def _on_disconnect(
        self, client: paho.Client, userdata: object, flags: object, reason_code: Any, properties: object
    ) -> None:
        if client is not self._client:
            return
        was = self._connected
        self._connected = False
        if was and not self._closed:
            log.warning("MQTT: disconnected from %s:%d (%s); reconnecting with backoff up to %g s",
                        self.cfg.host, self.cfg.port, reason_code, self.cfg.reconnect_max)

    @guarded("on_connect_fail")
    def _on_connect_fail(self, client: paho.Client, userdata: object) -> None:
        if self._fail_log.ready(self._clock()):
            log.warning("MQTT: cannot reach broker %s:%d; retrying with backoff up to %g s",
                        self.cfg.host, self.cfg.port, self.cfg.reconnect_max)

    @guarded("on_message")
    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        topics = self._topics
        if topics is None:
            return
        name = topics.relay_of_set(msg.topic)
        if name is None:
            return
        mode = parse_command(msg.payload)
        why = ("retained (publish commands without retain)" if msg.retain
               else f"unknown relay {name[:40]!r} (known: {', '.join(self.relay_names) or 'none'})"
               if name not in self.relay_names
               else f"payload {msg.payload[:40]!r} is not ON, OFF or AUTO" if mode is None else "")
        if why or mode is None:
            self.rejected_commands += 1
            self._command_log.warning("rejected", "MQTT: ignored command on %s: %s (%d ignored so far)",
                                      msg.topic[:120], why, self.rejected_commands)
            return
        self.commands += 1
        self._command_log.log(logging.INFO, f"cmd {name}", "MQTT: relay %s: %s requested", name, mode)
        if self.on_command is None:
            self._command_log.warning("no controller", "MQTT: no relay controller attached; command %s for %s "
                                      "ignored", mode, name)
            return
        self.on_command(name, mode)  # queues it: the post-processor applies it under the relay's protection

    # ------------------------------------------------------------ publishing

    def _send(self, msg: Message) -> bool:
        """Hand one message to paho; False when it was not accepted (not connected, queue full)."""
        client = self._client
        if client is None or not self._connected:
            return False
        info = client.publish(msg.topic, msg.payload, msg.qos, msg.retain)
        return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def _due(self, now: float) -> bool:
        return self.cfg.publish_interval <= 0 or now - self._last_value_publish >= self.cfg.publish_interval

    def _offer(self, reading: Reading, now: float) -> None:
        """Make `reading` the latest to publish; publish it if connected and due (lock held)."""
        superseded, self._pending = self._pending, reading
        if not self._due(now):
            return
        if self._connected:
            self._flush(now)
        elif superseded is not None:  # it would have been published: the broker is away
            self.dropped += len(reading_values(superseded))
            self._last_value_publish = now

    def _flush(self, now: float) -> None:
        """Publish the held reading (lock held, connected)."""
        reading, self._pending = self._pending, None
        self._last_value_publish = now
        if reading is None:
            return
        for msg in reading_messages(reading, self.cfg.prefix, self.cfg.qos, self.cfg.retain):
            if self._send(msg):
                self.published += 1
            else:
                self.dropped += 1

    def _set_stale(self, stale: bool, why: str) -> None:
        """Mark the data stale (values unavailable in Home Assistant) or fresh again (lock held)."""
        self._stale = stale
        if stale:
            log.warning("MQTT: data is stale (%s): values marked unavailable", why)
        else:
            log.info("MQTT: %s: values available again", why)
        if self._topics is not None:
            self._send(availability_message(self._topics, not stale, self.cfg.state_qos))

    def _publish_views(self, changed_only: bool) -> None:
        if self._topics is None or not self._connected:
            return
        for name, v in self._views.items():
            if name not in self.relay_names or (changed_only and self._published_views.get(name) == v):
                continue
            msgs = relay_detail_messages(self._topics, name, v.mode, v.state, v.reason, v.at, v.pending,
                                         self.cfg.state_qos, v.device)
            if v.device is not None and self.cfg.discovery and name not in self._devices_discovered:
                msgs.insert(0, relay_device_discovery(self._topics, name, self._device, self.cfg.discovery_prefix,
                                                      self.cfg.state_qos))
                self._devices_discovered.add(name)
            if all([self._send(m) for m in msgs]):
                self._published_views[name] = v

    def _publish_relays(self, changed_only: bool) -> None:
        if self._topics is None or not self._connected:
            return
        changed = {
            name: on for name, on in self._relays.items()
            if not changed_only or self._published_relays.get(name) != on
        }
        for msg, (name, on) in zip(relay_messages(self._topics, changed, self.cfg.state_qos), changed.items(),
                                   strict=True):
            if self._send(msg):
                self._published_relays[name] = on

    def _publish_discovery(self) -> None:
        if not self.cfg.discovery or self._topics is None:
            return
        specs = [s for p, s in self._specs.items() if p not in self._discovered]
        relays = [] if self._relays_discovered else self.relay_names
        expire = expire_after_s(self.stale_after, self.cfg.publish_interval)
        for msg in discovery_messages(self._topics, specs, relays, self._device, self.cfg.discovery_prefix,
                                      self.cfg.state_qos, expire):
            self._send(msg)
        self._discovered.update(s.topic for s in specs)
        self._relays_discovered = True

    def _info_message(self) -> Message:
        assert self._topics is not None
        payload = info_payload(
            self.version, self._topics.meter_id, self._protocol, self._header, self._reader_status,
            {"mqtt_dropped": self.dropped, "mqtt_published": self.published,
             "mqtt_callback_errors": self.callback_errors, "data_stale": self._stale,
             "relays": sorted(self.relay_names),
             **({"translator": self.translator.health()} if self.translator is not None else {})},
        )
        return Message(self._topics.info, payload, self.cfg.state_qos, True)

    def _maybe_publish_info(self, now: float) -> None:
        with self._lock:
            if not self._info_dirty or not self._connected or now - self._info_last < INFO_INTERVAL_S:
                return
            if self._send(self._info_message()):
                self.published_info += 1
                self._info_dirty = False
                self._info_last = now

    def _report_drops(self, now: float) -> None:
        if self.dropped > self._dropped_reported and self._drop_log.ready(now):
            log.warning("MQTT: broker %s:%d not connected: dropped %d value messages (%d in total); the "
                        "latest values are held and published once connected", self.cfg.host, self.cfg.port,
                        self.dropped - self._dropped_reported, self.dropped)
            self._dropped_reported = self.dropped
