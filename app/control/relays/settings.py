"""[relay:NAME] keys of network relays (type = shelly | tasmota | tapo); pure, no I/O library.

    [relay:boiler]
    type = shelly          ; gpio (default) | shelly | tasmota | tapo
    host = 192.168.1.40    ; name or name:port
    channel = 0            ; shelly: switch id (from 0); tasmota: relay number (from 1)
    username = admin       ; shelly: always admin; tapo: the TP-Link account
    password = ...         ; or SMARTMETER_RELAY_BOILER_PASSWORD in the environment
    deadman = 2 min        ; an ON always carries this device-side timeout, refreshed at a third of it
    refresh = 10 s         ; read the real state back this often
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.config import Section

KINDS = ("gpio", "shelly", "tasmota", "tapo")
NET_KINDS = KINDS[1:]
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")


@dataclass(frozen=True)
class DeviceConfig:
    """The device behind a network relay and its timers."""

    kind: str  # shelly | tasmota | tapo
    host: str = ""  # name or name:port (tasmota: empty when mqtt_topic is used)
    channel: int = 0
    username: str = ""
    password: str = field(default="", repr=False)
    mqtt_topic: str = ""  # tasmota over the [mqtt] broker
    deadman: float = 120.0  # s: device-side OFF timer carried by every ON
    refresh: float = 10.0  # s: read-back period
    timeout: float = 2.0  # s: one request to the device

    @property
    def where(self) -> str:
        """How the device is reached, for log lines (never a credential)."""
        return f"mqtt topic {self.mqtt_topic}" if self.mqtt_topic else self.host


def _host(s: str) -> str:
    if s and not _HOST_RE.match(s):
        raise ValueError("expected a host name or address, optionally with :port (no scheme, no path)")
    if ":" in s and not 0 < int(s.rsplit(":", 1)[1]) < 65536:
        raise ValueError("port must be 1-65535")
    return s


def _topic(s: str) -> str:
    if any(c in s for c in "#+/ ") and s:
        raise ValueError("expected the device's Tasmota topic (no '/', '+', '#' or spaces), e.g. tasmota_5A1B2C")
    return s


def parse_device(sec: Section, name: str) -> tuple[str, DeviceConfig | None]:
    """The relay's `type` and, for a network relay, its device keys (ConfigError naming the key)."""
    kind = sec.choice("type", "gpio", KINDS)
    if kind == "gpio":
        return kind, None
    env = "SMARTMETER_RELAY_" + re.sub(r"[^A-Z0-9]", "_", name.upper()) + "_PASSWORD"
    dev = DeviceConfig(
        kind=kind,
        host=sec.get("host", "", _host),
        channel=sec.integer("channel", 1 if kind == "tasmota" else 0, lo=0, hi=32),
        username=sec.text("username", "admin" if kind == "shelly" else ""),
        password=sec.text("password", "", env=env),
        mqtt_topic=sec.get("mqtt_topic", "", _topic) if kind == "tasmota" else "",
        deadman=sec.duration("deadman", 120.0, lo=2.0 if kind != "tapo" else 60.0, hi=86400.0),
        refresh=sec.duration("refresh", 10.0, lo=1.0, hi=3600.0),
        timeout=sec.duration("timeout", 2.0, lo=0.1, hi=30.0),
    )
    if dev.mqtt_topic and dev.host:
        raise sec.error("mqtt_topic", dev.mqtt_topic, "set host (HTTP) or mqtt_topic (MQTT), not both")
    if not dev.host and not dev.mqtt_topic:
        hint = "host = 192.168.1.40 or mqtt_topic = tasmota_5A1B2C" if kind == "tasmota" else "host = 192.168.1.40"
        raise sec.error("host", "", f"missing for type = {kind} (e.g. {hint})")
    if kind == "tasmota" and dev.channel == 0:
        raise sec.error("channel", "0", "Tasmota relays count from 1")
    if kind == "tapo" and (not dev.username or not dev.password):
        raise sec.error("username", dev.username, "type = tapo needs username and password (the TP-Link account)")
    return kind, dev
