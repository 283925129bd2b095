"""More meters than the one on [meter]: `[meter:NAME]` sections, one reader process each.

    [meter:pv]
    role = solar                 ; grid | building | solar | zone
    location = garage, inverter output
    protocol = modbus            ; a key of KINDS below
    poll_interval = 5 s
    offline_after = 15 s         ; default 3 x poll_interval
    ...                          ; the protocol's own keys

The plug-in point: a meter kind is a module under app/meters/, named in `KINDS` (protocol ->
module path; the module is imported at config load for its parser, and its I/O library only
inside the meter's own process). It exposes

    DEFAULT_POLL_INTERVAL: float | None      seconds; None for a kind that is pushed to (MQTT, D0 push)
    KEYS: frozenset[str]                     its own keys (the common ones above are read here)
    parse_settings(sec: Section, name: str) -> Settings   a frozen dataclass; ConfigError naming the key
    and one of
    open_poller(spec: MeterSpec) -> Poller   Poller.poll() -> Sample (raises MeterError with the reason),
                                             Poller.close(); the generic loop (app.meters.runner) polls
                                             it every poll_interval
    run(spec: MeterSpec, out: Output, stop: Callable[[], bool]) -> None
                                             a push kind's own loop: out.sample(Sample) per value set,
                                             out.error(reason) when it fails; returns when stop() is true

and every Sample becomes the same `Reading` (app.meters.sample.to_reading) with the meter's name and
role, on the meter's own queue to the post-processor.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from app.errors import ConfigError

if TYPE_CHECKING:
    from app.config import Section

# protocol -> module path: one line per meter kind
KINDS: dict[str, str] = {
    "modbus": "app.meters.modbus",
    "iec62056-21": "app.meters.iec62056",
    "http": "app.meters.http_meter",
    "mqtt": "app.meters.mqtt_meter",
    "tapo": "app.meters.tapo_meter",
}
ROLES = ("grid", "building", "solar", "zone")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
# names a meter may not take: they are quantities of their own in relay conditions
RESERVED = frozenset({"building", "solar", "available", "import", "export", "net", "demand", "mean", "site"})
COMMON_KEYS = frozenset({"role", "location", "protocol", "poll_interval", "offline_after", "invert", "max_power"})


@dataclass(frozen=True)
class MeterSpec:
    """[meter:NAME]: one more meter, its role and its protocol's settings."""

    name: str
    role: str
    protocol: str
    location: str = ""
    poll_interval: float | None = 5.0  # None: pushed to, not polled
    offline_after: float = 15.0
    invert: bool = False  # the meter counts this direction the other way round
    settings: Any = field(default=None)
    max_power: float | None = None  # W, the plausibility gate's limit (None: [meter] max_power)


@dataclass(frozen=True)
class SiteConfig:
    """[site]: the connection as a whole."""

    grid_capacity_w: float | None = None  # the connection's limit (`available` needs it)


# protocol -> the I/O modules main may import before it forks, so that every process of that kind shares their
# pages instead of importing its own copy (python-kasa is not among them: only its own process imports it)
SHARED_IMPORTS: dict[str, tuple[str, ...]] = {
    "modbus": ("pymodbus.client", "pymodbus.framer", "pymodbus.exceptions"),
}


def kind(protocol: str) -> ModuleType:
    """The module of a meter kind."""
    return importlib.import_module(KINDS[protocol])


def preload(protocols: Iterable[str]) -> list[str]:
    """Import the shared I/O modules of these meter kinds (in main, before the fork); the names imported."""
    names = sorted({name for p in protocols for name in SHARED_IMPORTS.get(p, ())})
    for name in names:
        importlib.import_module(name)
    return names


def check_name(name: str, section: str) -> str:
    """A meter name usable in conditions (`pv.power`): lower-case letters, digits, _."""
    if not _NAME_RE.match(name):
        raise ConfigError(f"[{section}]: meter name {name!r} must start with a lower-case letter and hold only "
                          "a-z, 0-9 and _ (at most 32), so conditions can say e.g. 'pv.power'", section)
    if name in RESERVED:
        raise ConfigError(f"[{section}]: meter name {name!r} is taken by a quantity of that name; choose "
                          "another", section)
    return name


def meter_name(text: str) -> str:
    """`[meter] name = ...`: the same rule as a [meter:NAME] section's name (ValueError saying why)."""
    if not _NAME_RE.match(text):
        raise ValueError("a meter name starts with a lower-case letter and holds only a-z, 0-9 and _ (at most 32)")
    if text in RESERVED:
        raise ValueError(f"{text!r} is taken by a quantity of that name")
    return text


def parse_meter(sec: Section, name: str) -> MeterSpec:
    """Build [meter:NAME] from its INI section: the common keys here, the protocol's through its kind."""
    check_name(name, sec.name)
    protocol = sec.choice("protocol", "", tuple(KINDS))
    if not protocol:
        raise ConfigError(f"[{sec.name}] protocol: missing (use one of {', '.join(KINDS)})", sec.name, "protocol")
    mod = kind(protocol)
    default_role = getattr(mod, "DEFAULT_ROLE", "building")
    role = sec.choice("role", default_role, ROLES)
    default_poll: float | None = (mod.default_poll_interval(sec) if hasattr(mod, "default_poll_interval")
                                  else mod.DEFAULT_POLL_INTERVAL)  # a kind that is polled or pushed by a key
    poll = sec.duration("poll_interval", default_poll, lo=0.05, hi=86400.0) if default_poll is not None else None
    settings = mod.parse_settings(sec, name)
    offline_default = 3 * poll if poll is not None else 30.0
    return MeterSpec(
        name=name,
        role=role,
        protocol=protocol,
        location=sec.text("location", ""),
        poll_interval=poll,
        offline_after=sec.duration("offline_after", offline_default, lo=0.1, hi=86400.0),
        invert=sec.flag("invert", False),
        settings=settings,
        max_power=sec.get("max_power", None, parse_power_w),
    )


def parse_site(sec: Section) -> SiteConfig:
    """Build [site] from its INI section."""
    return SiteConfig(grid_capacity_w=sec.get("grid_capacity", None, parse_power_w))


def parse_power_w(text: str) -> float:
    """`9.2 kW`, `9200 W` or a bare number of watts -> W."""
    m = re.match(r"^\s*([0-9]+(?:\.[0-9]*)?)\s*(kw|w)?\s*$", text, re.I)
    if m is None:
        if re.match(r"^\s*[0-9]+,[0-9]+", text):
            raise ValueError(f"decimal comma in {text.strip()!r}: write {text.strip().replace(',', '.', 1)!r}")
        raise ValueError("expected a power, e.g. '9.2 kW' or '9200 W'")
    value = float(m.group(1)) * (1000.0 if (m.group(2) or "w").lower() == "kw" else 1.0)
    if value <= 0:
        raise ValueError("must be more than 0 W")
    return value


def check_meters(meters: tuple[MeterSpec, ...], main_name: str, relays: tuple[Any, ...] = (),
                 site: SiteConfig | None = None) -> None:
    """Names unique across [meter] and every [meter:NAME]; every meter a relay condition names exists;
    `available` needs [site] grid_capacity."""
    seen = {main_name: "[meter]"}
    for m in meters:
        if m.name in seen:
            raise ConfigError(f"[meter:{m.name}]: the name {m.name!r} is already {seen[m.name]}'s; choose another",
                              f"meter:{m.name}")
        seen[m.name] = f"[meter:{m.name}]"
    for relay in relays:
        for key in ("on_when", "off_when"):
            cond = getattr(relay, key, None)
            if cond is None:
                continue
            where = f"[relay:{relay.name}] {key} = {cond.text!r}"
            meter = cond.quantity.split(".", 1)[0] if "." in cond.quantity else None
            if meter is not None and meter not in seen:
                raise ConfigError(f"{where}: no meter named {meter!r} (meters: {', '.join(seen)})",
                                  f"relay:{relay.name}", key)
            if cond.quantity == "available" and (site is None or site.grid_capacity_w is None):
                raise ConfigError(f"{where}: 'available' needs [site] grid_capacity (e.g. 9.2 kW)",
                                  f"relay:{relay.name}", key)
