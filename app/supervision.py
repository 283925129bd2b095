"""Main's supervision of its children: heartbeats, roles, the systemd watchdog (sd_notify).

Each child gets a `Heartbeat` (a shared double holding the monotonic time of its last tick,
written lock-free by the child, read by main) and a role that says what its death or hang
means for the relays:

    SOURCE   a meter reader: death or hang -> main kills it, tells the controller, which puts
             every relay safe ("reader process died"), then stops everything; exit 1.
             A replay's source ending with 0 is done, not dead.
    CONTROL  the post-processor (owns the relays): death or hang -> main kills it (the kernel
             releases its GPIO lines), stops the rest; exit 1 (2 when it exited with 2).
             In a replay, exit 0 means the replay is done.
    METER    a [meter:NAME] reader: death or hang -> main kills it, logs it and starts it again after
             a backoff (RESTART_FIRST_S doubling to RESTART_MAX_S; back to the first after a process
             that lived RESTART_RESET_S); the rest go on meanwhile (the post-processor sees the meter
             go offline, and the relays that need it go safe). main's meter fleet (app.meters.fleet) also
             starts, stops (`retiring`: its end is no failure) and restarts single METER children while
             the rest runs, through `each_round`, `add` and `remove`; `meter_down` tells it of a death.
    SERVICE  anything else (a web process): death or hang -> stop everything; exit 1.

Timings: children tick at least every 0.5 s; main checks four times a second; a child counts as
ticking while its last tick is under `FRESH_S` old and as hung after `HUNG_S` without one (after
`STARTUP_S` for the first tick). Main sends WATCHDOG=1 to systemd every WATCHDOG_USEC/4 only
while every child ticks, so a hung main (or a child main failed to kill) is restarted by systemd.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import queue as queue_mod
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.context import ForkContext, ForkProcess
from typing import Any

log = logging.getLogger("app.main")

SOURCE = "source"
CONTROL = "control"
SERVICE = "service"
METER = "meter"

TICK_EVERY_S = 0.5  # children beat at least this often
FRESH_S = 2.0  # a child ticking: last beat younger than this (else no WATCHDOG=1)
HUNG_S = 10.0  # no beat for this long: the child is killed (pyserial's socket:// connect blocks up to 5 s)
STARTUP_S = 30.0  # the first beat may take this long (imports, client set-up on a loaded Pi)
STOP_TIMEOUT_S = 1.9
RESTART_FIRST_S = 1.0  # a METER child's first restart comes after this
RESTART_MAX_S = 60.0  # doubling up to this
RESTART_RESET_S = 60.0  # a METER child that lived this long starts the backoff afresh when it ends


def restart_delay(restarts: int) -> float:
    """Seconds before the n-th restart in a row (1, 2, 4, ... up to RESTART_MAX_S)."""
    return min(RESTART_MAX_S, RESTART_FIRST_S * 2.0 ** min(max(restarts - 1, 0), 30))


class Heartbeat:
    """A child's tick, shared with main: `beat()` in the child, `age_s()` in main."""

    def __init__(self, ctx: ForkContext) -> None:
        self._t: Any = ctx.Value("d", 0.0, lock=False)  # a ctypes double in shared memory
        self._last = 0.0

    def beat(self) -> None:
        """Called from the child's loop; cheap enough for every iteration."""
        now = time.monotonic()
        if now - self._last >= 0.1:
            self._last = now
            self._t.value = now  # CLOCK_MONOTONIC is system-wide: main compares it with its own

    def age_s(self, now: float) -> float | None:
        """Seconds since the last beat; None before the first."""
        t = self._t.value
        return None if t == 0.0 else now - t


def main_watch() -> Callable[[], bool]:
    """In a child: a check "is main gone?". By parent PID, not `parent_process().is_alive()`: that
    sentinel pipe's write end is inherited by every sibling forked later, so it would say main
    lives on while any younger sibling does."""
    main_pid = os.getppid()
    return lambda: os.getppid() != main_pid


def stop_check(stop_event: Any, heartbeat: Heartbeat | None, who: str, logger: logging.Logger,
               main_gone: Callable[[], bool]) -> Callable[[], bool]:
    """A child's `stop()`: beats its heartbeat, says whether to stop (asked to, or main is gone: checked
    at most every 0.5 s with `main_gone` from main_watch(), then logged and the stop event set)."""
    last_check = [0.0]

    def stop() -> bool:
        if heartbeat is not None:
            heartbeat.beat()
        if stop_event.is_set():
            return True
        now = time.monotonic()
        if now - last_check[0] > 0.5:
            last_check[0] = now
            if main_gone():
                logger.error("main process is gone; %s stops", who)
                stop_event.set()
                return True
        return False

    return stop


def no_beat() -> None:
    """Heartbeat stand-in for code run outside a supervised child (tests, tools)."""


@dataclass
class Child:
    """One supervised process: its name, role and entry point (called with `heartbeat` as last argument)."""

    name: str
    role: str
    target: Callable[..., None]
    args: tuple[Any, ...] = ()
    finishes: bool = False  # a replay: exit 0 is a normal end
    heartbeat: Heartbeat | None = None
    process: ForkProcess | None = None
    started_at: float = 0.0
    ended: bool = field(default=False)
    restarts: int = 0  # METER: restarts in a row (reset after a process that lived RESTART_RESET_S)
    restarts_total: int = 0  # METER: every restart since main started
    restart_at: float | None = None  # METER: when the next restart is due
    retiring: bool = False  # METER: asked to stop alone (settings changed, removed): its end is no failure

    @property
    def proc(self) -> ForkProcess:
        """The started process."""
        assert self.process is not None
        return self.process


class Notifier:
    """sd_notify in plain Python: datagrams to $NOTIFY_SOCKET (nothing when it is unset)."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = None
        if path.startswith("@"):
            self.address = b"\0" + path[1:].encode()  # abstract namespace
        elif path.startswith("/"):
            self.address = path
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        self.watchdog_s: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._last_ping = 0.0
        self.failed = False

    def send(self, message: str) -> None:
        """One notification (READY=1, WATCHDOG=1, STATUS=..., STOPPING=1)."""
        if self.address is None:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode(), self.address)
        except OSError as exc:
            if not self.failed:
                self.failed = True
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)

    def watchdog(self, now: float) -> None:
        """WATCHDOG=1 every quarter of WatchdogSec."""
        if self.watchdog_s is None or now - self._last_ping < self.watchdog_s / 4:
            return
        self._last_ping = now
        self.send("WATCHDOG=1")

    def close(self) -> None:
        """Release the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class Supervisor:
    """Starts the children, watches their deaths and heartbeats, and decides the exit code."""

    def __init__(self, ctx: ForkContext, children: list[Child], stop_event: Any, source_failed: Any,
                 notifier: Notifier | None = None, each_round: Callable[[Supervisor, float], None] | None = None,
                 meter_down: Callable[[Child, str, float], None] | None = None) -> None:
        self.ctx = ctx
        self.each_round = each_round  # main's meter fleet: start, stop, restart single METER children
        self.meter_down = meter_down  # a METER child died or hung: (child, what, seconds to its restart)
        self.children = children
        self.stop_event = stop_event
        self.source_failed = source_failed  # tells the CONTROL child to put relays safe
        self.notifier = notifier or Notifier()
        self.stopping: list[str] = []  # the signal that asked us to stop
        self._ready = False
        self._unhealthy: set[str] = set()

    def start(self) -> None:
        """Start every child (CONTROL first, so relays are claimed before any reading arrives)."""
        order = sorted(self.children, key=lambda c: c.role != CONTROL)
        for c in order:
            self._spawn(c)

    def _spawn(self, c: Child) -> None:
        c.heartbeat = Heartbeat(self.ctx)
        c.process = self.ctx.Process(target=c.target, args=(*c.args, c.heartbeat), name=c.name)
        c.process.start()
        c.started_at = time.monotonic()
        c.ended = False
        c.restart_at = None

    def add(self, c: Child) -> None:
        """Start one more child while running (a meter added through meters_dir)."""
        self.children.append(c)
        self._spawn(c)

    def remove(self, c: Child) -> None:
        """Forget a child that has ended (a meter removed or replaced)."""
        if c.process is not None:
            c.process.join(0.1)
        self.children.remove(c)
        self._unhealthy.discard(c.name)

    def _restart_due(self, now: float) -> None:
        """Start again each METER child whose backoff has passed."""
        for c in self.children:
            if c.ended and not c.retiring and c.restart_at is not None and now >= c.restart_at:
                c.proc.join(0.1)  # reap the old one
                self._spawn(c)
                log.warning("%s restarted (restart %d in a row, %d since the start)", c.name, c.restarts,
                            c.restarts_total)

    def request_stop(self, why: str) -> None:
        """From a signal handler: stop at the next round."""
        if not self.stopping:
            self.stopping.append(why)
            self.stop_event.set()

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Watch until a stop request, a death or a hang; stop the rest; return the exit code."""
        code = self._watch()
        self.notifier.send("STOPPING=1")
        code = self._stop_all(code)
        self.notifier.close()
        log.info("stopped (exit %d)", code)
        return code

    def _watch(self) -> int:
        while True:
            sentinels = [c.proc.sentinel for c in self.children if not c.ended]
            multiprocessing.connection.wait(sentinels, timeout=0.25)
            if self.stopping:
                log.info("%s: stopping", self.stopping[0])
                return 0
            now = time.monotonic()
            if self.each_round is not None:
                self.each_round(self, now)
            self._restart_due(now)
            alive = {c.name: c.proc.is_alive() for c in self.children}  # once per round
            for c in self.children:
                if c.ended or alive[c.name]:
                    continue
                c.ended = True
                if c.retiring:  # stopped on its own (main's fleet asked it): not a failure
                    continue
                if c.finishes and c.proc.exitcode == 0:
                    if c.role == CONTROL:  # a replay's post-processor ends after END: all written
                        self._reap_finished()
                        log.info("replay done; exit 0")
                        return 0
                    continue  # a replay's reader is done: the post-processor drains and flushes
                code = self._failed(c, f"exited (code {c.proc.exitcode})", c.proc.exitcode)
                if code is not None:
                    return code
            healthy = True
            for c in self.children:
                if c.ended:
                    continue
                hb = c.heartbeat
                assert hb is not None
                age = hb.age_s(now)
                if age is None:
                    if now - c.started_at > STARTUP_S:
                        c.proc.kill()
                        code = self._failed(c, f"never started ticking in {STARTUP_S:g} s; killed it", None)
                        if code is not None:
                            return code
                        continue
                    healthy = False
                    continue
                if age > HUNG_S:
                    c.proc.kill()
                    code = self._failed(c, f"hung (no heartbeat for {age:.1f} s); killed it", None)
                    if code is not None:
                        return code
                    continue
                if age > FRESH_S:
                    healthy = False
                    if c.name not in self._unhealthy:
                        self._unhealthy.add(c.name)
                        self.notifier.send(f"STATUS={c.name}: no heartbeat for {age:.1f} s")
                        log.debug("%s: no heartbeat for %.1f s", c.name, age)
                elif c.name in self._unhealthy:
                    self._unhealthy.discard(c.name)
                    self.notifier.send("STATUS=running")
                    log.debug("%s ticks again", c.name)
            if healthy:
                if not self._ready:
                    self._ready = True
                    self.notifier.send("READY=1")
                    self.notifier.send("STATUS=running")
                self.notifier.watchdog(now)

    def _failed(self, c: Child, what: str, exitcode: int | None) -> int | None:
        """Log a child's end; the exit code when everything must stop, None when the rest go on."""
        if c.role == METER:
            c.ended = True
            now = time.monotonic()
            if now - c.started_at >= RESTART_RESET_S:
                c.restarts = 0  # it ran well for a while: this is a new failure, not the same one again
            c.restarts += 1
            c.restarts_total += 1
            delay = restart_delay(c.restarts)
            c.restart_at = now + delay
            log.error("%s %s; its meter is offline until restart %d in %g s (%d in a row), the other meters go on",
                      c.name, what, c.restarts_total, delay, c.restarts)
            if self.meter_down is not None:
                self.meter_down(c, what, delay)
            return None
        if c.role == SOURCE:
            log.error("%s %s; relays to safe state, stopping", c.name, what)
            self.source_failed.set()
            return 1
        if c.role == CONTROL:
            log.error("%s %s; stopping (its GPIO lines are released: see the README's wiring section for "
                      "what the relays do then)", c.name, what)
            self.stop_event.set()
            return 2 if exitcode == 2 else 1
        log.error("%s %s; stopping", c.name, what)
        self.stop_event.set()
        return 1

    def _reap_finished(self) -> None:
        for c in self.children:
            if c.proc.is_alive():
                c.proc.join(STOP_TIMEOUT_S)
                if c.proc.is_alive():
                    c.proc.kill()
                    c.proc.join(1.0)

    def _stop_all(self, code: int) -> int:
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for c in self.children:
            c.proc.join(max(0.05, deadline - time.monotonic()))
        for c in self.children:
            if c.proc.is_alive():
                log.error("%s did not stop in time; killing it", c.name)
                c.proc.kill()
                c.proc.join(1.0)
                code = code or 1
        for c in self.children:
            if code == 0 and c.role == CONTROL and c.proc.exitcode not in (0, None):
                code = 1
        return code


def queue_putter(q: multiprocessing.Queue[Any], spare: tuple[type, ...] = ()) -> Callable[[Any, bool], bool]:
    """A reader's put(item, wait) -> delivered. With wait: up to 0.2 s for room. Without: a full queue loses its
    oldest item instead (live data), except that a `spare` item (counters, resent soon) is itself dropped."""

    def put(item: Any, wait: bool) -> bool:
        if wait:
            try:
                q.put(item, timeout=0.2)
                return True
            except queue_mod.Full:
                return False
        try:
            q.put_nowait(item)
            return True
        except queue_mod.Full:
            if isinstance(item, spare):  # never drop a reading for it
                return False
            try:
                q.get(timeout=0.05)  # drop the oldest (the timeout lets the feeder thread catch up)
            except queue_mod.Empty:
                pass
            try:
                q.put_nowait(item)
            except queue_mod.Full:
                pass
            return False

    return put
