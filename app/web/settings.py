"""[web]: the local REST API, dashboard and MCP endpoint."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.config import Section


@dataclass(frozen=True)
class WebConfig:
    """[web]: the web process."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = field(default="", repr=False)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost (the only hosts allowed without a token)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def parse_web(sec: Section) -> WebConfig:
    """Build [web] from its INI section; a host other than loopback needs a token."""
    host = sec.text("host", "127.0.0.1")
    if not host:
        raise sec.error("host", host, "expected an address to listen on, e.g. 127.0.0.1 or 0.0.0.0")
    token = sec.text("token", "", env="SMARTMETER_WEB_TOKEN")
    cfg = WebConfig(
        enabled=sec.flag("enabled", False),
        host=host,
        port=sec.integer("port", 8080, lo=1, hi=65535),
        token=token,
    )
    if any(c.isspace() for c in token):
        raise sec.error("token", token, "must not contain spaces")
    if not token and not is_loopback(host):
        raise sec.error("host", host, "listening beyond loopback needs a token "
                        "([web] token or SMARTMETER_WEB_TOKEN)")
    return cfg
