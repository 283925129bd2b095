"""A [meter:NAME]'s reader process: poll (or listen), turn each Sample into a Reading, queue it.

    every poll_interval:  poller.poll() -> Sample -> Reading(meter=NAME, role=...) -> plausibility gate -> queue
                          MeterError    -> MeterState(NAME, "error", reason) on change, logged rate-limited
    on change back:       MeterState(NAME, "online")

Live data: when the queue is full the oldest item is dropped and counted (app.supervision.queue_putter).
The process imports only its own kind's module (and that kind's I/O library) after the fork.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_mod
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any

from app import logutil
from app.meters import MeterSpec, kind
from app.meters.sample import MeterError, Sample, to_reading
from app.protocols.plausibility import DEFAULT_MAX_POWER_W, PlausibilityGate
from app.records import STOPPED, MeterState, Reading
from app.supervision import Heartbeat, main_watch, queue_putter, stop_check

if TYPE_CHECKING:
    from app.meters.fleet import MeterStop

log = logging.getLogger("app.meters")


class Output:
    """Where a meter kind delivers: `sample(s)` per value set, `error(reason)` when an attempt failed."""

    def __init__(self, spec: MeterSpec, put: Callable[[Any, bool], bool], log_interval_s: float = 60.0) -> None:
        self.spec = spec
        self._put = put
        self.seq = 0
        self.state = ""
        self.errors = 0
        self.dropped = 0
        self.implausible = 0
        # V and I of a [meter:NAME] are one phase's while its power may be all three's: no V x I check
        self.gate = PlausibilityGate(spec.max_power or DEFAULT_MAX_POWER_W, check_apparent=False)
        self.limited = logutil.RateLimited(log, log_interval_s)

    def sample(self, sample: Sample | Reading) -> None:
        """One good value set: a Reading on the queue (and `online` when that is news). A kind that parses
        OBIS lines itself (IEC 62056-21) hands a whole Reading; it gets the meter's name, role and seq."""
        self.seq += 1
        if isinstance(sample, Reading):
            reading = replace(sample, seq=self.seq, meter=self.spec.name, role=self.spec.role,
                              meter_id=self.spec.name)
        else:
            reading = to_reading(sample, self.spec.name, self.spec.role, self.spec.protocol, self.seq,
                                 datetime.now(UTC), invert=self.spec.invert)
        why = self.gate.check(reading)
        if why:  # counted and logged, never delivered (as the P1 reader's gate)
            self.implausible += 1
            self.limited.warning("implausible", "meter %s: implausible reading: %s (%d so far)", self.spec.name,
                                 why, self.implausible)
            return
        if self.state != "online":
            if self.state == "error":
                log.info("meter %s: answering again", self.spec.name)
            self.state = "online"
            self._put(MeterState(self.spec.name, "online"), False)
        if not self._put(reading, False):
            self.dropped += 1
            self.limited.warning("dropped", "meter %s: queue full, dropped the oldest reading (%d so far)",
                                 self.spec.name, self.dropped)

    reading = sample  # a kind that builds Readings says out.reading(r)

    def error(self, reason: str) -> None:
        """A failed attempt: `error` with its reason (sent when the reason changes)."""
        self.errors += 1
        self.limited.warning("error", "meter %s: %s (%d failed attempts so far)", self.spec.name, reason, self.errors)
        if self.state != f"error:{reason}":
            self.state = f"error:{reason}"
            self._put(MeterState(self.spec.name, "error", reason), False)


def poll_loop(spec: MeterSpec, out: Output, stop: Callable[[], bool],
              open_poller: Callable[[MeterSpec], Any] | None = None) -> None:
    """Poll every poll_interval until stop() (each poll starts on the interval's grid, never two at once)."""
    assert spec.poll_interval is not None
    opener = open_poller or kind(spec.protocol).open_poller
    poller = opener(spec)
    logutil.settle_gc()  # the kind's I/O library is imported now: out of the collector's way too
    try:
        next_at = time.monotonic()
        while not stop():
            try:
                out.sample(poller.poll())
            except MeterError as exc:
                out.error(str(exc))
            next_at += spec.poll_interval
            now = time.monotonic()
            if next_at < now:  # a slow answer: skip the missed slots rather than poll back to back
                next_at = now + spec.poll_interval - (now - next_at) % spec.poll_interval
            while not stop():
                left = next_at - time.monotonic()
                if left <= 0:
                    break
                time.sleep(min(left, 0.1))
    finally:
        poller.close()


def run(spec: MeterSpec, q: multiprocessing.Queue[Any], stop_event: Event | MeterStop, log_level: str,
        log_interval_s: float, heartbeat: Heartbeat | None = None) -> None:
    """Entry point of a [meter:NAME] process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # main coordinates shutdown
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logutil.setup(log_level)
    log.info("meter %s process started (pid %d, %s, role %s)", spec.name, os.getpid(), spec.protocol, spec.role)
    main_gone = main_watch()
    put = queue_putter(q)
    stop = stop_check(stop_event, heartbeat, f"meter {spec.name}", log, main_gone)

    out = Output(spec, put, log_interval_s)
    try:
        mod = kind(spec.protocol)
        logutil.settle_gc()
        if spec.poll_interval is not None:
            poll_loop(spec, out, stop, mod.open_poller)
        else:
            mod.run(spec, out, stop)
    except Exception:
        log.exception("meter %s crashed", spec.name)
        raise SystemExit(1) from None
    try:
        q.put(STOPPED, timeout=0.5)
    except queue_mod.Full:
        q.cancel_join_thread()
    if main_gone():
        q.cancel_join_thread()
    q.close()
    q.join_thread()
    raise SystemExit(0)
