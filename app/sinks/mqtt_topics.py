"""Pure MQTT converters: readings, relay states and raw adapter topics -> harmonized messages.

The harmonized profile (one topic per quantity, the same for every meter):

    <prefix>/<meter id>/<group>/<name>   {"timestamp": <unix s>, "value": <number>}
    <prefix>/<meter id>/relay/<name>/state   ON | OFF            (retained)
    <prefix>/<meter id>/relay/<name>/mode    AUTO | ON | OFF     (retained)
    <prefix>/<meter id>/relay/<name>/reason  JSON: reason, at, state, mode, pending, device (retained)
    <prefix>/<meter id>/relay/<name>/device  ON | OFF | UNKNOWN  network relays: the device read back (retained)
    <prefix>/<meter id>/relay/<name>/set     ON | OFF | AUTO     (commands, subscribed)
    <prefix>/<meter id>/status               online | offline    (retained, Last Will)
    <prefix>/<meter id>/availability         online | offline    (retained: the data is fresh / stale)
    <prefix>/<meter id>/info                 JSON                (retained)

Nothing here imports paho: the sink in `app.sinks.mqtt` only moves these messages.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any, NamedTuple

from app.obis import FIELDS, GAS_FIELD, HEAT_FIELD, WATER_FIELD
from app.records import ReaderStatus, Reading

if TYPE_CHECKING:
    from app.control.override import DeviceView

ONLINE = "online"
OFFLINE = "offline"
COMMANDS = frozenset({"ON", "OFF", "AUTO"})
_TOPIC_UNSAFE_RE = re.compile(r"[/+#\s\x00-\x1f]+")
_NODE_UNSAFE_RE = re.compile(r"[^A-Za-z0-9_-]+")
_OWN_LEAVES = frozenset({"status", "info", "availability", "state", "set", "mode", "reason"})
MODE_OPTIONS = ("AUTO", "ON", "OFF")
REASON_MAX = 255  # Home Assistant's limit for a state
MIN_YEAR = 2000  # a Tasmota "Time" before this is a clock that was never set
_TASMOTA_LEVELS = frozenset({"tele", "SENSOR", "stat", "STATE"})
_MANUFACTURERS = {
    "FLU": "Fluvius",
    "ISK": "Iskraemeco",
    "KFM": "Kaifa",
    "KMP": "Kamstrup",
    "LGF": "Landis+Gyr",
    "XMX": "Landis+Gyr",
    "SAG": "Sagemcom",
    "Ene": "Sagemcom",
    "ESY": "EasyMeter",
    "AUX": "Aux",
}


class Message(NamedTuple):
    """One MQTT publication."""

    topic: str
    payload: str
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One harmonized value topic: where it goes, which named field feeds it, and how it looks in HA."""

    topic: str  # "<group>/<name>" below "<prefix>/<meter id>/"
    field: str  # the Reading.fields name
    scale: float  # field unit -> topic unit
    unit: str  # unit of the published value
    device_class: str
    state_class: str
    label: str  # Home Assistant entity name

    @property
    def key(self) -> str:
        """Short identifier used in discovery object ids ("power_in", "voltage_l1", "gas_volume")."""
        group, name = self.topic.split("/", 1)
        return name if name.startswith(group) else f"{group}_{name}"


def _power(topic: str, field: str, label: str) -> TopicSpec:
    return TopicSpec(topic, field, 1000.0, "W", "power", "measurement", label)


def _energy(topic: str, field: str, label: str) -> TopicSpec:
    return TopicSpec(topic, field, 1.0, "kWh", "energy", "total_increasing", label)


# The profile, as data. Power (kW in Reading.fields) is published in W; everything else as is.
TOPICS: tuple[TopicSpec, ...] = (
    _power("power/power_in", "actual_total_consumption", "Power in"),
    _power("power/power_out", "actual_total_injection", "Power out"),
    *(_power(f"power/power_in_l{n}", f"actual_l{n}_consumption", f"Power in L{n}") for n in (1, 2, 3)),
    *(_power(f"power/power_out_l{n}", f"actual_l{n}_injection", f"Power out L{n}") for n in (1, 2, 3)),
    _energy("energy/energy_in", "total_consumption", "Energy in"),
    _energy("energy/energy_in_t1", "total_consumption_day", "Energy in T1"),
    _energy("energy/energy_in_t2", "total_consumption_night", "Energy in T2"),
    _energy("energy/energy_out", "total_injection", "Energy out"),
    _energy("energy/energy_out_t1", "total_injection_day", "Energy out T1"),
    _energy("energy/energy_out_t2", "total_injection_night", "Energy out T2"),
    *(TopicSpec(f"voltage/l{n}", f"l{n}_voltage", 1.0, "V", "voltage", "measurement", f"Voltage L{n}")
      for n in (1, 2, 3)),
    *(TopicSpec(f"current/l{n}", f"l{n}_current", 1.0, "A", "current", "measurement", f"Current L{n}")
      for n in (1, 2, 3)),
    _power("demand/current_average", "current_average_demand", "Average demand (quarter hour)"),
    _power("demand/maximum_month", "maximum_demand_month", "Maximum demand this month"),
    TopicSpec("gas/volume", GAS_FIELD.name, 1.0, "m3", "gas", "total_increasing", "Gas"),
    TopicSpec("water/volume", WATER_FIELD.name, 1.0, "m3", "water", "total_increasing", "Water"),
    TopicSpec("heat/energy", HEAT_FIELD.name, 1.0, "GJ", "energy", "total_increasing", "Heat"),
)
TOPICS_BY_PATH: dict[str, TopicSpec] = {t.topic: t for t in TOPICS}
_HA_UNITS = {"m3": "m³"}  # Home Assistant only accepts m³ for device_class gas
_OBIS_BY_FIELD = {f.name: f"1-0:{f.cde}" for f in FIELDS} | {
    GAS_FIELD.name: "0-n:24.2.1 / 24.2.3 / 24.3.0 (M-Bus gas)",
    WATER_FIELD.name: "0-n:24.2.1 (M-Bus water, device type 6/7)",
    HEAT_FIELD.name: "0-n:24.2.1 (M-Bus heat, device type 4/12/13)",
}


def obis_source(spec: TopicSpec) -> str:
    """The OBIS code (or codes) a topic comes from, for documentation."""
    if spec.field == "total_consumption":
        return "1-0:1.8.0, else 1.8.1 + 1.8.2"
    if spec.field == "total_injection":
        return "1-0:2.8.0, else 2.8.1 + 2.8.2"
    return _OBIS_BY_FIELD.get(spec.field, "")


# ---------------------------------------------------------------- names


def sanitize(part: str) -> str:
    """One topic level from free text: no '/', '+', '#', whitespace or control characters."""
    cleaned = _TOPIC_UNSAFE_RE.sub("_", part.strip()).strip("_")
    return cleaned or "unknown"


def node_id(meter_id: str) -> str:
    """Home Assistant node id / unique-id stem for a meter ([A-Za-z0-9_-] only)."""
    return "smartmeter_" + (_NODE_UNSAFE_RE.sub("_", meter_id).strip("_") or "unknown")


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names of one meter under one prefix."""

    prefix: str
    meter_id: str  # already sanitized

    @classmethod
    def of(cls, prefix: str, meter_id: str) -> Topics:
        """Topics for a raw meter id (sanitized here)."""
        return cls(prefix, sanitize(meter_id))

    @property
    def base(self) -> str:
        """`<prefix>/<meter id>`."""
        return f"{self.prefix}/{self.meter_id}"

    @property
    def status(self) -> str:
        """Retained online/offline, the Last Will topic."""
        return f"{self.base}/status"

    @property
    def info(self) -> str:
        """Retained info JSON."""
        return f"{self.base}/info"

    @property
    def availability(self) -> str:
        """Retained online/offline of the data: offline while it is stale."""
        return f"{self.base}/availability"

    @property
    def set_filter(self) -> str:
        """Subscription for relay commands."""
        return f"{self.base}/relay/+/set"

    def value(self, spec: TopicSpec) -> str:
        """A value topic."""
        return f"{self.base}/{spec.topic}"

    def relay_state(self, name: str) -> str:
        """Retained ON/OFF of one relay."""
        return f"{self.base}/relay/{name}/state"

    def relay_mode(self, name: str) -> str:
        """Retained AUTO/ON/OFF of one relay."""
        return f"{self.base}/relay/{name}/mode"

    def relay_reason(self, name: str) -> str:
        """Retained JSON: why one relay last switched, and any command waiting for its protection."""
        return f"{self.base}/relay/{name}/reason"

    def relay_device(self, name: str) -> str:
        """Retained ON/OFF/UNKNOWN: a network relay's device as read back."""
        return f"{self.base}/relay/{name}/device"

    def relay_set(self, name: str) -> str:
        """Command topic of one relay."""
        return f"{self.base}/relay/{name}/set"

    def relay_of_set(self, topic: str) -> str | None:
        """The relay name of a `.../relay/<name>/set` topic of this meter, else None."""
        head, tail = f"{self.base}/relay/", "/set"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        name = topic[len(head):-len(tail)]
        return name if name and "/" not in name else None


# ---------------------------------------------------------------- values


def unix_s(at: datetime) -> int:
    """Unix seconds of an aware datetime (naive ones are taken as local time)."""
    return int(at.timestamp())


def number(value: float) -> float | int:
    """A JSON-friendly number: float noise rounded away, whole numbers as int."""
    rounded = round(value, 6)
    return int(rounded) if rounded.is_integer() and abs(rounded) < 2**53 else rounded


def value_payload(value: float, timestamp_s: int) -> str:
    """`{"timestamp": <unix s>, "value": <number>}`."""
    return json.dumps({"timestamp": timestamp_s, "value": number(value)})


def reading_values(reading: Reading) -> list[tuple[TopicSpec, float, int]]:
    """The profile topics present in a reading: (spec, value in topic unit, unix timestamp)."""
    out = []
    ts = unix_s(reading.time)
    gas_ts = unix_s(reading.gas_time) if reading.gas_time is not None else ts
    for spec in TOPICS:
        raw = reading.fields.get(spec.field)
        if raw is None or not math.isfinite(raw * spec.scale):
            continue
        out.append((spec, raw * spec.scale, gas_ts if spec.field == GAS_FIELD.name else ts))
    return out


def reading_messages(reading: Reading, prefix: str, qos: int = 0, retain: bool = False) -> list[Message]:
    """A reading as harmonized value messages; only what the meter sent."""
    topics = Topics.of(prefix, reading.meter_id)
    return [
        Message(topics.value(spec), value_payload(value, ts), qos, retain)
        for spec, value, ts in reading_values(reading)
    ]


def relay_messages(topics: Topics, states: Mapping[str, bool], qos: int = 1) -> list[Message]:
    """Retained ON/OFF state messages for relays."""
    return [
        Message(topics.relay_state(name), "ON" if on else "OFF", qos, True) for name, on in states.items()
    ]


def status_message(topics: Topics, online: bool, qos: int = 1) -> Message:
    """Retained online/offline."""
    return Message(topics.status, ONLINE if online else OFFLINE, qos, True)


def availability_message(topics: Topics, fresh: bool, qos: int = 1) -> Message:
    """Retained online (data arriving) / offline (stale: no reading within stale_after, meter disconnected)."""
    return Message(topics.availability, ONLINE if fresh else OFFLINE, qos, True)


def relay_detail_messages(
    topics: Topics, name: str, mode: str, state: bool, reason: str, at: datetime | None, pending: str,
    qos: int = 1, device: DeviceView | None = None,
) -> list[Message]:
    """Retained mode and reason messages of one relay (and, for a network relay, its device's read-back)."""
    body: dict[str, Any] = {
        "reason": reason[:REASON_MAX],
        "at": at.isoformat(timespec="seconds") if at is not None else None,
        "state": "ON" if state else "OFF",
        "mode": mode,
        "pending": pending[:REASON_MAX],
    }
    if device is not None:
        body["device"] = {"type": device.kind, "state": device.state, "mismatches": device.mismatches,
                          "last_mismatch": device.last_mismatch, "error": device.error[:REASON_MAX]}
    msgs = [
        Message(topics.relay_mode(name), mode, qos, True),
        Message(topics.relay_reason(name), json.dumps(body), qos, True),
    ]
    if device is not None:
        msgs.append(Message(topics.relay_device(name), device.state.upper(), qos, True))
    return msgs


def parse_command(payload: bytes | str) -> str | None:
    """`ON`, `OFF` or `AUTO` from a set payload (case and blanks ignored), else None."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    except UnicodeDecodeError:
        return None
    mode = text.strip().upper()
    return mode if mode in COMMANDS else None


def info_payload(
    version: str,
    meter_id: str,
    protocol: str,
    header: str,
    status: ReaderStatus | None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """The retained info JSON: software version, protocol, meter header and reader counters."""
    info: dict[str, Any] = {
        "version": version,
        "meter_id": meter_id,
        "protocol": protocol or (status.protocol if status else ""),
        "header": header or (status.header if status else ""),
    }
    if status is not None:
        info.update(
            telegrams_ok=status.frames_ok,
            frames_bad=status.frames_bad,
            crc_errors=status.crc_errors,
            parse_errors=status.parse_errors,
            decrypt_errors=status.decrypt_errors,
            dropped=status.dropped,
            lag_mean_s=None if status.lag_mean_s is None else round(status.lag_mean_s, 3),
            lag_max_s=None if status.lag_max_s is None else round(status.lag_max_s, 3),
            reader_connected=status.connected,
        )
    if extra:
        info.update(extra)
    return json.dumps(info, sort_keys=True)


# ---------------------------------------------------------------- Home Assistant discovery


def manufacturer(header: str) -> str:
    """Manufacturer from the 3-letter FLAG id of a DSMR header (`/FLU5\\...` -> Fluvius)."""
    code = header.lstrip("/")[:3]
    if len(code) < 3:
        return "unknown"
    return _MANUFACTURERS.get(code, code)


def device_block(meter_id: str, header: str, protocol: str, version: str) -> dict[str, Any]:
    """The `device` object shared by every entity of one meter."""
    return {
        "identifiers": [node_id(meter_id)],
        "name": f"Smart meter {meter_id}",
        "manufacturer": manufacturer(header),
        "model": header.lstrip("/") or protocol.upper() or "smart meter",
        "sw_version": version,
    }


def _availability(topics: Topics) -> dict[str, str]:
    return {
        "availability_topic": topics.status,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
    }


def _data_availability(topics: Topics) -> dict[str, Any]:
    """Values are available while the appliance is online *and* its data is fresh."""
    return {
        "availability": [
            {"topic": t, "payload_available": ONLINE, "payload_not_available": OFFLINE}
            for t in (topics.status, topics.availability)
        ],
        "availability_mode": "all",
    }


def expire_after_s(stale_after_s: float, publish_interval_s: float) -> int:
    """HA's `expire_after` for value sensors: stale_after plus one publish interval, whole seconds."""
    return max(1, math.ceil(stale_after_s + max(0.0, publish_interval_s)))


def sensor_discovery(
    topics: Topics, spec: TopicSpec, device: Mapping[str, Any], discovery_prefix: str, qos: int = 1,
    expire_after: int | None = None,
) -> Message:
    """Retained `homeassistant/sensor/<node>/<key>/config` for one value topic."""
    node = node_id(topics.meter_id)
    config: dict[str, Any] = {
        "name": spec.label,
        "unique_id": f"{node}_{spec.key}",
        "state_topic": topics.value(spec),
        "value_template": "{{ value_json.value }}",
        "device_class": spec.device_class,
        "state_class": spec.state_class,
        "unit_of_measurement": _HA_UNITS.get(spec.unit, spec.unit),
        "device": dict(device),
        **_data_availability(topics),
    }
    if expire_after is not None:
        config["expire_after"] = expire_after
    return Message(f"{discovery_prefix}/sensor/{node}/{spec.key}/config", json.dumps(config), qos, True)


def relay_discovery(
    topics: Topics, relay: str, device: Mapping[str, Any], discovery_prefix: str, qos: int = 1
) -> list[Message]:
    """Per relay, retained: a switch (ON/OFF override), a button (back to AUTO), a select showing and
    setting the mode (AUTO/ON/OFF) and a sensor with the last switch reason."""
    node = node_id(topics.meter_id)
    key = _NODE_UNSAFE_RE.sub("_", relay)
    switch = {
        "name": f"Relay {relay}",
        "unique_id": f"{node}_relay_{key}",
        "state_topic": topics.relay_state(relay),
        "command_topic": topics.relay_set(relay),
        "payload_on": "ON",
        "payload_off": "OFF",
        "state_on": "ON",
        "state_off": "OFF",
        "optimistic": False,
        "device": dict(device),
        **_availability(topics),
    }
    button = {
        "name": f"Relay {relay} automatic",
        "unique_id": f"{node}_relay_{key}_auto",
        "command_topic": topics.relay_set(relay),
        "payload_press": "AUTO",
        "device": dict(device),
        **_availability(topics),
    }
    select = {
        "name": f"Relay {relay} mode",
        "unique_id": f"{node}_relay_{key}_mode",
        "state_topic": topics.relay_mode(relay),
        "command_topic": topics.relay_set(relay),
        "options": list(MODE_OPTIONS),
        "optimistic": False,
        "icon": "mdi:auto-mode",
        "device": dict(device),
        **_availability(topics),
    }
    reason = {
        "name": f"Relay {relay} reason",
        "unique_id": f"{node}_relay_{key}_reason",
        "state_topic": topics.relay_reason(relay),
        "value_template": "{{ (value_json.pending or value_json.reason)[:255] }}",
        "json_attributes_topic": topics.relay_reason(relay),
        "icon": "mdi:information-outline",
        "device": dict(device),
        **_availability(topics),
    }
    return [
        Message(f"{discovery_prefix}/switch/{node}/{key}/config", json.dumps(switch), qos, True),
        Message(f"{discovery_prefix}/button/{node}/{key}_auto/config", json.dumps(button), qos, True),
        Message(f"{discovery_prefix}/select/{node}/{key}_mode/config", json.dumps(select), qos, True),
        Message(f"{discovery_prefix}/sensor/{node}/{key}_reason/config", json.dumps(reason), qos, True),
    ]


def relay_device_discovery(
    topics: Topics, relay: str, device: Mapping[str, Any], discovery_prefix: str, qos: int = 1
) -> Message:
    """A network relay's device as read back (ON / OFF / UNKNOWN), as a Home Assistant sensor, retained."""
    node = node_id(topics.meter_id)
    key = _NODE_UNSAFE_RE.sub("_", relay)
    config = {
        "name": f"Relay {relay} device",
        "unique_id": f"{node}_relay_{key}_device",
        "state_topic": topics.relay_device(relay),
        "json_attributes_topic": topics.relay_reason(relay),
        "json_attributes_template": "{{ (value_json.device or {}) | tojson }}",
        "icon": "mdi:lan-connect",
        "device": dict(device),
        **_availability(topics),
    }
    return Message(f"{discovery_prefix}/sensor/{node}/{key}_device/config", json.dumps(config), qos, True)


def discovery_messages(
    topics: Topics,
    specs: Iterable[TopicSpec],
    relays: Iterable[str],
    device: Mapping[str, Any],
    discovery_prefix: str,
    qos: int = 1,
    expire_after: int | None = None,
) -> list[Message]:
    """Discovery configs for the given value topics and relays."""
    out = [sensor_discovery(topics, s, device, discovery_prefix, qos, expire_after) for s in specs]
    for relay in relays:
        out.extend(relay_discovery(topics, relay, device, discovery_prefix, qos))
    return out


# ---------------------------------------------------------------- translator (raw topics -> profile)

# smartmeter-datacollector: smartmeter/<source>/<MeterDataPointType identifier>, W and Wh.
DATACOLLECTOR_MAP: dict[str, tuple[str, float]] = {
    "ACTIVE_POWER_P": ("power/power_in", 1.0),
    "ACTIVE_POWER_N": ("power/power_out", 1.0),
    **{f"ACTIVE_POWER_P_L{n}": (f"power/power_in_l{n}", 1.0) for n in (1, 2, 3)},
    **{f"ACTIVE_POWER_N_L{n}": (f"power/power_out_l{n}", 1.0) for n in (1, 2, 3)},
    "ACTIVE_ENERGY_P": ("energy/energy_in", 0.001),
    "ACTIVE_ENERGY_N": ("energy/energy_out", 0.001),
    **{f"VOLTAGE_L{n}": (f"voltage/l{n}", 1.0) for n in (1, 2, 3)},
    **{f"CURRENT_L{n}": (f"current/l{n}", 1.0) for n in (1, 2, 3)},
}


def is_harmonized(topic: str, prefix: str) -> bool:
    """True for a topic of our own profile (never translate those: it would loop)."""
    if not topic.startswith(prefix + "/"):
        return False
    levels = topic[len(prefix) + 1:].split("/")
    return len(levels) >= 3 or (len(levels) == 2 and levels[1] in _OWN_LEAVES)


def _json_object(payload: bytes | str) -> dict[str, Any] | None:
    try:
        obj = json.loads(payload)  # deeply nested JSON raises RecursionError: the caller counts it as bad
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def _finite(value: object, scale: float = 1.0) -> float | None:
    """`value` (number or numeric text) times `scale` if that is a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        f = float(value) * scale
    except (ValueError, OverflowError):
        return None
    return f if math.isfinite(f) else None


def translate_datacollector(
    topic: str, payload: bytes | str, prefix: str, now_s: int, qos: int = 0, retain: bool = False
) -> list[Message]:
    """`smartmeter/<id>/ACTIVE_POWER_P {"value": 1, "timestamp": 1629055611}` -> harmonized message.

    Unknown identifiers, malformed payloads and our own topics give an empty list.
    """
    if is_harmonized(topic, prefix):
        return []
    levels = topic.split("/")
    if len(levels) != 3:
        return []
    mapped = DATACOLLECTOR_MAP.get(levels[2])
    obj = _json_object(payload)
    if mapped is None or obj is None:
        return []
    target, scale = mapped
    value = _finite(obj.get("value"), scale)
    if value is None:
        return []
    ts = _finite(obj.get("timestamp"))
    out = f"{prefix}/{sanitize(levels[1])}/{target}"
    return [Message(out, value_payload(value, int(ts) if ts is not None else now_s), qos, retain)]


def parse_key_map(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str, float]]:
    """Config pairs (key, "group/topic[*factor]") -> (key, group/topic, factor)."""
    out = []
    for key, target in pairs:
        path, _, factor = target.partition("*")
        out.append((key, path.strip().strip("/"), float(factor) if factor.strip() else 1.0))
    return out


def lookup_key(obj: Mapping[str, Any], key: str) -> object:
    """A dotted key ("z.Pi") followed exactly, or a bare key ("Pi") at the top or one level deep."""
    if "." in key:
        node: object = obj
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        return node
    if key in obj:
        return obj[key]
    for sub in obj.values():
        if isinstance(sub, Mapping) and key in sub:
            return sub[key]
    return None


def tasmota_time(text: object, tz: tzinfo | None) -> int | None:
    """Tasmota's "Time" (device local time, no zone) as unix seconds; `tz` None = system local time.

    None when absent, malformed or before 2000 (a device without a clock yet sends 1970 or year 1)."""
    if not isinstance(text, str):
        return None
    try:
        at = datetime.fromisoformat(text)
        if at.year < MIN_YEAR:
            return None
        if at.tzinfo is None:
            at = at.replace(tzinfo=tz) if tz is not None else at.astimezone()
        return unix_s(at)
    except (ValueError, OverflowError, OSError):  # e.g. "0001-01-01T00:00:00" (no clock yet) has no local time
        return None


def translate_tasmota(
    topic: str,
    payload: bytes | str,
    prefix: str,
    key_map: Iterable[tuple[str, str, float]],
    now_s: int,
    tz: tzinfo | None = None,
    qos: int = 0,
    retain: bool = False,
) -> list[Message]:
    """`tele/<device>/SENSOR {"Time": "...", "z": {"Pi": 12}}` -> one message per mapped key present."""
    if is_harmonized(topic, prefix):
        return []
    levels = topic.split("/")
    obj = _json_object(payload)
    if len(levels) < 2 or obj is None:
        return []
    named = [lv for lv in levels if lv and lv not in _TASMOTA_LEVELS]
    device = sanitize(named[0] if named else levels[0])
    ts = tasmota_time(obj.get("Time"), tz)
    stamp = ts if ts is not None else now_s
    out = []
    for key, target, factor in key_map:
        value = _finite(lookup_key(obj, key), factor)
        if value is not None:
            payload_out = value_payload(value, stamp)
            out.append(Message(f"{prefix}/{device}/{target}", payload_out, qos, retain))
    return out
