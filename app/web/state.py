"""The web process's view of the appliance: the latest reading, relays and counters, and the
live subscribers (SSE and WebSocket clients), each behind its own small bounded queue."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime
from typing import Any

from app import __version__
from app.config import Config
from app.records import ReaderStatus, Reading

SUBSCRIBER_QUEUE = 32  # events a live client may be behind before it is dropped
MAX_SUBSCRIBERS = 64


def current_json(reading: Reading, states: dict[str, bool]) -> dict[str, Any]:
    """The `current` object: one reading as the API and the live stream show it."""
    f = reading.fields
    imp, exp = f.get("actual_total_consumption"), f.get("actual_total_injection")
    power_w = None if imp is None and exp is None else round(((imp or 0.0) - (exp or 0.0)) * 1000.0, 3)
    return {
        "seq": reading.seq,
        "timestamp": reading.time.isoformat(),
        "received": reading.received.isoformat(),
        "meter_id": reading.meter_id,
        "protocol": reading.protocol,
        "fields": dict(f),
        "power_w": power_w,
        "relays": {name: "on" if on else "off" for name, on in states.items()},
    }


class Subscriber:
    """One live client: a bounded queue; overflowing it drops the client, never buffers more."""

    def __init__(self, first: dict[str, Any] | None = None) -> None:
        # the latest reading when it subscribed, taken in the same step as joining: it goes out first and
        # everything queued after it is newer, so a reading that arrives while the client connects comes once
        self.first = first
        self.q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self.dropped = False

    def offer(self, event: dict[str, Any]) -> None:
        """Queue an event; a full queue means the client is too slow: it is dropped."""
        if self.dropped:
            return
        try:
            self.q.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            self.q.get_nowait()  # make room for the end mark
            self.q.put_nowait(None)


class LiveState:
    """Everything the post-processor sent, kept on the event loop's thread."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.started_mono = time.monotonic()
        self.current: dict[str, Any] | None = None
        self.reading: Reading | None = None
        self.last_mono: float | None = None
        self.status: ReaderStatus | None = None
        self.counters: dict[str, Any] = {}
        self.relays: list[dict[str, Any]] = [
            {"name": r.name, "state": "on" if r.safe_state else "off", "mode": "auto",
             "safe_state": "on" if r.safe_state else "off", "reason": None, "since": None, "pending": None,
             "next_switch_allowed": None, "blocked_by": []} for r in cfg.relays]
        # [meter:NAME] -> {"reading": Reading | None, "status": online|offline|error, "reason": str}
        self.meters: dict[str, dict[str, Any]] = {
            m.name: {"reading": None, "status": "offline", "reason": "no reading yet"} for m in cfg.meters}
        self.meter_specs: tuple[Any, ...] = cfg.meters  # the [meter:NAME] meters now (meters_dir changes them)
        self.subscribers: set[Subscriber] = set()
        self.live_dropped = 0  # slow live clients dropped
        self.pending: dict[int, asyncio.Future[tuple[dict[str, Any], list[dict[str, Any]]]]] = {}
        self._ids = itertools.count(1)

    # ------------------------------------------------------------ from the post-processor

    def apply(self, msg: tuple[Any, ...]) -> None:
        """One message off the live channel (see app.web.link)."""
        kind = msg[0]
        if kind == "reading":
            self.on_reading(msg[1], msg[2])
        elif kind == "status":
            self.status, self.counters = msg[1], msg[2]
        elif kind == "relays":
            self.relays = msg[1]
        elif kind == "meters":
            self.meter_specs = tuple(msg[1])
            names = {m.name for m in self.meter_specs}
            self.meters = {n: v for n, v in self.meters.items() if n in names}
            for n in names - set(self.meters):
                self.meters[n] = {"reading": None, "status": "offline", "reason": "no reading yet"}
        elif kind == "meter" and msg[1] in self.meters:
            self.meters[msg[1]]["reading"] = msg[2]
        elif kind == "meter_status" and msg[1] in self.meters:
            self.meters[msg[1]].update(status=msg[2], reason=msg[3])
        elif kind == "outcome":
            self.relays = msg[3]
            fut = self.pending.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_result((msg[2], msg[3]))

    def on_reading(self, reading: Reading, states: dict[str, bool]) -> None:
        """A new reading: remember it and offer it to every live client."""
        self.reading = reading
        self.last_mono = time.monotonic()
        self.current = current_json(reading, states)
        for r in self.relays:
            if r["name"] in states:
                r["state"] = "on" if states[r["name"]] else "off"
        for sub in list(self.subscribers):
            sub.offer(self.current)
            if sub.dropped:
                self.subscribers.discard(sub)
                self.live_dropped += 1

    # ------------------------------------------------------------ for the handlers

    def subscribe(self) -> Subscriber | None:
        """A new live client (None when there are too many already)."""
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            return None
        sub = Subscriber(self.current)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """A live client went away."""
        self.subscribers.discard(sub)

    def new_request(self) -> tuple[int, asyncio.Future[tuple[dict[str, Any], list[dict[str, Any]]]]]:
        """An id and a future for one relay command's outcome."""
        request_id = next(self._ids)
        fut: asyncio.Future[tuple[dict[str, Any], list[dict[str, Any]]]] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = fut
        return request_id, fut

    def online(self) -> bool:
        """A reading arrived within stale_after."""
        return self.last_mono is not None and time.monotonic() - self.last_mono <= self.cfg.control.stale_after

    def status_json(self) -> dict[str, Any]:
        """The `status` object."""
        s, r = self.status, self.reading
        lag_s = None
        if s is not None and s.lag_mean_s is not None:
            lag_s = {"mean": round(s.lag_mean_s, 3), "max": round(s.lag_max_s or 0.0, 3)}
        c = self.counters
        return {
            "meter_id": r.meter_id if r is not None else None,
            "protocol": (r.protocol if r is not None else (s.protocol if s is not None else None)) or None,
            "header": (r.header if r is not None else (s.header if s is not None else None)) or None,
            "source": self.cfg.meter.source if not self.cfg.meter.source.startswith("replay:") else "replay",
            "online": self.online(),
            "connected": s.connected if s is not None else None,
            "last_reading": r.time.isoformat() if r is not None else None,
            "stale_after_s": self.cfg.control.stale_after,
            "counters": {  # null (unknown) until the first status line of the reader and post-processor
                "telegrams_ok": s.frames_ok if s is not None else None,
                "rejected": s.frames_bad if s is not None else None,
                "crc_errors": s.crc_errors if s is not None else None,
                "parse_errors": s.parse_errors if s is not None else None,
                "decrypt_errors": s.decrypt_errors if s is not None else None,
                "dropped": s.dropped if s is not None else None,
                **{k: _count(c, k) for k in ("readings", "gaps", "sink_dropped", "web_dropped")},
                "live_clients_dropped": self.live_dropped,
            },
            "live_clients": len(self.subscribers),
            "lag_s": lag_s,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "time": datetime.now(UTC).astimezone().isoformat(),
            "version": __version__,
        }


def _count(counters: dict[str, Any], key: str) -> int | None:
    value = counters.get(key)
    return None if value is None else int(value)
