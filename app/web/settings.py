"""[web]: the local REST API, dashboard and MCP endpoint."""

from __future__ import annotations

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


def parse_web(sec: Section) -> WebConfig:
    """Build [web] from its INI section."""
    return WebConfig(
        enabled=sec.flag("enabled", False),
        host=sec.text("host", "127.0.0.1"),
        port=sec.integer("port", 8080, lo=1, hi=65535),
        token=sec.text("token", "", env="SMARTMETER_WEB_TOKEN"),
    )
