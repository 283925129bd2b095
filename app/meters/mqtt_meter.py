"""MQTT meters (`protocol = mqtt`): values a device publishes (Shelly EM/3EM, Home Assistant, the WAGO guide's).

    [meter:pv]
    protocol = mqtt
    topic_power = pv/meter/power           ; a number or JSON ({"power_kw": 2.5, "voltage": 230.2})
    topic_energy = pv/meter/energy         ; topic_energy_export, topic_voltage, topic_current too
    topic_status = pv/meter/status         ; online / offline (true/false, {"online": ...})
    power_unit = W                         ; W | kW for plain numbers and power/activePower
    host = ...                             ; default: [mqtt]'s broker (port, username, password likewise)
    preset = shelly_gen1                   ; shelly_gen1 | shelly_gen2 | home_assistant (see README)

A reading is made on every message that carries power (every message, when no topic carries power),
with the latest value of each other quantity. paho is imported only in the meter's own process; its
callbacks only queue the message (bounded), so no callback can raise into paho's thread. The mapping of
payloads to quantities is pure (app.meters.payloads, `quantities_of` here).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from app import logutil
from app.errors import ConfigError
from app.meters.payloads import PayloadError, parse, status
from app.meters.sample import Sample

if TYPE_CHECKING:
    from app.config import MqttConfig, Section
    from app.meters import MeterSpec
    from app.meters.runner import Output

log = logging.getLogger("app.meters.mqtt")
DEFAULT_POLL_INTERVAL = None  # pushed to
DEFAULT_ROLE = "building"
PRESETS = ("", "shelly_gen1", "shelly_gen2", "home_assistant")
TOPIC_KEYS = {"power_w": "topic_power", "import_kwh": "topic_energy", "export_kwh": "topic_energy_export",
              "voltage_v": "topic_voltage", "current_a": "topic_current"}
ENTITY_KEYS = {"power_w": "entity_power", "import_kwh": "entity_energy", "export_kwh": "entity_energy_export",
               "voltage_v": "entity_voltage", "current_a": "entity_current"}
KEYS = frozenset({*TOPIC_KEYS.values(), *ENTITY_KEYS.values(), "topic_status", "power_unit", "energy_unit",
                  "host", "port", "username", "password", "preset", "device", "channel", "component",
                  "statestream_prefix", "qos"})
QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True)
class Topic:
    """One subscription: what it carries (None: JSON with any quantities; "status"; "unit:<q>") and its unit."""

    topic: str
    quantity: str | None
    unit: str | None = None


@dataclass(frozen=True)
class MqttMeterSettings:
    """The mqtt keys of [meter:NAME] (host "" and port 0: [mqtt]'s broker, filled in at config load)."""

    topics: tuple[Topic, ...]
    power_unit: str = "W"
    energy_unit: str = "kWh"
    host: str = ""
    port: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    ca_file: str = ""
    qos: int = 0
    own_broker: bool = False


def preset_topics(preset: str, device: str, channel: int, component: str, prefix: str,
                  entities: dict[str, str]) -> tuple[Topic, ...]:
    """The subscriptions of a preset (pure)."""
    if preset == "shelly_gen1":  # Shelly EM / 3EM, Gen1 MQTT: plain numbers, energy counters in Wh
        base = f"shellies/{device}/emeter/{channel}"
        return (Topic(f"{base}/power", "power_w", "W"), Topic(f"{base}/total", "import_kwh", "Wh"),
                Topic(f"{base}/total_returned", "export_kwh", "Wh"), Topic(f"{base}/voltage", "voltage_v"),
                Topic(f"{base}/current", "current_a"), Topic(f"shellies/{device}/online", "status"))
    if preset == "shelly_gen2":  # Shelly Pro 3EM / Pro EM, Gen2+: status/em:0 and status/emdata:0 JSON
        kind_, _colon, idx = component.partition(":")
        data = f"{kind_}data:{idx}"
        return (Topic(f"{device}/status/{component}", None), Topic(f"{device}/status/{data}", None),
                Topic(f"{device}/online", "status"))
    if preset == "home_assistant":  # the MQTT statestream integration: <prefix>/<domain>/<object>/state
        out = []
        for quantity, entity in entities.items():
            domain, _dot, obj = entity.partition(".")
            out.append(Topic(f"{prefix}/{domain}/{obj}/state", quantity))
            out.append(Topic(f"{prefix}/{domain}/{obj}/unit_of_measurement", f"unit:{quantity}"))
        return tuple(out)
    return ()


def parse_settings(sec: Section, name: str) -> MqttMeterSettings:
    """The mqtt keys: topic_*, topic_status, power_unit, energy_unit, preset (+device/channel/component/entity_*),
    host, port, username, password, qos."""
    preset = sec.choice("preset", "", PRESETS)
    device = sec.text("device", "")
    channel = sec.integer("channel", 0, lo=0, hi=5)
    component = sec.get("component", "em:0", _component)
    prefix = sec.text("statestream_prefix", "homeassistant").strip("/")
    entities = {q: e for q, key in ENTITY_KEYS.items() if (e := sec.get(key, "", _entity))}
    if preset.startswith("shelly") and not device:
        raise ConfigError(f"[{sec.name}] device: missing (the Shelly's id, e.g. shellyem-C45BBE6B1234)",
                          sec.name, "device")
    if preset == "home_assistant" and not entities:
        raise ConfigError(f"[{sec.name}] entity_power: missing (e.g. sensor.pv_power)", sec.name, "entity_power")
    topics = list(preset_topics(preset, device, channel, component, prefix, entities))
    for quantity, key in TOPIC_KEYS.items():
        topic = sec.get(key, "", _topic)
        if topic:
            topics = [t for t in topics if t.quantity != quantity]
            topics.append(Topic(topic, quantity))
    status_topic = sec.get("topic_status", "", _topic)
    if status_topic:
        topics = [t for t in topics if t.quantity != "status"] + [Topic(status_topic, "status")]
    if not any(t.quantity not in ("status",) for t in topics):
        raise ConfigError(f"[{sec.name}] topic_power: missing (or topic_energy, ..., or a preset)", sec.name,
                          "topic_power")
    host = sec.text("host", "")
    return MqttMeterSettings(
        topics=tuple(topics),
        power_unit={"w": "W", "kw": "kW"}[sec.choice("power_unit", "w", ("w", "kw"))],
        energy_unit={"wh": "Wh", "kwh": "kWh"}[sec.choice("energy_unit", "kwh", ("wh", "kwh"))],
        host=host,
        port=sec.integer("port", 0, lo=0, hi=65535),
        username=sec.text("username", ""),
        password=sec.text("password", "", env=f"SMARTMETER_METER_{name.upper()}_PASSWORD"),
        qos=sec.integer("qos", 0, lo=0, hi=2),
        own_broker=bool(host),
    )


def _topic(text: str) -> str:
    if "#" in text or "+" in text or not text or "\x00" in text or len(text.encode()) > 65535:
        raise ValueError("expected one topic (no wildcards)")
    return text


def _entity(text: str) -> str:
    domain, dot, obj = text.partition(".")
    if not dot or not domain.isidentifier() or not obj.isidentifier():
        raise ValueError("expected a Home Assistant entity id such as sensor.pv_power")
    return text


def _component(text: str) -> str:
    kind_, colon, idx = text.partition(":")
    if kind_ not in ("em", "em1") or not colon or not idx.isdigit():
        raise ValueError("expected em:0 (Pro 3EM) or em1:0 / em1:1 (Pro EM)")
    return text


def with_broker(specs: tuple[MeterSpec, ...], mqtt: MqttConfig) -> tuple[MeterSpec, ...]:
    """MQTT meters without their own host get [mqtt]'s broker (host, port, username, password, TLS)."""
    out = []
    for spec in specs:
        s = spec.settings
        if spec.protocol == "mqtt" and isinstance(s, MqttMeterSettings):
            if not s.own_broker:
                s = replace(s, host=mqtt.host, port=s.port or mqtt.port, username=s.username or mqtt.username,
                            password=s.password or mqtt.password, tls=mqtt.tls, ca_file=mqtt.ca_file)
            elif not s.port:
                s = replace(s, port=1883)
            spec = replace(spec, settings=s)
        out.append(spec)
    return tuple(out)


# --- the mapping (pure) ----------------------------------------------------------------------------------


class Mapper:
    """Messages -> Samples: the latest value of each quantity, a Sample when power comes (or anything,
    when no topic carries power); units learned from Home Assistant's unit_of_measurement topics."""

    def __init__(self, s: MqttMeterSettings) -> None:
        self.s = s
        self.by_topic = {t.topic: t for t in s.topics}
        self.latest: dict[str, float] = {}
        self.units: dict[str, str] = {}
        self.power_topics = any(t.quantity in ("power_w", None) for t in s.topics)

    def feed(self, topic: str, payload: bytes) -> Sample | bool | None:
        """A Sample to deliver, True/False for a status message, None when nothing is to be done.
        PayloadError for a payload that gives nothing usable."""
        t = self.by_topic.get(topic)
        if t is None:
            return None
        if t.quantity == "status":
            return status(payload)
        if t.quantity is not None and t.quantity.startswith("unit:"):
            self.units[t.quantity[5:]] = payload.decode("utf-8", "replace").strip().strip('"')
            return None
        q = t.quantity
        unit = t.unit or (self.units.get(q) if q else None)
        power_unit = unit if q == "power_w" and unit else self.s.power_unit
        energy_unit = unit if q in ("import_kwh", "export_kwh") and unit else self.s.energy_unit
        got = parse(payload, q, power_unit, energy_unit)
        self.latest.update(got)
        if "power_w" in got or not self.power_topics:
            return Sample(**self.latest)  # type: ignore[arg-type]
        return None


# --- I/O: the meter's own process ------------------------------------------------------------------------


def run(spec: MeterSpec, out: Output, stop: Callable[[], bool]) -> None:
    """Subscribe and turn messages into readings until stop(); broker trouble is an error status."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    s: MqttMeterSettings = spec.settings
    inbox: queue.Queue[tuple[str, Any, Any]] = queue.Queue(QUEUE_SIZE)
    dropped = [0]

    def post(kind_: str, a: Any = None, b: Any = None) -> None:
        try:
            inbox.put_nowait((kind_, a, b))
        except queue.Full:
            dropped[0] += 1

    def on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        post("connect", getattr(rc, "is_failure", False), str(rc))

    def on_disconnect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any = None) -> None:
        post("disconnect", str(rc))

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        post("message", msg.topic, bytes(msg.payload))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"smartmeter-meter-{spec.name}")
    if s.username:
        client.username_pw_set(s.username, s.password or None)
    if s.tls:
        client.tls_set(ca_certs=s.ca_file or None)
    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_message = on_message
    client.reconnect_delay_set(1, 30)
    where = f"{s.host}:{s.port}"
    mapper = Mapper(s)
    limited = logutil.RateLimited(log, 60.0)
    bad = 0
    try:
        client.connect_async(s.host, s.port, keepalive=30)
        client.loop_start()
        started = time.monotonic()
        connected = False
        while not stop():
            try:
                kind_, a, b = inbox.get(timeout=0.1)
            except queue.Empty:
                if not connected and time.monotonic() - started > 10:
                    out.error(f"cannot connect to the broker at {where}")
                    started = time.monotonic()
                continue
            if kind_ == "connect":
                if a:
                    out.error(f"the broker at {where} refused the connection: {b}")
                    continue
                connected = True
                client.subscribe([(t.topic, s.qos) for t in s.topics])
                log.info("meter %s: subscribed to %d topics at %s", spec.name, len(s.topics), where)
            elif kind_ == "disconnect":
                connected = False
                started = time.monotonic()
                out.error(f"lost the broker at {where} ({a}); reconnecting")
            else:
                try:
                    result = mapper.feed(a, b)
                except PayloadError as exc:
                    bad += 1
                    limited.warning("bad", "meter %s: topic %s: %s (%d bad payloads so far)", spec.name, a, exc, bad)
                    continue
                if result is False:
                    out.error(f"the meter reports offline on {a}")
                elif isinstance(result, Sample):
                    out.sample(result)
            if dropped[0]:
                limited.warning("dropped", "meter %s: %d messages dropped (inbox full)", spec.name, dropped[0])
    finally:
        client.loop_stop()
        client.disconnect()
