"""[alert:NAME] sections: when to tell the owner, and how.

    [alert:grid_peak]
    when = import > 5 kW for 2 min   ; a relay condition (mean(import, 5 min) > 4 kW too), or one of:
                                     ;   meter offline [for 5 min]  (default 60 s without a valid reading)
                                     ;   relay mismatch             (a network relay unreachable or toggled by hand)
                                     ;   sink backlog [> 5000]      (a sink queue above 1000 items, or dropping)
                                     ;   decrypt errors             (the reader could not decrypt a push)
    notify = log, webhook            ; any of log, mqtt, webhook
    url = https://ntfy.sh/my-meter   ; webhook: POST JSON (an ntfy topic or a Home Assistant webhook URL)
    repeat = 1 h                     ; say it again while it lasts (0: once)
    resolve = yes                    ; say when it ends
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.control.conditions import Condition, parse_condition, parse_duration_s

if TYPE_CHECKING:
    from app.config import Section

NOTIFY = ("log", "mqtt", "webhook")
SPECIALS = ("meter offline", "relay mismatch", "sink backlog", "decrypt errors")
OFFLINE_DEFAULT_S = 60.0
BACKLOG_DEFAULT = 1000
_SPECIAL_RE = re.compile(r"^(meter offline|relay mismatch|sink backlog|decrypt errors)\s*(.*)$", re.I)


@dataclass(frozen=True)
class Trigger:
    """What an alert watches: a reading condition, or a special (`kind`) with its parameter."""

    text: str
    kind: str  # "condition" or one of SPECIALS
    condition: Condition | None = None
    offline_s: float = OFFLINE_DEFAULT_S  # meter offline
    backlog: int = BACKLOG_DEFAULT  # sink backlog


@dataclass(frozen=True)
class AlertConfig:
    """One [alert:NAME] section."""

    name: str
    when: Trigger
    notify: tuple[str, ...] = ("log",)
    url: str = field(default="", repr=False)  # may carry credentials or a webhook id: never logged
    repeat: float = 3600.0
    resolve: bool = True


def parse_trigger(text: str) -> Trigger:
    """`meter offline for 5 min`, `sink backlog > 5000`, ... or a relay condition; ValueError otherwise."""
    src = " ".join(text.split())
    m = _SPECIAL_RE.match(src)
    if m is None:
        try:
            cond = parse_condition(src)
        except ValueError as exc:
            raise ValueError(f"{exc}; or one of: {', '.join(SPECIALS)}") from None
        return Trigger(src, "condition", cond)
    kind, rest = m.group(1).lower(), m.group(2).strip()
    if kind == "meter offline":
        if not rest:
            return Trigger(src, kind)
        f = re.match(r"^for\s+(.+)$", rest, re.I)
        if f is None:
            raise ValueError("expected 'meter offline' or 'meter offline for <duration>'")
        seconds = parse_duration_s(f.group(1))
        if seconds < 1:
            raise ValueError("meter offline needs at least 1 s")
        return Trigger(src, kind, offline_s=seconds)
    if kind == "sink backlog":
        if not rest:
            return Trigger(src, kind)
        b = re.match(r"^>\s*(\d+)$", rest)
        if b is None:
            raise ValueError("expected 'sink backlog' or 'sink backlog > <items>'")
        return Trigger(src, kind, backlog=int(b.group(1)))
    if rest:
        raise ValueError(f"unexpected {rest!r} after {kind!r}")
    return Trigger(src, kind)


def _notify(s: str) -> tuple[str, ...]:
    parts = tuple(dict.fromkeys(p.strip().lower() for p in re.split(r"[,\s|]+", s) if p.strip()))
    bad = [p for p in parts if p not in NOTIFY]
    if bad or not parts:
        raise ValueError(f"expected one or more of {', '.join(NOTIFY)}")
    return parts


def _url_problem(s: str) -> str | None:
    try:
        u = urllib.parse.urlsplit(s)
        u.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return "not a URL"
    if u.scheme not in ("http", "https") or not u.hostname:
        return "expected an http:// or https:// URL"
    return None


def safe_url(url: str) -> str:
    """A webhook URL as a log line may show it: scheme, host and port only (no credentials, no path)."""
    u = urllib.parse.urlsplit(url)
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.hostname}{port}/…"


def parse_alert(sec: Section, name: str) -> AlertConfig:
    """One [alert:NAME] section -> AlertConfig (ConfigError naming the key)."""
    if not re.match(r"^[A-Za-z0-9_-]+$", name):
        raise sec.error("when", "", f"alert name {name!r} may only hold letters, digits, _ and -")
    when = sec.get("when", None, parse_trigger)
    cfg = AlertConfig(
        name=name,
        when=when if when is not None else Trigger("", "condition"),
        notify=sec.get("notify", ("log",), _notify),
        url=sec.text("url", ""),
        repeat=sec.duration("repeat", 3600.0, hi=30 * 86400.0),
        resolve=sec.flag("resolve", True),
    )
    sec.check_unknown()
    problem = _url_problem(cfg.url) if cfg.url else None
    if problem is not None:  # the value is not shown: a URL may carry credentials or a webhook id
        raise sec.error("url", "<not shown>", problem)
    if when is None:
        raise sec.error("when", "", "missing (e.g. when = meter offline for 5 min)")
    if "webhook" in cfg.notify and not cfg.url:
        raise sec.error("url", "", "notify = webhook needs a url (e.g. https://ntfy.sh/my-meter-alerts)")
    if cfg.url and "webhook" not in cfg.notify:
        raise sec.error("url", "<not shown>", "set, but notify has no webhook (add webhook to notify, or remove url)")
    return cfg
