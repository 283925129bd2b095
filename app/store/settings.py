"""[history]: where the quarter-hour store lives and how long it keeps them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.config import Section


@dataclass(frozen=True)
class HistoryConfig:
    """[history]: the embedded SQLite store of quarter-hours."""

    enabled: bool = True
    path: str = "/var/lib/smartmeter/history.sqlite"
    retention: float = 0.0  # seconds of quarters kept; 0 = forever
    commit_interval: float = 60.0  # live commits at most this often (SD-card wear)


def parse_history(sec: Section) -> HistoryConfig:
    """Build [history] from its INI section."""
    path = sec.text("path", HistoryConfig.path)
    if not path.strip():
        raise sec.error("path", path, "the store needs a file path (or enabled = no)")
    return HistoryConfig(
        enabled=sec.flag("enabled", True),
        path=path,
        retention=sec.duration("retention", 0.0),
        commit_interval=sec.duration("commit_interval", 60.0, lo=1.0, hi=3600.0),
    )
