"""The post-processor's side of the web process: live state out, relay commands in.

    post-processor --(live: bounded, oldest dropped, never blocks)--> web process
    post-processor <--(commands: bounded, web waits for the outcome)-- web process

Messages on `live` are plain tuples (pickled by the queue's feeder thread, off the control path):

    ("reading", Reading, {relay: state})   every reading, after the relay decision
    ("status", ReaderStatus, counters)      reader/sink counters, now and then
    ("relays", [relay detail, ...])         every tick and after every switch
    ("outcome", request_id, {"outcome", "detail", "until"}, [relay detail, ...])   one command's result
    ("meter", NAME, Reading)                a [meter:NAME] meter's reading
    ("meter_status", NAME, status, reason)  a [meter:NAME] meter went online / offline / error
    ("meters", (MeterSpec, ...))            the [meter:NAME] meters now (main changed them from meters_dir)

Only this module and app/web/relays.py are imported by the post-processor (no web library).
"""

from __future__ import annotations

import logging
import multiprocessing
import queue as queue_mod
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from app import logutil
from app.records import ReaderStatus, Reading
from app.web.relays import relay_details

if TYPE_CHECKING:
    from app.control.controller import Controller, OverrideResult
    from app.control.override import RelayView

log = logging.getLogger("app.web.link")
LIVE_QUEUE = 256  # messages held for a web process that is behind (the oldest dropped beyond this)
CHANNEL_QUEUE = 64  # messages in the pipe between the processes
COMMAND_QUEUE = 16


class Channels:
    """The two queues between post-processor and web process (made by main before forking)."""

    def __init__(self, ctx: Any) -> None:
        self.live: multiprocessing.Queue[Any] = ctx.Queue(CHANNEL_QUEUE)
        self.commands: multiprocessing.Queue[Any] = ctx.Queue(COMMAND_QUEUE)


class WebLink:
    """Used by the post-processor: publish without ever blocking, take relay commands.

    `publish` appends to a ring (a deque with maxlen: the oldest message falls out, counted);
    one feeder thread moves the ring into the bounded queue to the web process and is the only
    one that ever waits on it."""

    def __init__(self, channels: Channels, log_interval_s: float = 60.0) -> None:
        self.live = channels.live
        self.live.cancel_join_thread()  # a web process that stopped reading must not hold up our exit
        self.commands = channels.commands
        self.ring: deque[tuple[Any, ...]] = deque(maxlen=LIVE_QUEUE)
        self.wake = threading.Event()
        self.dropped = 0
        self.limited = logutil.RateLimited(log, log_interval_s)
        threading.Thread(target=self._feed, name="web-link", daemon=True).start()

    def publish(self, msg: tuple[Any, ...]) -> None:
        """Queue one message for the web process; never waits (the oldest is dropped and counted)."""
        if len(self.ring) == LIVE_QUEUE:
            self.dropped += 1
            self.limited.warning("full", "web process is falling behind: %d live messages dropped", self.dropped)
        self.ring.append(msg)
        self.wake.set()

    def _feed(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            while self.ring:
                try:
                    msg = self.ring.popleft()
                except IndexError:
                    break
                try:
                    self.live.put(msg)  # waits while the web process is behind; the ring drops meanwhile
                except (OSError, ValueError):  # the queue was closed: the process is ending
                    return

    def reading(self, reading: Reading, states: dict[str, bool]) -> None:
        """One reading and the relay states it left."""
        self.publish(("reading", reading, states))

    def meter(self, name: str, reading: Reading) -> None:
        """A [meter:NAME] meter's reading."""
        self.publish(("meter", name, reading))

    def meter_status(self, name: str, status: str, reason: str) -> None:
        """A [meter:NAME] meter's status changed (online, offline, error with the reason)."""
        self.publish(("meter_status", name, status, reason))

    def status(self, status: ReaderStatus, counters: dict[str, Any]) -> None:
        """Reader counters and the post-processor's own."""
        self.publish(("status", status, counters | {"web_dropped": self.dropped}))

    def relays(self, controller: Controller | None, view: dict[str, RelayView] | None = None) -> None:
        """Relay states, modes, reasons, pending commands and timers (on every change and every tick)."""
        if controller is not None:
            self.publish(("relays", relay_details(controller, view)))

    def take_commands(self, command: Callable[[str, str], Future[OverrideResult]]
                      ) -> list[tuple[int, Future[OverrideResult]]]:
        """Hand every waiting web command to the post-processor's own override path (as MQTT `set`)."""
        taken: list[tuple[int, Future[OverrideResult]]] = []
        while len(taken) < 64:
            try:
                request_id, name, mode = self.commands.get_nowait()
            except (queue_mod.Empty, OSError, EOFError):
                break
            log.info("relay %s: mode %s requested over the web API", name, mode)
            taken.append((request_id, command(name, mode)))
        return taken

    def report(self, taken: list[tuple[int, Future[OverrideResult]]], controller: Controller | None) -> None:
        """After the tick applied them: tell the web process what became of each command, and the relays now."""
        details = relay_details(controller) if controller is not None else []
        self.publish(("relays", details))
        for request_id, fut in taken:
            if fut.done():
                r = fut.result()
                outcome = {"outcome": r.outcome, "detail": r.detail,
                           "until": r.until.isoformat() if r.until is not None else None}
            else:  # not applied in this tick (cannot happen with a controller): say so
                outcome = {"outcome": "pending", "detail": "", "until": None}
            self.publish(("outcome", request_id, outcome, details))
