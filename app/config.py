"""INI -> frozen dataclasses.

Every key has a documented default (see config.sample.ini); a missing file, an unknown
section or key, a wrong type or an out-of-range value is one `ConfigError` that names
`[section] key` and the bad value. Secrets may come from the environment, which wins:
INFLUXDB_TOKEN, INFLUXDB_PASSWORD, MQTT_PASSWORD, SMARTMETER_KEY, SMARTMETER_AUTH_KEY.
"""

from __future__ import annotations

import configparser
import difflib
import os
import re
import ssl
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from datetime import time as dtime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.alerts.settings import AlertConfig, parse_alert, safe_url
from app.control.capacity import CapacityConfig, parse_capacity
from app.control.conditions import Condition, parse_condition
from app.control.daily import MinDaily, parse_min_daily
from app.control.relays.settings import DeviceConfig, parse_device
from app.errors import ConfigError
from app.meters import ROLES, MeterSpec, SiteConfig, check_meters, meter_name, parse_meter, parse_site
from app.store.settings import HistoryConfig, parse_history
from app.tariffs.settings import TariffConfig, parse_tariff, resolve_tariffs
from app.web.settings import WebConfig, parse_web

T = TypeVar("T")
SECRET_KEYS = frozenset({"token", "password", "key", "auth_key"})
# Words a key name that holds a secret tends to contain; matched fuzzily (`pasword`, `tokn`).
_SECRET_PARTS = ("pass", "pwd", "token", "secret", "key", "auth", "cred", "priv", "salt", "bearer")
_SECRET_WORDS = ("password", "passwd", "passphrase", "pw", "token", "secret", "key", "apikey", "auth",
                 "credential", "credentials", "private", "bearer")
_PATH_SUFFIXES = ("_file", "_dir", "_path")
LUX_AUTH_KEY = "00112233445566778899AABBCCDDEEFF"

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|min|mins|m|h|hr|hours?|d)?\s*$", re.I)
_DURATION_UNITS = {"ms": 0.001, "s": 1, "sec": 1, "secs": 1, "min": 60, "mins": 60, "m": 60,
                   "h": 3600, "hr": 3600, "hour": 3600, "hours": 3600, "d": 86400}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(b|kb|k|mb|m|gb|g|kib|mib|gib)?\s*$", re.I)
_SIZE_UNITS = {"b": 1, "k": 1000, "kb": 1000, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
               "kib": 1024, "mib": 1024**2, "gib": 1024**3}
_SERIAL_RE = re.compile(r"^([5-8])([NEOMS])([12])$", re.I)
_HEX_KEY_RE = re.compile(r"^[0-9A-Fa-f]{32}$")
_HOURS_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_MAX_SWITCHES_RE = re.compile(r"^\s*(\d+)\s*(?:per|/)\s*(.+)$", re.I)


# ---------------------------------------------------------------- value parsers


def parse_duration(text: str) -> float:
    """`30 s`, `5 min`, `1 h`, `500 ms` or a bare number of seconds -> seconds."""
    m = _DURATION_RE.match(text)
    if m is None and _DURATION_RE.match(text.replace(",", ".", 1)):
        raise ValueError(f"decimal comma: write {text.strip().replace(',', '.', 1)!r}")
    if m is None:
        raise ValueError("expected a duration such as '30 s', '5 min' or '1 h'")
    unit = (m.group(2) or "s").lower()
    return float(m.group(1)) * _DURATION_UNITS[unit]


def parse_size(text: str) -> int:
    """`200 MB`, `64 KiB` or a bare number of bytes -> bytes."""
    m = _SIZE_RE.match(text)
    if m is None:
        raise ValueError("expected a size such as '200 MB'")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "b").lower()])


def parse_bool(text: str) -> bool:
    """yes/no, true/false, on/off, 1/0."""
    low = text.strip().lower()
    if low in ("yes", "true", "on", "1"):
        return True
    if low in ("no", "false", "off", "0"):
        return False
    raise ValueError("expected yes or no")


def parse_hours(text: str) -> tuple[dtime, dtime] | None:
    """`10:00-16:00` (meter local time; may wrap past midnight) or empty for always."""
    if not text.strip():
        return None
    m = _HOURS_RE.match(text)
    if m is None:
        raise ValueError("expected HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 24 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValueError("hours must be between 00:00 and 24:00")
    start = dtime(0, 0) if h1 == 24 else dtime(h1, m1)
    end = dtime(23, 59, 59, 999999) if h2 == 24 else dtime(h2, m2)
    if start == end:
        raise ValueError("the window is empty")
    return start, end


def parse_max_switches(text: str) -> tuple[int, float] | None:
    """`6 per h` -> (6, 3600.0); empty -> None (no cap)."""
    if not text.strip():
        return None
    m = _MAX_SWITCHES_RE.match(text)
    if m is None:
        raise ValueError("expected '<count> per <duration>', e.g. '6 per h'")
    window = m.group(2).strip()
    window_s = parse_duration(window if window[0].isdigit() else f"1 {window}")
    count = int(m.group(1))
    if count < 1 or window_s <= 0:
        raise ValueError("count and window must be positive")
    return count, window_s


def parse_hex_key(text: str) -> bytes | None:
    """32 hex digits (spaces allowed) -> 16 bytes; empty -> None."""
    compact = text.replace(" ", "").replace(":", "")
    if not compact:
        return None
    if not _HEX_KEY_RE.match(compact):
        raise ValueError("expected 32 hex digits (a 128-bit AES key)")
    return bytes.fromhex(compact)


# ---------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class MeterConfig:
    """[meter]: where the bytes come from and how to read them."""

    source: str = "/dev/ttyUSB0"
    protocol: str = "auto"  # auto | dsmr | dlms
    baudrate: str = "115200"  # a number or "auto"
    serial_format: str = "8N1"
    timezone: str = "Europe/Brussels"
    replay_speed: float = 0.0
    key: bytes | None = field(default=None, repr=False)
    auth_key: bytes | None = field(default=None, repr=False)
    profile: str = "auto"
    queue_size: int = 1000
    reconnect_max: float = 30.0
    read_timeout: float = 0.2
    max_frame: int = 16384
    max_power: float = 3 * 63 * 230.0  # W: what the connection can carry (plausibility gate)
    name: str = "grid"  # its name among the meters ([meter:NAME] sections, conditions like grid.export)
    role: str = "grid"

    @property
    def replay_path(self) -> str | None:
        """The capture path for `source = replay:PATH`, else None."""
        return self.source[len("replay:"):] if self.source.startswith("replay:") else None


@dataclass(frozen=True)
class GeneralConfig:
    """[general]: logging and housekeeping."""

    log_level: str = "INFO"
    log_interval: float = 60.0  # rate limit for repeated warnings and the status line
    stats_interval: float = 300.0
    meters_dir: str = ""  # more [meter:NAME] sections, one NAME.ini each (the web API writes them)


@dataclass(frozen=True)
class RelayConfig:
    """[relay:NAME]: one relay and its rules."""

    name: str
    pin: str
    active_high: bool = True
    safe_state: bool = False
    priority: int = 1
    on_when: Condition | None = None
    off_when: Condition | None = None
    min_on: float = 0.0
    min_off: float = 0.0
    max_switches: tuple[int, float] | None = None
    hours: tuple[dtime, dtime] | None = None
    sheddable: bool = False  # [capacity] peak shaving may switch it off
    min_daily: MinDaily | None = None  # run at least this long a day, by a deadline
    device: DeviceConfig | None = None  # a network relay (type = shelly | tasmota | tapo); None: GPIO


@dataclass(frozen=True)
class ControlConfig:
    """[control]: timing shared by all relays."""

    settle: float = 15.0
    stale_after: float = 30.0
    dry_run: bool = False
    override_min_interval: float = 5.0  # between two applied manual mode changes of one relay
    state_file: str = "/var/lib/smartmeter/control-state.json"  # min_daily run time today, kept over restarts


@dataclass(frozen=True)
class CsvConfig:
    """[csv]: one file per local day."""

    enabled: bool = False
    directory: str = "/var/lib/smartmeter/csv"
    interval: float = 60.0
    delimiter: str = ","
    decimal: str = "."
    flush_interval: float = 60.0


@dataclass(frozen=True)
class InfluxConfig:
    """[influxdb]: the v2 write API or the v1 /write endpoint."""

    enabled: bool = False
    url: str = "http://localhost:8086"
    api: str = "v2"
    token: str = field(default="", repr=False)
    org: str = ""
    bucket: str = "smartmeter"
    database: str = "smartmeter"
    username: str = ""
    password: str = field(default="", repr=False)
    retention_policy: str = ""
    measurement: str = "smartmeter"
    batch_size: int = 500
    flush_interval: float = 10.0
    timeout: float = 10.0
    spool_dir: str = "/var/lib/smartmeter/spool"
    spool_max: int = 200 * 10**6
    status_interval: float = 300.0


@dataclass(frozen=True)
class MqttConfig:
    """[mqtt]: harmonized topics, Home Assistant discovery, relay state and override."""

    enabled: bool = False
    host: str = "localhost"
    port: int = 1883
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    client_id: str = ""
    prefix: str = "smartmeter"
    publish_interval: float = 10.0  # Home Assistant's recorder stores every state change
    retain: bool = False
    qos: int = 0
    state_qos: int = 1
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    keepalive: float = 60.0
    reconnect_max: float = 60.0


@dataclass(frozen=True)
class TranslateConfig:
    """[mqtt_translate]: republish other adapters' raw topics in the harmonized profile."""

    enabled: bool = False
    datacollector_topics: tuple[str, ...] = ("smartmeter/+/+",)
    tasmota_topics: tuple[str, ...] = ("tele/+/SENSOR",)
    tasmota_map: tuple[tuple[str, str], ...] = (
        ("Pi", "power/power_in"),
        ("Po", "power/power_out"),
        ("E_in", "energy/energy_in"),
        ("E_out", "energy/energy_out"),
    )


@dataclass(frozen=True)
class Config:
    """The whole resolved configuration.

    Sections owned by other parts (history, tariffs, web) are parsed by the module next to
    their code and registered in `_SECTIONS` / `_PREFIXED` below: one line each."""

    path: str
    general: GeneralConfig
    meter: MeterConfig
    control: ControlConfig
    relays: tuple[RelayConfig, ...]
    csv: CsvConfig
    influxdb: InfluxConfig
    mqtt: MqttConfig
    mqtt_translate: TranslateConfig
    history: HistoryConfig = field(default_factory=HistoryConfig)
    tariff: TariffConfig = field(default_factory=TariffConfig)
    tariffs: tuple[TariffConfig, ...] = ()  # [tariff:NAME] sections, for comparison
    web: WebConfig = field(default_factory=WebConfig)
    meters: tuple[MeterSpec, ...] = ()  # [meter:NAME] sections: more meters, one reader process each
    site: SiteConfig = field(default_factory=SiteConfig)
    capacity: CapacityConfig = field(default_factory=CapacityConfig)
    alerts: tuple[AlertConfig, ...] = ()  # [alert:NAME] sections


# ---------------------------------------------------------------- section reader


class Section:
    """Typed access to one INI section that remembers which keys were read (section parsers
    living beside their code take one of these)."""

    def __init__(self, name: str, items: Mapping[str, str]) -> None:
        self.name = name
        self.items = dict(items)
        self.used: set[str] = set()

    def error(self, key: str, value: str, why: str) -> ConfigError:
        """`[section] key = 'value': why`, the value masked when the key holds a secret."""
        return ConfigError(f"[{self.name}] {key} = {_shown(key, value)}: {why}", self.name, key)

    def get(self, key: str, default: T, conv: Callable[[str], T], env: str | None = None,
            multiline: bool = False) -> T:
        """Read `key` through `conv` (ValueError -> ConfigError); `multiline` allows list values."""
        self.used.add(key)
        raw = os.environ.get(env) if env else None
        if raw is None:
            raw = self.items.get(key)
        if raw is None:
            return default
        raw = raw.strip()
        if "\x00" in raw:
            raise self.error(key, raw, "contains a NUL byte")
        if multiline and any(looks_secret(_key_name(line)) for line in raw.splitlines()[1:]):
            raise ConfigError(f"[{self.name}] {key}: an indented line below it sets a secret-looking key (not "
                              "shown); remove its indentation", self.name, key)
        if "\n" in raw and not multiline:
            raise ConfigError(
                f"[{self.name}] {key}: the value runs over {raw.count(chr(10)) + 1} lines (an indented line "
                "continues the value above it; the lines are not shown, they may hold a secret): remove the "
                "indentation", self.name, key)
        try:
            return conv(raw)
        except ValueError as exc:
            raise self.error(key, raw, str(exc) or "invalid value") from None

    def text(self, key: str, default: str, env: str | None = None) -> str:
        return self.get(key, default, lambda s: s, env)

    def choice(self, key: str, default: str, options: tuple[str, ...]) -> str:
        def conv(s: str) -> str:
            if s.lower() not in options:
                raise ValueError(f"expected one of {', '.join(options)}")
            return s.lower()

        return self.get(key, default, conv)

    def integer(self, key: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
        def conv(s: str) -> int:
            try:
                v = int(s)
            except ValueError:
                raise ValueError("expected a whole number") from None
            _check_range(v, lo, hi)
            return v

        return self.get(key, default, conv)

    def number(self, key: str, default: float, lo: float | None = None, hi: float | None = None) -> float:
        def conv(s: str) -> float:
            try:
                v = float(s)
            except ValueError:
                raise ValueError("expected a number") from None
            _check_range(v, lo, hi)
            return v

        return self.get(key, default, conv)

    def flag(self, key: str, default: bool) -> bool:
        return self.get(key, default, parse_bool)

    def duration(self, key: str, default: float, lo: float = 0.0, hi: float | None = None) -> float:
        def conv(s: str) -> float:
            v = parse_duration(s)
            _check_range(v, lo, hi)
            return v

        return self.get(key, default, conv)

    def check_unknown(self) -> None:
        """Any key no parser read: `[section] key = 'value': unknown key`, a near miss named (a secret masked)."""
        for key in self.items:
            if key not in self.used:
                raise ConfigError(f"[{self.name}] {key} = {_shown(key, self.items[key])}: unknown key"
                                  f"{_unknown_hint(self.name, key, self.used)}", self.name, key)


_URL_USERINFO = re.compile(r"(://)[^/@\s]*@")


def _shown(key: str, value: str) -> str:
    """A value as an error message may quote it: never a secret, never the lines an indent joined."""
    if is_secret_key(key):
        return repr("***")
    if "\n" in value.strip():
        return f"<{value.strip().count(chr(10)) + 1} lines, not shown>"
    return repr(_URL_USERINFO.sub(r"\1***@", value))  # http://user:secret@host -> http://***@host


def looks_secret(key: str) -> bool:
    """Whether a key name looks like it holds a secret (password, pasword, api_token, auth, ...)."""
    low = key.lower()
    if any(part in low for part in _SECRET_PARTS):
        return True
    words = [w for w in re.split(r"[^a-z0-9]+", low) if w] + [re.sub(r"[^a-z0-9]+", "", low)]
    words += [w.rstrip("0123456789").removesuffix("s") for w in words]  # tokens2, keys
    return any(_near(w, s) for w in words if w for s in _SECRET_WORDS)


def _near(word: str, secret: str) -> bool:
    """`word` is `secret` with a typo (close or an anagram), or holds such a piece (long secrets only)."""
    def close(a: str) -> bool:
        return difflib.SequenceMatcher(None, a, secret).ratio() >= 0.8 or sorted(a) == sorted(secret)

    if close(word):
        return True
    if len(secret) < 5:
        return False
    n = len(secret)
    return any(close(word[i:i + size]) for size in (n - 1, n, n + 1) for i in range(len(word) - size + 1))


def is_secret_key(key: str) -> bool:
    """A key whose value is never shown: a known secret or a secret-looking name (not a `*_file` path)."""
    return key in SECRET_KEYS or (looks_secret(key) and not key.lower().endswith(_PATH_SUFFIXES))


def _section_keys() -> dict[str, set[str]]:
    """The keys each plain section reads (found by parsing an empty section)."""
    keys: dict[str, set[str]] = {}
    for name, builder in _SECTIONS.items():
        sec = Section(name, {})
        try:
            builder(sec)
        except ConfigError:
            pass  # a section that needs keys: what it read so far is still a hint
        keys[name] = sec.used
    return keys


def _unknown_hint(section: str, key: str, known: set[str]) -> str:
    close = difflib.get_close_matches(key.lower(), sorted(known), n=1, cutoff=0.7)
    if close:
        return f" (did you mean {close[0]}?)"
    home = [f"[{name}]" for name, keys in _section_keys().items() if key.lower() in keys and name != section]
    if home:
        return f" (it belongs in {' or '.join(home)})"
    if known:
        return f" (known keys: {', '.join(sorted(known))})"
    return ""


def _check_range(v: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and v < lo:
        raise ValueError(f"must be at least {lo:g}")
    if hi is not None and v > hi:
        raise ValueError(f"must be at most {hi:g}")


def _baudrate(s: str) -> str:
    if s.lower() == "auto":
        return "auto"
    if not s.isdigit() or int(s) < 300 or int(s) > 4_000_000:
        raise ValueError("expected a baud rate such as 115200, 9600, 2400, or auto")
    return s


def _serial_format(s: str) -> str:
    if not _SERIAL_RE.match(s):
        raise ValueError("expected data bits, parity and stop bits such as 8N1, 7E1, 8E1")
    return s.upper()


def _timezone(s: str) -> str:
    try:
        ZoneInfo(s)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("unknown time zone (use an IANA name such as Europe/Brussels)") from None
    return s


_URL_SCHEMES = ("socket", "rfc2217", "loop", "spy", "hwgrep", "alt")


def _source(s: str) -> str:
    if not s:
        raise ValueError("empty source")
    if s.startswith("replay:"):
        path = s[len("replay:"):]
        if not path:
            raise ValueError("replay: needs a path, e.g. replay:/home/pi/capture.bin")
        if not os.path.exists(path) or os.path.isdir(path):  # a file or a FIFO
            raise ValueError(f"replay file {path!r} not found")
        return s
    scheme, sep, _rest = s.partition("://")
    if sep and scheme not in _URL_SCHEMES:
        raise ValueError(f"unknown URL scheme {scheme!r} (a device path, or one of "
                         f"{', '.join(x + '://' for x in _URL_SCHEMES)}, or replay:PATH)")
    return s


def _single_char(s: str) -> str:
    s = {"tab": "\t", "\\t": "\t", "semicolon": ";", "comma": ",", "space": " "}.get(s.lower(), s)
    if len(s) != 1:
        raise ValueError("expected one character (write ; as semicolon and a tab as tab)")
    return s


def _url(s: str) -> str:
    if not re.match(r"^https?://[^/\s]+", s):
        raise ValueError("expected an http:// or https:// URL")
    parts = urllib.parse.urlsplit(s)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535, e.g. http://localhost:8086") from None
    if not parts.hostname:
        raise ValueError("the URL has no host name, e.g. http://localhost:8086")
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535, e.g. http://localhost:8086")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials in the URL are not used: set username and password (or token) instead")
    return s.rstrip("/")


def _topics(s: str) -> tuple[str, ...]:
    topics = tuple(t.strip() for t in re.split(r"[,\n]", s) if t.strip())
    for topic in topics:
        levels = topic.split("/")
        for i, level in enumerate(levels):
            if ("#" in level and (level != "#" or i != len(levels) - 1)) or ("+" in level and level != "+"):
                raise ValueError(f"{topic!r} is not a valid MQTT topic filter")
    return topics


def _non_empty(s: str) -> str:
    if not s:
        raise ValueError("must not be empty")
    return s


def _profile(s: str) -> str:
    from app.protocols.cosem_profiles import PROFILE_NAMES

    names = tuple(dict.fromkeys(("auto", "smarty", *PROFILE_NAMES)))
    if s.lower() not in names:
        raise ValueError(f"unknown profile (known: {', '.join(names)})")
    return s.lower()


def _key_map(s: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for part in re.split(r"[,\n]", s):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"expected KEY=group/topic pairs, got {part.strip()!r}")
        k, v = (x.strip() for x in part.split("=", 1))
        if not k or not v:
            raise ValueError(f"expected KEY=group/topic pairs, got {part.strip()!r}")
        pairs.append((k, v))
    return tuple(pairs)


def _condition(s: str) -> Condition | None:
    return parse_condition(s) if s else None


# ---------------------------------------------------------------- sections


def _general(sec: Section) -> GeneralConfig:
    return GeneralConfig(
        log_level=sec.choice("log_level", "info", ("debug", "info", "warning", "error")).upper(),
        log_interval=sec.duration("log_interval", 60.0, lo=1.0),
        stats_interval=sec.duration("stats_interval", 300.0, lo=1.0),
        meters_dir=sec.text("meters_dir", ""),
    )


def _meter(sec: Section) -> MeterConfig:
    protocol = sec.choice("protocol", "auto", ("auto", "dsmr", "dlms"))
    key = sec.get("key", None, parse_hex_key, env="SMARTMETER_KEY")
    profile = sec.get("profile", "auto", _profile)
    default_auth = bytes.fromhex(LUX_AUTH_KEY) if profile == "smarty" else None
    return MeterConfig(
        source=sec.get("source", "/dev/ttyUSB0", _source),
        protocol=protocol,
        baudrate=sec.get("baudrate", "115200", _baudrate),
        serial_format=sec.get("serial_format", "8N1", _serial_format),
        timezone=sec.get("timezone", "Europe/Brussels", _timezone),
        replay_speed=sec.number("replay_speed", 0.0, lo=0.0, hi=10000.0),
        key=key,
        auth_key=sec.get("auth_key", default_auth, parse_hex_key, env="SMARTMETER_AUTH_KEY"),
        profile=profile,
        queue_size=sec.integer("queue_size", 1000, lo=1, hi=1_000_000),
        reconnect_max=sec.duration("reconnect_max", 30.0, lo=0.1, hi=3600.0),
        read_timeout=sec.duration("read_timeout", 0.2, lo=0.01, hi=1.0),  # SIGTERM must stop it within 2 s
        max_frame=sec.integer("max_frame", 16384, lo=256, hi=1 << 20),
        max_power=sec.number("max_power", 3 * 63 * 230.0, lo=100.0, hi=10_000_000.0),
        name=sec.get("name", "grid", meter_name),
        role=sec.choice("role", "grid", ROLES),
    )


def _control(sec: Section) -> ControlConfig:
    return ControlConfig(
        settle=sec.duration("settle", 15.0),
        stale_after=sec.duration("stale_after", 30.0, lo=1.0),
        dry_run=sec.flag("dry_run", False),
        override_min_interval=sec.duration("override_min_interval", 5.0, hi=3600.0),
        state_file=sec.get("state_file", "/var/lib/smartmeter/control-state.json", _state_path),
    )


def _state_path(s: str) -> str:
    """An absolute file path, or empty (not kept)."""
    if s and (not s.startswith("/") or s.endswith("/")):
        raise ValueError("expected an absolute file path (e.g. /var/lib/smartmeter/control-state.json) or nothing")
    return s


def _relay(sec: Section, name: str) -> RelayConfig:
    if not re.match(r"^[A-Za-z0-9_-]+$", name):
        raise ConfigError(
            f"[{sec.name}]: relay name {name!r} may only hold letters, digits, _ and -", sec.name
        )
    from app.control.relays import parse_pin  # pure: no gpiozero, no hardware

    kind, device = parse_device(sec, name)
    pin = sec.get("pin", "", _pin(parse_pin))
    if device is not None and pin:
        raise sec.error("pin", pin, f"a type = {kind} relay has no pin (remove it, or use type = gpio)")
    on_when = sec.get("on_when", None, _condition)
    off_when = sec.get("off_when", None, _condition)
    relay = RelayConfig(
        name=name,
        pin=pin,
        active_high=sec.flag("active_high", True),
        safe_state=sec.get("safe_state", False, _on_off),
        priority=sec.integer("priority", 1, lo=0, hi=1000),
        on_when=on_when,
        off_when=off_when,
        min_on=sec.duration("min_on", 0.0),
        min_off=sec.duration("min_off", 0.0),
        max_switches=sec.get("max_switches", None, parse_max_switches),
        hours=sec.get("hours", None, parse_hours),
        sheddable=sec.flag("sheddable", False),
        min_daily=sec.get("min_daily", None, parse_min_daily),
        device=device,
    )
    sec.check_unknown()  # a misspelt key first: `on_wen: unknown key` explains `on_when: missing`
    if device is not None and relay.safe_state:
        raise sec.error("safe_state", "on", "a network relay's safe state is off (its dead-man timer switches "
                        "it off when this appliance is gone)")
    if not pin and device is None:
        raise ConfigError(f"[{sec.name}] pin: missing (e.g. pin = GPIO17)", sec.name, "pin")
    if on_when is None:
        raise ConfigError(
            f"[{sec.name}] on_when: missing (e.g. on_when = export > 1500 W for 60 s)",
            sec.name,
            "on_when",
        )
    return relay


def _pin(parse: Callable[[str], int]) -> Callable[[str], str]:
    def conv(s: str) -> str:
        if s:
            parse(s)
        return s

    return conv


def _on_off(s: str) -> bool:
    low = s.lower()
    if low in ("on", "1", "yes", "true"):
        return True
    if low in ("off", "0", "no", "false"):
        return False
    raise ValueError("expected on or off")


def _csv(sec: Section) -> CsvConfig:
    cfg = CsvConfig(
        enabled=sec.flag("enabled", False),
        directory=sec.get("directory", CsvConfig.directory, _non_empty),
        interval=sec.duration("interval", 60.0, hi=86400.0),
        delimiter=sec.get("delimiter", ",", _single_char),
        decimal=sec.get("decimal", ".", _decimal),
        flush_interval=sec.duration("flush_interval", 60.0, hi=3600.0),
    )
    if cfg.delimiter == cfg.decimal:
        raise ConfigError(
            f"[csv] decimal = {cfg.decimal!r}: must differ from delimiter {cfg.delimiter!r}",
            "csv",
            "decimal",
        )
    return cfg


def _decimal(s: str) -> str:
    if s not in (".", ","):
        raise ValueError("expected . or ,")
    return s


def _influx(sec: Section) -> InfluxConfig:
    cfg = InfluxConfig(
        enabled=sec.flag("enabled", False),
        url=sec.get("url", InfluxConfig.url, _url),
        api=sec.choice("api", "v2", ("v1", "v2")),
        token=sec.text("token", "", env="INFLUXDB_TOKEN"),
        org=sec.text("org", ""),
        bucket=sec.text("bucket", "smartmeter"),
        database=sec.text("database", "smartmeter"),
        username=sec.text("username", ""),
        password=sec.text("password", "", env="INFLUXDB_PASSWORD"),
        retention_policy=sec.text("retention_policy", ""),
        measurement=sec.get("measurement", "smartmeter", _non_empty),
        batch_size=sec.integer("batch_size", 500, lo=1, hi=100_000),
        flush_interval=sec.duration("flush_interval", 10.0, lo=0.1, hi=3600.0),
        timeout=sec.duration("timeout", 10.0, lo=0.1, hi=600.0),
        spool_dir=sec.get("spool_dir", InfluxConfig.spool_dir, _non_empty),
        spool_max=sec.get("spool_max", 200 * 10**6, _positive_size),
        status_interval=sec.duration("status_interval", 300.0, lo=1.0),
    )
    return cfg


def _positive_size(s: str) -> int:
    v = parse_size(s)
    if v < 4096:
        raise ValueError("must be at least 4 KB")
    return v


def _mqtt(sec: Section) -> MqttConfig:
    cfg = MqttConfig(
        enabled=sec.flag("enabled", False),
        host=sec.get("host", "localhost", _non_empty),
        port=sec.integer("port", 1883, lo=1, hi=65535),
        username=sec.text("username", ""),
        password=sec.text("password", "", env="MQTT_PASSWORD"),
        tls=sec.flag("tls", False),
        ca_file=sec.text("ca_file", ""),
        cert_file=sec.text("cert_file", ""),
        key_file=sec.text("key_file", ""),
        client_id=sec.text("client_id", ""),
        prefix=sec.get("prefix", "smartmeter", _topic_prefix),
        publish_interval=sec.duration("publish_interval", 10.0, hi=86400.0),
        retain=sec.flag("retain", False),
        qos=sec.integer("qos", 0, lo=0, hi=2),
        state_qos=sec.integer("state_qos", 1, lo=0, hi=2),
        discovery=sec.flag("discovery", True),
        discovery_prefix=sec.get("discovery_prefix", "homeassistant", _topic_prefix),
        keepalive=sec.duration("keepalive", 60.0, lo=5.0, hi=3600.0),
        reconnect_max=sec.duration("reconnect_max", 60.0, lo=1.0, hi=3600.0),
    )
    if cfg.tls:
        for key in ("ca_file", "cert_file", "key_file"):
            path = getattr(cfg, key)
            if path and not os.path.isfile(path):
                raise sec.error(key, path, "file not found")
        _check_tls(sec, cfg)
    return cfg


def _check_tls(sec: Section, cfg: MqttConfig) -> None:
    """Load the TLS files with ssl now, so a file that is not a certificate or key is a config error."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cfg.ca_file:
        try:
            ctx.load_verify_locations(cafile=cfg.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise sec.error("ca_file", cfg.ca_file, f"not a PEM CA certificate ({_ssl_reason(exc)})") from None
    if cfg.key_file and not cfg.cert_file:
        raise sec.error("key_file", cfg.key_file, "needs cert_file (the client certificate) too")
    if cfg.cert_file:
        try:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file or None, password=_no_passphrase)
        except (ssl.SSLError, OSError) as exc:
            raise sec.error("cert_file", cfg.cert_file, "not a PEM client certificate with its unencrypted key "
                            f"(cert_file/key_file; {_ssl_reason(exc)})") from None


def _no_passphrase() -> str:
    return ""  # never let OpenSSL prompt on a terminal: an encrypted key is an error


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc.strerror or "unreadable").lower().replace("_", " ")
    if isinstance(exc, OSError):
        return exc.strerror or "unreadable"
    return "unreadable"


def _topic_prefix(s: str) -> str:
    if not s or any(c in s for c in "#+") or s.startswith("/") or s.endswith("/"):
        raise ValueError("expected a topic prefix without wildcards or leading/trailing '/'")
    return s


def _translate(sec: Section) -> TranslateConfig:
    return TranslateConfig(
        enabled=sec.flag("enabled", False),
        datacollector_topics=sec.get(
            "datacollector_topics", TranslateConfig.datacollector_topics, _topics, multiline=True
        ),
        tasmota_topics=sec.get("tasmota_topics", TranslateConfig.tasmota_topics, _topics, multiline=True),
        tasmota_map=sec.get("tasmota_map", TranslateConfig.tasmota_map, _key_map, multiline=True),
    )


_SECTIONS: dict[str, Callable[[Section], Any]] = {
    "general": _general,
    "meter": _meter,
    "control": _control,
    "csv": _csv,
    "influxdb": _influx,
    "mqtt": _mqtt,
    "mqtt_translate": _translate,
    "history": parse_history,
    "tariff": lambda sec: parse_tariff(sec, ""),
    "web": parse_web,
    "site": parse_site,
    "capacity": parse_capacity,
}
# [prefix:NAME] sections other than relays: prefix -> (parser taking the section and NAME, Config field)
_PREFIXED: dict[str, tuple[Callable[[Section, str], Any], str]] = {
    "tariff": (parse_tariff, "tariffs"),
    "meter": (parse_meter, "meters"),
    "alert": (parse_alert, "alerts"),
}


def load(path: str | os.PathLike[str], overrides: Mapping[str, Mapping[str, str]] | None = None) -> Config:
    """Read and validate an INI file; `overrides` (section -> key -> value) win over the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} not found")
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        with p.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except configparser.Error as exc:
        raise ConfigError(f"{p}: {_ini_error(exc)}") from None
    return from_parser(parser, str(p), overrides)


def loads(text: str, overrides: Mapping[str, Mapping[str, str]] | None = None) -> Config:
    """Validate INI text (for tests and the demo)."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise ConfigError(f"<string>: {_ini_error(exc)}") from None
    return from_parser(parser, "<string>", overrides)


_NOT_SHOWN = "(the line is not shown: it may hold a secret)"


def _ini_error(exc: configparser.Error) -> str:
    """configparser's error in words that never quote a line of the file (it may be a password)."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        name = _key_name(exc.line)
        what = f"`{name} = …`" if name else f"a line {_NOT_SHOWN}"
        return (f"line {exc.lineno}: {what} comes before the first [section] header; "
                "move it under its section (e.g. [meter], [mqtt])")
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: [{exc.section}] {exc.option}: set twice in that section; keep one"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: [{exc.section}] appears twice; merge the two sections"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(lineno) for lineno, _line in exc.errors)
        return (f"line {lines}: neither `key = value` nor a [section] header {_NOT_SHOWN}; "
                "put `key = ` before a value, or `;` before a comment")
    return f"not a valid INI file ({type(exc).__name__})"


def _key_name(line: str) -> str:
    """The key of a `key = value` line when it is a plain name, else ''."""
    m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*[=:]", line)
    return m.group(1) if m else ""


def from_parser(
    parser: configparser.ConfigParser,
    path: str,
    overrides: Mapping[str, Mapping[str, str]] | None = None,
) -> Config:
    """Build the Config from a parsed INI."""
    for section, items in (overrides or {}).items():
        if not parser.has_section(section):
            parser.add_section(section)
        for k, v in items.items():
            parser.set(section, k, v)
    _add_meter_files(parser)
    built: dict[str, Any] = {}
    relays: list[RelayConfig] = []
    prefixed: dict[str, list[Any]] = {attr: [] for _p, attr in _PREFIXED.values()}
    for name in parser.sections():
        sec = Section(name, parser[name])
        prefix, colon, suffix = name.partition(":")
        if name.startswith("relay:"):
            relays.append(_relay(sec, name[len("relay:"):].strip()))
        elif colon and prefix in _PREFIXED:
            parse, attr = _PREFIXED[prefix]
            prefixed[attr].append(parse(sec, suffix.strip()))
        elif name in _SECTIONS:
            built[name] = _SECTIONS[name](sec)
        else:
            known = ", ".join([*_SECTIONS, "relay:NAME", *(f"{p}:NAME" for p in _PREFIXED)])
            raise ConfigError(f"[{name}]: unknown section (known: {known})", name)
        sec.check_unknown()
    built.update({attr: tuple(items) for attr, items in prefixed.items()})
    for name, builder in _SECTIONS.items():
        if name not in built:
            built[name] = builder(Section(name, {}))
    built["tariff"], built["tariffs"] = resolve_tariffs(built["tariff"], built["tariffs"], built["meter"].timezone)
    if built["mqtt_translate"].enabled and not built["mqtt"].enabled:
        raise ConfigError("[mqtt_translate] enabled = 'yes': needs [mqtt] enabled = yes (it uses that broker)",
                          "mqtt_translate", "enabled")
    check_meters(built["meters"], built["meter"].name, tuple(relays), built["site"])
    from app.meters.mqtt_meter import with_broker  # pure: MQTT meters without a host use [mqtt]'s broker

    built["meters"] = with_broker(built["meters"], built["mqtt"])
    from app.control.relays import check_pins  # pure: BOARD11, gpio17 and 17 are one line

    check_pins(tuple(relays))
    for r in relays:
        if r.device is not None and r.device.mqtt_topic and not built["mqtt"].enabled:
            raise ConfigError(f"[relay:{r.name}] mqtt_topic = {r.device.mqtt_topic!r}: needs [mqtt] enabled = yes "
                              "(the relay is switched over that broker)", f"relay:{r.name}", "mqtt_topic")
    for a in built["alerts"]:
        if "mqtt" in a.notify and not built["mqtt"].enabled:
            raise ConfigError(f"[alert:{a.name}] notify = {', '.join(a.notify)!r}: mqtt needs [mqtt] enabled = yes",
                              f"alert:{a.name}", "notify")
    return Config(path=path, relays=tuple(relays), **built)


def _add_meter_files(parser: configparser.ConfigParser) -> None:
    """[general] meters_dir: each NAME.ini's [meter:NAME] joins the config (a name in both is an error)."""
    directory = parser.get("general", "meters_dir", fallback="").strip()
    if not directory:
        return
    from app.web.meter_files import read_dir  # pure: INI files in, sections out

    for name, items, path in read_dir(directory):
        section = f"meter:{name}"
        if parser.has_section(section):
            raise ConfigError(f"[{section}] is in both the config and {path}; keep one", section)
        parser.add_section(section)
        for k, v in items.items():
            parser.set(section, k, v)


def redacted(cfg: Config) -> dict[str, dict[str, Any]]:
    """The effective config as plain values, secrets replaced by '***' (for --check-config)."""
    out: dict[str, dict[str, Any]] = {}
    for f in fields(cfg):
        val = getattr(cfg, f.name)
        if f.name == "relays":
            for relay in val:
                out[f"relay:{relay.name}"] = _plain(relay)
        elif f.name == "tariffs":
            for tariff in val:
                out[f"tariff:{tariff.name}"] = _plain(tariff)
        elif f.name == "meters":
            for m in val:
                shown = getattr(m.settings, "shown", None)  # a kind that knows more secrets (a URL's query)
                out[f"meter:{m.name}"] = _plain(m) | {"settings": shown() if shown is not None else
                                                      _plain(m.settings) if is_dataclass(m.settings)
                                                      else m.settings}
        elif f.name == "alerts":
            for alert in val:  # the webhook URL may carry credentials or a webhook id: its host only
                out[f"alert:{alert.name}"] = {**_plain(alert), "url": safe_url(alert.url) if alert.url else ""}
        elif is_dataclass(val):
            out[f.name] = _plain(val)
    return out


def _plain(obj: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if is_secret_key(f.name):
            res[f.name] = "***" if v else ""
        elif isinstance(v, (Condition, MinDaily)):
            res[f.name] = v.text if isinstance(v, Condition) else str(v)
        elif is_dataclass(v):
            res[f.name] = _plain(v)
        elif isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], dtime):
            res[f.name] = f"{v[0]:%H:%M}-{v[1]:%H:%M}"
        else:
            res[f.name] = v
    return res
