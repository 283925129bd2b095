"""Main's side of the [meter:NAME] processes: start, stop and restart single meters while the rest runs.

    meters_dir/NAME.ini changed (the web API's POST/PUT/DELETE, or a person)
      -> each file validated alone by the INI's own parser (a bad file: its message logged once, not applied;
         a meter already running keeps its last good settings)
      -> the new set checked as a whole (names, relay conditions; a set that fails is not applied)
      -> added: its process starts; changed: its process stops, then starts with the new settings;
         removed: its process stops
      -> the post-processor is told the new set (board, quantities, sinks per meter) and, at once, that a
         meter stopping or dying is offline / error with the reason (its relays go safe)

The P1 reader, the post-processor, the web process and the relays never restart for this.

The queues: a post-processor forked at the start cannot be handed a queue made later, so main makes
`len(meters) + SPARE_SLOTS` (KILLED_SLOTS without meters_dir) queues (slots) before forking and gives
each meter process one. A slot whose process ended cleanly is free again; one whose process was killed
is retired (its lock may be held by the dead writer) and the restarted process gets a fresh slot while
there is one. Messages to the post-processor go over one pipe (`control`):

    ("meters", (MeterSpec, ...))                      the meter set now
    ("down", NAME, "offline" | "error", reason, t)    NAME's process stopped or died at wall time t
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.errors import ConfigError
from app.meters import MeterSpec, check_meters
from app.supervision import METER, Child, Supervisor

if TYPE_CHECKING:
    from app.config import Config

log = logging.getLogger("app.main")
METER_QUEUE = 64  # readings waiting from one meter process (live data: the oldest is dropped)
SPARE_SLOTS = 8  # queues for meters added while running (with [general] meters_dir)
KILLED_SLOTS = 2  # without meters_dir: fresh queues for meters restarted after a kill
SCAN_EVERY_S = 2.0  # meters_dir is looked at this often
RETIRE_S = 10.0  # a meter asked to stop that is still running after this is killed


class MeterStop:
    """A meter process's stop signal: the appliance's stop event or its own (main stops it alone)."""

    def __init__(self, everyone: Any, own: Any) -> None:
        self.everyone = everyone
        self.own = own

    def is_set(self) -> bool:
        """Either event set."""
        return bool(self.own.is_set() or self.everyone.is_set())

    def set(self) -> None:
        """Stop this meter (the process saw main gone)."""
        self.own.set()


def read_file(path: Path) -> dict[str, str]:
    """One meters_dir/NAME.ini's keys; ConfigError naming the file for a bad one."""
    from app.web.meter_files import read_dir_file  # pure: INI text in, keys out

    return read_dir_file(path)


class Fleet:
    """The [meter:NAME] children of main: made at the start, changed with meters_dir while running."""

    def __init__(self, ctx: Any, cfg: Config, stop_event: Any, target: Callable[..., None], level: str,
                 spare: int) -> None:
        self.ctx = ctx
        self.cfg = cfg
        self.stop_event = stop_event
        self.target = target
        self.level = level
        self.queues: list[multiprocessing.Queue[Any]] = [ctx.Queue(maxsize=METER_QUEUE)
                                                          for _ in range(len(cfg.meters) + spare)]
        self.free = list(range(len(self.queues)))
        self.control_r, self.control_w = ctx.Pipe(duplex=False)
        self.specs: dict[str, MeterSpec] = {}
        self.items: dict[str, dict[str, str]] = {}  # meters_dir meters: the keys they run with
        self.children: dict[str, Child] = {}
        self.slot_of: dict[str, int] = {}
        self.pending: dict[str, MeterSpec] = {}  # name -> spec to start once its old process has ended
        self.retiring: dict[str, tuple[Child, float]] = {}  # name -> (old child, when asked to stop)
        self.directory = cfg.general.meters_dir
        self.snapshot: dict[str, tuple[int, int]] = {}
        self.refused: dict[str, tuple[int, int]] = {}  # a bad file's version, logged once
        self.refused_set: dict[str, tuple[int, int]] | None = None  # a snapshot whose meter set was refused
        self.next_scan = time.monotonic() + SCAN_EVERY_S
        in_dir = set(_snapshot(self.directory)) if self.directory else set()
        self.base = tuple(m for m in cfg.meters if m.name not in in_dir)  # from the main INI: never changed here
        for m in cfg.meters:
            self.specs[m.name] = m
        if self.directory:
            self.snapshot = _snapshot(self.directory)
            for name in in_dir:
                try:
                    self.items[name] = read_file(Path(self.directory) / f"{name}.ini")
                except ConfigError:
                    pass  # it loaded a moment ago; the next scan says what is wrong now

    # ------------------------------------------------------------------ start

    def initial_children(self) -> list[Child]:
        """One child per meter of the config."""
        return [self._child(spec) for spec in self.specs.values()]

    def _child(self, spec: MeterSpec) -> Child:
        slot = self.free.pop(0)
        self.slot_of[spec.name] = slot
        mq = self.queues[slot]
        spec = spec if spec.max_power is not None else dataclasses.replace(spec, max_power=self.cfg.meter.max_power)
        c = Child(f"meter-{spec.name}", METER, self.target,
                  (self._foreign(mq), spec, mq, MeterStop(self.stop_event, self.ctx.Event()), self.level,
                   self.cfg.general.log_interval))
        self.children[spec.name] = c
        return c

    def _foreign(self, mine: multiprocessing.Queue[Any]) -> list[Any]:
        """What a meter process closes after the fork: the other slots and main's end of the control pipe."""
        return [q for q in self.queues if q is not mine] + [self.control_w, self.control_r]

    def owned_by_main(self) -> None:
        """After the fork: main keeps the slots' ends (a meter it restarts inherits its queue from main)
        and the control pipe's write end only."""
        self.control_r.close()

    # ------------------------------------------------------------------ each round

    def round(self, sup: Supervisor, now: float) -> None:
        """Finish stops and restarts under way; every SCAN_EVERY_S, apply a changed meters_dir."""
        for name, (old, since) in list(self.retiring.items()):
            if old.process is not None and old.process.is_alive():
                if now - since > RETIRE_S:
                    log.error("meter %s did not stop in %g s; killing it", name, RETIRE_S)
                    old.process.kill()
                    old.process.join(1.0)
                    self._release(name, clean=False)
                    self._forget(sup, name, old)
                continue
            code = old.process.exitcode if old.process is not None else 0
            self._release(name, clean=code is not None and code >= 0)  # not killed by a signal
            self._forget(sup, name, old)
        for name, spec in list(self.pending.items()):
            if name in self.retiring:
                continue
            del self.pending[name]
            self._start(sup, spec)
        if self.directory and now >= self.next_scan:
            self.next_scan = now + SCAN_EVERY_S
            self.scan(sup)

    def _forget(self, sup: Supervisor, name: str, old: Child) -> None:
        del self.retiring[name]
        if old in sup.children:
            sup.remove(old)

    def _release(self, name: str, clean: bool) -> None:
        slot = self.slot_of.pop(name, None)
        if slot is None:
            return
        if clean:
            self.free.append(slot)
        else:
            log.warning("meter %s: its queue is retired (the process was killed); %d spare queues left", name,
                        len(self.free))

    def _start(self, sup: Supervisor, spec: MeterSpec) -> None:
        if not self.free:
            log.error("meter %s not started: no free meter queue (%d in use); restart the appliance to start it",
                      spec.name, len(self.queues))
            self.specs.pop(spec.name, None)
            self.send(("meters", tuple(self.specs.values())))
            return
        c = self._child(spec)
        sup.add(c)

    def _stop(self, sup: Supervisor, name: str, why: str) -> None:
        """Ask one meter's process to stop; the post-processor hears at once that it is offline."""
        c = self.children.pop(name, None)
        if c is None:
            return
        c.retiring = True
        c.args[3].own.set()
        self.retiring[name] = (c, time.monotonic())
        self.send(("down", name, "offline", why, time.time()))

    def died(self, c: Child, what: str, delay_s: float) -> None:
        """Supervisor: a meter's process died or hung; its status goes to error now, not after offline_after.
        A process killed by a signal may have died holding its queue's lock: its restart gets a fresh queue."""
        name = c.name.removeprefix("meter-")
        self.send(("down", name, "error", f"its process {what}; restarting in {delay_s:g} s", time.time()))
        code = c.process.exitcode if c.process is not None else 0
        if (code is None or code < 0) and self.free and self.slot_of.get(name) is not None:
            slot = self.free.pop(0)
            self._release(name, clean=False)
            self.slot_of[name] = slot
            mq = self.queues[slot]
            c.args = (self._foreign(mq), c.args[1], mq, *c.args[3:])

    def send(self, msg: tuple[Any, ...]) -> None:
        """One message to the post-processor (small; it reads the pipe every round)."""
        try:
            self.control_w.send(msg)
        except OSError as exc:  # the post-processor is gone: main notices its death on its own
            log.debug("control pipe: %s", exc)

    # ------------------------------------------------------------------ meters_dir

    def scan(self, sup: Supervisor) -> None:
        """Apply meters_dir's files when they changed."""
        snap = _snapshot(self.directory)
        if snap == self.snapshot or snap == self.refused_set:
            return
        from app.web.meter_files import validate

        good: dict[str, tuple[dict[str, str], MeterSpec]] = {}
        bad: set[str] = set()
        base_names = {m.name for m in self.base} | {self.cfg.meter.name}
        for name in sorted(snap):
            path = Path(self.directory) / f"{name}.ini"
            try:
                items = read_file(path)
                if name in base_names:
                    raise ConfigError(f"[meter:{name}] is in both {self.cfg.path} and {path}; keep one",
                                      f"meter:{name}")
                spec = validate(name, items)
            except ConfigError as exc:
                bad.add(name)
                if self.refused.get(name) != snap[name]:
                    self.refused[name] = snap[name]
                    keeps = " (it runs on with its last good settings)" if name in self.specs else ""
                    log.error("meters_dir: %s not applied%s; the other meters go on: %s", path, keeps, exc)
                continue
            self.refused.pop(name, None)
            good[name] = (items, spec)
        wanted: dict[str, MeterSpec] = {m.name: m for m in self.base}
        for name in sorted(set(snap) | set(self.items)):
            if name in good:
                wanted[name] = good[name][1]
            elif name in bad and name in self.specs and name in self.items:
                wanted[name] = self.specs[name]  # a bad edit of a running meter: it keeps the old settings
        try:
            from app.meters.mqtt_meter import with_broker

            check_meters(tuple(wanted.values()), self.cfg.meter.name, self.cfg.relays, self.cfg.site)
            specs = with_broker(tuple(wanted.values()), self.cfg.mqtt)
        except ConfigError as exc:
            self.refused_set = snap
            log.error("meters_dir: %s changed, not applied (the running meters go on): %s", self.directory, exc)
            return
        self.snapshot = snap
        self.refused_set = None
        new = {m.name: m for m in specs}
        new_items = {name: good[name][0] if name in good else self.items[name] for name in new
                     if name in good or name in self.items}
        added = [n for n in new if n not in self.specs]
        removed = [n for n in self.specs if n not in new]
        changed = [n for n in new if n in self.specs and n in new_items and new_items[n] != self.items.get(n)]
        self.items = new_items
        self.specs = new
        if not (added or removed or changed):
            return
        self.send(("meters", specs))
        for name in removed:
            log.info("meters_dir: %s removed; its process stops", name)
            self._stop(sup, name, "removed from meters_dir")
            self.pending.pop(name, None)
        for name in changed:
            log.info("meters_dir: %s changed; its process restarts with the new settings", name)
            self._stop(sup, name, "restarting: its settings changed")
            self.pending[name] = new[name]
        for name in added:
            log.info("meters_dir: %s added; its process starts", name)
            if name in self.retiring:  # removed a moment ago: the new one starts once the old has ended
                self.pending[name] = new[name]
            else:
                self._start(sup, new[name])


def _snapshot(directory: str) -> dict[str, tuple[int, int]]:
    """NAME -> (mtime, size) of each meters_dir/NAME.ini."""
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return {}
    out = {}
    for e in entries:
        if e.name.endswith(".ini") and not e.name.startswith("."):
            try:
                st = e.stat()
            except OSError:
                continue
            out[e.name[:-4]] = (st.st_mtime_ns, st.st_size)
    return out

