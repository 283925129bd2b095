"""The post-processor process: readings off the queue -> relay decisions -> sinks.

Relay decisions are made on this process's main thread, on every reading, before anything
else. Each sink runs in its own `SinkWorker` thread behind a bounded queue, so a slow or
dead sink never delays relay control or the other sinks.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_mod
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import date
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from app import __version__, logutil
from app.config import Config
from app.errors import ConfigError
from app.meters.board import Board
from app.records import END, STOPPED, MeterState, ReaderStatus, Reading
from app.sinks import MeterOnly, Sink, SinkIncomplete
from app.supervision import TICK_EVERY_S, Heartbeat, main_watch, no_beat

if TYPE_CHECKING:  # gpiozero is imported by the post-processor only when relays are configured
    from app.alerts import Alerts
    from app.control.controller import Controller, OverrideResult, SwitchEvent
    from app.meters import MeterSpec
    from app.web.link import Channels, WebLink

log = logging.getLogger("app.pipeline")
SINK_QUEUE = 10_000
# A replay waits for its sinks instead of dropping: a short queue is enough, and bounds what a sink that falls
# behind holds (~3.7 kB a reading: 4000 held up to 15 MB per queue, which the process kept after the burst).
REPLAY_SINK_QUEUE = 500
_NOTHING = object()
DRAIN_S = 0.5  # on SIGTERM: readings still on their way from the reader
CLOSE_S = 1.1  # on SIGTERM: sinks flush in parallel within this (main's whole budget is 2 s)
TICK_S = 1.0
LAG_SANE_S = 3600.0  # a larger mean lag is a meter clock set wrong (or simulated), not transport delay


class SinkWorker:
    """Runs one sink in its own thread behind a bounded queue (oldest dropped, counted)."""

    def __init__(self, sink: Sink, maxsize: int = SINK_QUEUE, block_when_full: bool = False,
                 log_interval_s: float = 60.0, beat: Callable[[], None] = no_beat) -> None:
        self.sink = sink
        self.beat = beat  # the caller's heartbeat, kept while it waits for room
        self.block_when_full = block_when_full  # a replay has no real time to keep: wait, lose nothing
        self.q: queue_mod.Queue[tuple[str, tuple[Any, ...]]] = queue_mod.Queue(maxsize)
        self.dropped = 0
        self.failed = False  # close() raised: data was left unwritten
        self.closing = threading.Event()
        self.limited = logutil.RateLimited(log, log_interval_s)
        self.thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)
        self.thread.start()

    def submit(self, method: str, *args: Any) -> None:
        """Queue a call; live it never blocks the caller (the oldest item is dropped and counted)."""
        if self.block_when_full:
            while True:
                try:
                    self.q.put((method, args), timeout=TICK_EVERY_S)
                    return
                except queue_mod.Full:
                    self.beat()  # waiting for a slow sink is not a hang
        while True:
            try:
                self.q.put_nowait((method, args))
                return
            except queue_mod.Full:
                try:
                    self.q.get_nowait()
                    self.dropped += 1
                    self.limited.warning("full", "sink %s is falling behind: dropped %d items",
                                         self.sink.name, self.dropped)
                except queue_mod.Empty:
                    pass

    def _run(self) -> None:
        next_tick = time.monotonic() + TICK_S
        while True:
            timeout = max(0.0, next_tick - time.monotonic())
            try:
                item = self.q.get(timeout=timeout)
            except queue_mod.Empty:
                item = ("tick", ())
            method, args = item
            now = time.monotonic()
            if method == "tick" or now >= next_tick:
                next_tick = now + TICK_S
                self._call("tick", (now,))
            if method != "tick":
                self._call(method, args)
            if self.closing.is_set() and self.q.empty():
                break
        self._call("close", ())

    def _call(self, method: str, args: tuple[Any, ...]) -> None:
        try:
            getattr(self.sink, method)(*args)
        except SinkIncomplete as exc:
            self.failed = True
            log.error("sink %s: %s", self.sink.name, exc)
        except Exception:  # the top of this sink's thread: one sink's bug must not stop the others
            if method == "close":
                self.failed = True
                log.exception("sink %s failed to close", self.sink.name)
            else:
                self.limited.log(logging.ERROR, method, "sink %s failed in %s", self.sink.name, method,
                                 exc_info=True)

    def request_close(self) -> None:
        """Ask the thread to finish what it holds, then close the sink (returns at once)."""
        self.closing.set()
        try:
            self.q.put_nowait(("tick", ()))  # wake it; a full queue means it is busy anyway
        except queue_mod.Full:
            pass

    def join(self, timeout_s: float | None) -> bool:
        """Wait for the thread to end; True if it did in time and its sink closed complete."""
        self.thread.join(timeout_s)
        return not self.thread.is_alive() and not self.failed


def build_sinks(cfg: Config, on_command: Callable[[str, str], object] | None) -> list[Sink]:
    """The enabled sinks (their client libraries are imported only when enabled).

    With [meter:NAME] sections, CSV gets a file set per meter (the [meter] meter's files keep their
    names, another meter's go to `<directory>/<NAME>/`) and MQTT a topic tree per meter
    (`<prefix>/<NAME>/...`, its own connection and availability); InfluxDB tags each point with
    `meter`, the history keys by meter id."""
    relay_names = [r.name for r in cfg.relays]
    sinks: list[Sink] = []
    live = cfg.meter.replay_path is None
    extra = [m for m in cfg.meters if live]
    per_meter = bool(extra) or (live and bool(cfg.general.meters_dir))  # meters may come while running
    if cfg.csv.enabled:
        from app.sinks.csv_sink import CsvSink

        main_csv: Sink = CsvSink(cfg.csv, ZoneInfo(cfg.meter.timezone), relay_names)
        sinks.append(MeterOnly(main_csv, "") if per_meter else main_csv)
    if cfg.influxdb.enabled:
        from app.sinks.influx import InfluxSink

        sinks.append(InfluxSink(cfg.influxdb))
    if cfg.mqtt.enabled:
        from app.sinks.mqtt import MqttSink

        main_mqtt: Sink = MqttSink(cfg.mqtt, cfg.mqtt_translate, relay_names, on_command, __version__,
                                   stale_after=cfg.control.stale_after)
        sinks.append(MeterOnly(main_mqtt, "") if per_meter else main_mqtt)
    if cfg.history.enabled:
        from app.sinks.history import HistorySink

        sinks.append(HistorySink(cfg.history, ZoneInfo(cfg.meter.timezone), cfg.meter.replay_path is not None))
    for m in extra:
        sinks += meter_sinks(cfg, m)
    return sinks


def meter_sinks(cfg: Config, m: MeterSpec) -> list[Sink]:
    """A [meter:NAME] meter's own CSV file set and MQTT topic tree (the other sinks key by meter)."""
    from dataclasses import replace

    sinks: list[Sink] = []
    if cfg.csv.enabled:
        from app.sinks.csv_sink import CsvSink

        sub = replace(cfg.csv, directory=os.path.join(cfg.csv.directory, m.name))
        sinks.append(MeterOnly(CsvSink(sub, ZoneInfo(cfg.meter.timezone), []), m.name))
    if cfg.mqtt.enabled:
        from app.sinks.mqtt import MqttSink

        own = replace(cfg.mqtt, client_id=f"{cfg.mqtt.client_id}-{m.name}"[:64] if cfg.mqtt.client_id else "")
        off = replace(cfg.mqtt_translate, enabled=False)
        sinks.append(MeterOnly(MqttSink(own, off, [], None, __version__, stale_after=m.offline_after), m.name))
    return sinks


def seed_month_peak(controller: Controller, cfg: Config) -> None:
    """Peak shaving starts from this month's peak in the history store (a store it cannot read: logged)."""
    from app.store.query import HistoryQuery

    try:
        query = HistoryQuery(cfg)
        try:
            cap = query.capacity()
        finally:
            query.close()
    except (OSError, sqlite3.Error) as exc:
        log.warning("peak shaving: this month's peak not read from the history store (%s)", exc)
        return
    if cap.get("month_peak_kw") is not None:
        controller.seed_month_peak(date.fromisoformat(cap["month"] + "-01"), float(cap["month_peak_kw"]))


class PostProcessor:
    """Decisions and exports for each reading; independent of multiprocessing for tests."""

    def __init__(self, cfg: Config, sinks: list[Sink] | None = None, pin_factory: Any = None,
                 simulate_relays: bool = False, beat: Callable[[], None] = no_beat) -> None:
        """`simulate_relays`: gpiozero's MockFactory instead of real pins (a replay's default)."""
        self.cfg = cfg
        # Manual commands (MQTT network thread, web API): the latest per relay, taken by tick().
        self._commands: dict[str, tuple[str, Future[OverrideResult]]] = {}
        self._commands_lock = threading.Lock()
        self.commands_ignored = 0
        self._command_log = logutil.RateLimited(log, cfg.general.log_interval)
        self._relay_revision = -1
        self.controller: Controller | None = None
        self.beat = beat
        if cfg.relays:
            from app.control.controller import Controller

            if simulate_relays and pin_factory is None and not cfg.control.dry_run:
                from gpiozero.pins.mock import MockFactory

                pin_factory = MockFactory()
                log.info("replay: relays simulated on mock pins, no real pin is touched "
                         "(--replay-relays drives them)")
            self.controller = Controller(cfg.control, cfg.relays, pin_factory=pin_factory,
                                         tz=ZoneInfo(cfg.meter.timezone), simulated=simulate_relays,
                                         capacity=cfg.capacity, tariff=cfg.tariff if cfg.tariff.priced else None,
                                         mqtt=cfg.mqtt if cfg.mqtt.enabled else None,
                                         state_file="" if cfg.meter.replay_path is not None else cfg.control.state_file)
            if cfg.capacity.enabled and cfg.history.enabled:
                seed_month_peak(self.controller, cfg)
        built = sinks if sinks is not None else build_sinks(cfg, self._on_command)
        replay = cfg.meter.replay_path is not None
        self.live = not replay
        # A replay waits for slow sinks instead of dropping; its short queues flush within a SIGTERM.
        self.workers = [SinkWorker(s, REPLAY_SINK_QUEUE if replay else SINK_QUEUE,
                                   block_when_full=replay and s.lossless,
                                   log_interval_s=cfg.general.log_interval, beat=beat) for s in built]
        self.meters: dict[str, tuple[Reading, float]] = {}  # meter id -> first reading, monotonic time
        self.announced: set[str] = set()
        self.first_timed: Reading | None = None  # the first reading with a meter time: for the clock's pace
        self.last_reading: Reading | None = None
        self.readings = 0
        self.last_seq = 0
        self.gaps = 0
        self.status: ReaderStatus | None = None
        self.queue_depth = 0  # readings waiting between the processes, updated by the loop
        # Several meters: their latest quantities and status; each relay's quantities (for `block`).
        self.board = Board(cfg.meter.name, cfg.meter.role, cfg.control.stale_after,
                           {m.name: (m.role, m.offline_after) for m in cfg.meters}, cfg.site.grid_capacity_w,
                           time.monotonic())
        self._needs = {r.name: frozenset(c.quantity for c in (r.on_when, r.off_when) if c is not None)
                       for r in cfg.relays}
        self._multi = bool(cfg.meters) and self.live
        self.retired: list[SinkWorker] = []  # a removed meter's sinks, finishing what they hold
        self._seen_meters: set[str] = set()
        self._last_stats = time.monotonic()
        self._closed = False
        # Benchmarks: SMARTMETER_TRACE=FILE records "seq monotonic_ns" when control is done per reading.
        trace = os.environ.get("SMARTMETER_TRACE")
        self.trace = open(trace, "a", buffering=1 << 16) if trace else None  # noqa: SIM115
        self.web: WebLink | None = None  # live state to the web process, relay commands from it
        self.alerts: Alerts | None = None
        self._last_valid_s = time.monotonic()
        if cfg.alerts:
            from app.alerts import Alerts

            self.alerts = Alerts(cfg.alerts, cfg.mqtt if cfg.mqtt.enabled else None, __version__,
                                 cfg.general.log_interval)

    def link_web(self, channels: Channels) -> None:
        """Publish live state to the web process and take its relay commands."""
        from app.web.link import WebLink

        self.web = WebLink(channels, self.cfg.general.log_interval)
        self.web.relays(self.controller)

    def counters(self) -> dict[str, int]:
        """The post-processor's own counters."""
        devices = self.controller.devices() if self.controller is not None else {}
        return {"readings": self.readings, "gaps": self.gaps, "sink_dropped": sum(w.dropped for w in self.workers),
                "relay_mismatches": sum(d["mismatches"] for d in devices.values()),
                "relay_failures": sum(d["failures"] for d in devices.values()),
                "demand_disagreements": self.controller.demand_disagreements if self.controller is not None else 0}

    def command(self, name: str, mode: str) -> Future[OverrideResult]:
        """A manual ON / OFF / AUTO for one relay, from any thread (MQTT, web API).

        Applied by the main thread's next tick through `Controller.override`; the future then holds
        the result (applied, deferred until ... because min_off, unchanged, superseded by a later
        command, ignored because ...). A burst keeps only the last command per relay."""
        from app.control.override import IGNORED, SUPERSEDED, OverrideResult

        fut: Future[OverrideResult] = Future()
        mode = mode.strip().upper() if isinstance(mode, str) else ""
        names = [r.name for r in self.cfg.relays]
        why = ("no relays are configured" if self.controller is None
               else f"unknown relay (known: {', '.join(names)})" if name not in names
               else "unknown mode (use ON, OFF or AUTO)" if mode not in ("ON", "OFF", "AUTO") else "")
        if why:
            self.commands_ignored += 1
            self._command_log.warning("ignored", "ignored relay command %r %r: %s (%d ignored so far)",
                                      name[:40], mode[:40], why, self.commands_ignored)
            fut.set_result(OverrideResult(name, mode, IGNORED, why))
            return fut
        with self._commands_lock:
            old = self._commands.get(name)
            self._commands[name] = (mode, fut)
        if old is not None:
            old[1].set_result(OverrideResult(name, old[0], SUPERSEDED, f"replaced by {mode}"))
        return fut

    _on_command = command  # the sinks' callback

    @property
    def states(self) -> dict[str, bool]:
        """Relay states now."""
        return self.controller.states if self.controller is not None else {}  # a fresh dict

    def start(self) -> None:
        """Relays to their safe state (in a replay, for good those that need a [meter:NAME] meter)."""
        if self.controller is not None:
            self._broadcast(self.controller.start(), "start")
            if not self.live and self.cfg.meters:  # a replay reads the capture only: no other meter is contacted
                held = {relay: "replay: meter " + ", ".join(sorted(missing)) + " is not read in a replay"
                        for relay, missing in self._replay_missing().items()}
                self._broadcast(self.controller.block(held, time.monotonic()), "replay")
            self._relay_detail()

    def _replay_missing(self) -> dict[str, set[str]]:
        """relay -> the [meter:NAME] meters its conditions need."""
        from app.control.quantities import depends_on

        out = {}
        for relay, quantities in self._needs.items():
            missing = {m for q in quantities for m in depends_on(q, self.board.roles, self.board.main)
                       if m != self.board.main}
            if missing:
                out[relay] = missing
        return out

    def _broadcast(self, events: list[SwitchEvent], reason: str) -> None:
        if not events:
            return
        states = self.states
        at = events[-1].at
        for w in self.workers:
            w.submit("relay_event", states, at, reason)

    def _relay_detail(self) -> None:
        """Each relay's mode, last reason and pending command to the sinks that show them."""
        assert self.controller is not None
        self._relay_revision = self.controller.revision
        view = self.controller.view()
        for w in self.workers:
            w.submit("relay_detail", view)
        if self.web is not None:
            self.web.relays(self.controller, view)

    def on_reading(self, reading: Reading) -> None:
        """Control first, then hand the reading to every sink."""
        if reading.meter:  # a [meter:NAME] meter: its quantities wait for the next decision
            if reading.meter not in self.board.roles:  # a meter just removed: its last readings go nowhere
                return
            self.board.update(reading, time.monotonic())
            states = self.states
            for w in self.workers:
                w.submit("write", reading, states)
            if self.web is not None:
                self.web.meter(reading.meter, reading)
            return
        self.readings += 1
        self.last_reading = reading
        if reading.meter_id not in self.announced and len(self.announced) < 64:  # bounded on garbage ids
            self._first_telegram(reading)
            if self.first_timed is None and reading.meter_time is not None:
                self.first_timed = reading
        if self.last_seq and reading.seq > self.last_seq + 1:
            self.gaps += reading.seq - self.last_seq - 1
        self.last_seq = reading.seq
        if self.controller is not None:
            extra = None
            if self._multi:
                now = time.monotonic()
                self.board.update(reading, now)
                self._check_meters(now)  # a meter gone offline holds its relays safe before any rule runs
                extra = self.board.quantities(now)
            self.controller.on_reading(reading, extra=extra)
            if self.controller.revision != self._relay_revision:
                self._relay_detail()
        if self.trace is not None:
            self.trace.write(f"{reading.seq} {time.monotonic_ns()}\n")
        if self.alerts is not None:
            if reading.crc_ok is not False:
                self._last_valid_s = time.monotonic()
            self.alerts.on_reading(reading)
        states = self.states
        for w in self.workers:
            w.submit("write", reading, states)
        if self.web is not None:
            self.web.reading(reading, states)

    def dispatch(self, item: Any) -> Any:
        """Handle one item off the reader's queue; returns END or STOPPED for those marks, else _NOTHING."""
        if isinstance(item, Reading):
            self.on_reading(item)
        elif isinstance(item, list):  # a batch from a fast replay
            for reading in item:
                self.on_reading(reading)
        elif isinstance(item, ReaderStatus):
            self.on_status(item)
        elif isinstance(item, MeterState):
            self.board.on_state(item)
        elif item is END or item == STOPPED:
            return item
        return _NOTHING

    def on_control(self, msg: tuple[Any, ...]) -> None:
        """A message from main's meter fleet (app.meters.fleet): the meter set changed, or a meter's process
        stopped or died (its status changes now, and the relays that need it go safe)."""
        now = time.monotonic()
        if msg[0] == "meters":
            self.set_meters(msg[1], now)
        elif msg[0] == "down":
            _kind, name, status, reason, at = msg
            self.board.down(name, status, reason, at)
        if self._multi:
            self._check_meters(now)

    def set_meters(self, specs: tuple[MeterSpec, ...], now: float) -> None:
        """The [meter:NAME] meters now: the board, each meter's own sinks, the web's registry."""
        from dataclasses import replace

        old = {m.name for m in self.cfg.meters}
        new = {m.name for m in specs}
        self.cfg = replace(self.cfg, meters=tuple(specs))
        self.board.set_meters({m.name: (m.role, m.offline_after) for m in specs}, now)
        self._multi = bool(specs) and self.live
        keep: list[SinkWorker] = []
        for w in self.workers:
            meter = getattr(w.sink, "meter", "")
            if meter and meter not in new:
                w.request_close()
                self.retired.append(w)
            else:
                keep.append(w)
        for m in specs:
            if m.name not in old:
                keep += [SinkWorker(s, SINK_QUEUE, log_interval_s=self.cfg.general.log_interval, beat=self.beat)
                         for s in meter_sinks(self.cfg, m)]
        self.workers = keep
        self._seen_meters -= old - new
        if self.web is not None:
            self.web.publish(("meters", tuple(specs)))
        log.info("meters now: %s", ", ".join(sorted(new)) or "none besides [meter]")

    def _first_telegram(self, reading: Reading) -> None:
        """INFO as soon as data arrives: `first telegram from meter X (protocol, profile, interval)`,
        the interval from the meter's second telegram (or "interval not known yet" after a minute)."""
        first = self.meters.get(reading.meter_id)
        if first is None:
            if len(self.meters) > 64:  # a meter id per reading would be garbage: bounded anyway
                self.meters.clear()
            self.meters[reading.meter_id] = (reading, time.monotonic())
            return
        interval_s = (reading.time - first[0].time).total_seconds()
        self._announce(first[0], f"every {interval_s:g} s" if interval_s > 0 else "interval not known yet")

    def _announce(self, reading: Reading, interval: str) -> None:
        self.announced.add(reading.meter_id)
        self.meters.pop(reading.meter_id, None)
        kind = "DLMS profile" if reading.protocol == "dlms" else "header"
        log.info("first telegram from meter %s (%s, %s %s, %s) at meter time %s", reading.meter_id or "?",
                 reading.protocol, kind, reading.header or "-", interval,
                 reading.time.isoformat(timespec="seconds"))

    def on_status(self, status: ReaderStatus) -> None:
        """Reader counters: remembered, logged now and then, handed to the sinks."""
        self.status = status
        for w in self.workers:
            w.submit("status", status)

    def tick(self) -> None:
        """Once in a while: stale check, manual overrides, statistics."""
        now = time.monotonic()
        for first, seen in list(self.meters.values()):
            if now - seen >= 60.0:  # no second telegram within a minute: say so without the interval
                self._announce(first, "interval not known yet")
        if self._multi:
            self._check_meters(now)
        taken = self.web.take_commands(self.command) if self.web is not None else []
        if self.controller is not None:
            self._broadcast(self.controller.check_stale(now), "stale")
            with self._commands_lock:
                commands, self._commands = self._commands, {}
            for name, (mode, fut) in commands.items():
                result = self.controller.override(name, mode, now)
                self._broadcast(list(result.events), "override")
                fut.set_result(result)
            self._broadcast(self.controller.poll_overrides(now), "override")
            if self.controller.revision != self._relay_revision:
                self._relay_detail()
        if self.web is not None:
            self.web.report(taken, self.controller)
            if self.status is not None:
                self.web.status(self.status, self.counters())
        if self.alerts is not None:
            self._alert_tick(now)
        if now - self._last_stats >= self.cfg.general.stats_interval:
            self._last_stats = now
            self.log_stats()

    def _check_meters(self, now: float) -> None:
        """Each meter's status (logged once per change, to the sinks); relays needing an offline meter safe."""
        for change in self.board.check(now):
            level = logging.INFO if change.new == "online" else logging.WARNING
            if change.old == "offline" and change.reason == "" and change.meter not in self._seen_meters:
                level = logging.INFO  # the first reading after the start
            self._seen_meters.add(change.meter)
            log.log(level, "%s", change)
            name = "" if change.meter == self.board.main else change.meter
            for w in self.workers:
                w.submit("meter_status", name, change.new, change.reason)
            if self.web is not None and name:
                self.web.meter_status(name, change.new, change.reason)
        if self.controller is not None:
            self._broadcast(self.controller.block(self.board.blocked(self._needs, now), now), "stale meter")

    def _alert_tick(self, now: float) -> None:
        """The special alerts: meter offline, relay mismatch, sink backlog, decrypt errors."""
        from app.alerts import Facts

        assert self.alerts is not None
        devices = self.controller.devices() if self.controller is not None else {}
        self.alerts.tick(now, Facts(
            last_valid_s=self._last_valid_s,
            relays_unknown=tuple(n for n, d in devices.items() if d["reachable"] is False),
            relay_mismatches=sum(d["mismatches"] for d in devices.values()),
            sink_backlog={w.sink.name: w.q.qsize() for w in self.workers},
            sink_dropped=sum(w.dropped for w in self.workers),
            decrypt_errors=self.status.decrypt_errors if self.status is not None else 0,
        ))

    def log_stats(self, final: bool = False) -> None:
        """One status line: readings, gaps, reader counters, lag (live sources only)."""
        s = self.status
        if s is None:
            log.info("%d readings processed", self.readings)
            return
        lag = ""
        pace = self.clock_pace() if self.live else None  # a replay's lag is the capture's age: none shown
        if pace is not None and abs(pace - 1.0) > 0.1:  # the demo's simulated meter, a sped-up source
            lag = f"; meter clock runs at {pace:.{0 if pace >= 10 else 2}f}x real time (a simulated or sped-up " \
                  "source): no lag to show"
        elif self.live and s.lag_mean_s is not None and s.lag_max_s is not None:
            if abs(s.lag_mean_s) <= LAG_SANE_S:
                lag = f"; lag {s.lag_mean_s:.2f} s mean, {s.lag_max_s:.2f} s max"
            else:  # a simulated meter, or a meter clock set wrong: no transport lag to speak of
                lag = f"; meter clock {s.lag_mean_s / 3600:+.1f} h off the wall clock"
        backlog = ", ".join(f"{w.sink.name} {w.q.qsize()}" for w in self.workers) or "none"
        missing = s.frames_ok - s.dropped - self.readings
        why = ""
        if final and missing > 0:
            why = f" ({missing} decoded but never received: the reader or main stopped first)"
        elif final and missing < 0:
            why = f" (the reader's last counters are {-missing} readings old)"
        devices = self.controller.devices() if self.controller is not None else {}
        net = "".join(f"; relay {n} {d['state']} ({d['mismatches']} mismatches, {d['failures']} failed requests)"
                      for n, d in devices.items())
        log.info("%d readings processed; reader: %d ok, %d rejected (%d CRC), %d dropped, %d gaps, "
                 "%d implausible, %d bytes outside frames%s%s; queue depth %d, sink backlog %s%s", self.readings,
                 s.frames_ok, s.frames_bad, s.crc_errors, s.dropped, self.gaps, s.implausible, s.skipped_bytes,
                 why, lag, self.queue_depth, backlog, net)

    def clock_pace(self) -> float | None:
        """Meter time elapsed per second of receive time since the first reading (None: not known yet)."""
        a, b = self.first_timed, self.last_reading
        if a is None or b is None or a.meter_time is None or b.meter_time is None:
            return None
        wall_s = (b.received - a.received).total_seconds()
        if wall_s < 5.0:
            return None
        return (b.meter_time - a.meter_time).total_seconds() / wall_s

    def safe(self, reason: str) -> None:
        """Every relay to its safe state now (shutdown, reader died)."""
        if self.controller is not None:
            self._broadcast(self.controller.safe_all(reason), reason)

    def close(self, reason: str = "shutdown", timeout_s: float | None = 1.5) -> bool:
        """Safe state, then flush and close every sink within `timeout_s` (None: however long it takes).

        Returns whether every sink finished."""
        if self._closed:
            return True
        self._closed = True
        finished = True
        self.safe(reason)
        for w in self.workers:  # all sinks flush in parallel, each in its own thread
            w.request_close()
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for w in [*self.workers, *self.retired]:
            while deadline is None and w.thread.is_alive():  # however long it takes, still ticking
                self.beat()
                w.thread.join(TICK_EVERY_S)
            left = None if deadline is None else max(0.05, deadline - time.monotonic())
            if not w.join(left):
                finished = False
                if w.thread.is_alive():
                    log.error("sink %s did not finish in time (%d items not written)", w.sink.name,
                              w.q.qsize())
        if self.controller is not None:
            self.controller.close()
        if self.alerts is not None:
            self.alerts.close(0.2)
        if self.trace is not None:
            self.trace.close()
        self.log_stats(final=True)
        return finished


def run(cfg: Config, q: multiprocessing.Queue[Any], stop_event: Event, reader_failed: Event,
        log_level: str, simulate_relays: bool = False, web: Channels | None = None,
        meter_queues: list[multiprocessing.Queue[Any]] | None = None, control: Connection | None = None,
        heartbeat: Heartbeat | None = None) -> None:
    """Entry point of the post-processor process (`meter_queues`: the [meter:NAME] processes' queues, one each;
    `control`: main's meter fleet tells of meters added, changed, removed, stopped or dead)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # main coordinates shutdown
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logutil.setup(log_level)
    log.info("post-processor process started (pid %d)", os.getpid())
    # Never hold the queue's write end here: a writer killed mid-message must give this process
    # EOF, not a read that waits forever for the rest (main and the reader close theirs too).
    getattr(q, "_writer").close()  # noqa: B009 (private: multiprocessing offers no public way)
    meters = list(meter_queues or [])
    for mq in meters:
        getattr(mq, "_writer").close()  # noqa: B009 (the same for each meter's queue)
    main_gone = main_watch()
    beat = heartbeat.beat if heartbeat is not None else no_beat  # first beat in the loop (start-up grace)
    try:
        pp = PostProcessor(cfg, simulate_relays=simulate_relays, beat=beat)
        if web is not None:
            pp.link_web(web)
        pp.start()
        logutil.settle_gc()
    except ConfigError as exc:  # e.g. a spool directory that cannot be used
        log.error("config error: %s", exc)
        raise SystemExit(2) from None
    except Exception:
        log.exception("post-processor failed to start")
        raise SystemExit(1) from None
    code = 0
    reason = "shutdown"
    finished = False
    next_tick = time.monotonic()
    try:
        while True:
            beat()
            if meters:
                _take_meters(meters, pp)
            if control is not None and not _take_control(control, pp):
                control = None  # main is gone: noticed below
            try:
                item = q.get(timeout=0.05 if meters else 0.2)
            except queue_mod.Empty:
                item = _NOTHING
            except (EOFError, OSError):  # every write end closed, maybe mid-message
                if main_gone():
                    reason, code = "main process died", 1
                    log.error("main process is gone: relays to safe state")
                elif stop_event.is_set() and not reader_failed.is_set():
                    log.info("the reader's end of the queue closed while stopping")
                else:
                    reason, code = "reader process died", 1
                    log.error("the reader's end of the queue closed: relays to safe state")
                break
            mark = pp.dispatch(item)
            if mark is END:
                log.info("replay finished; flushing")
                finished = True
                break
            if mark == STOPPED:  # the reader stopped on request and sent everything it had
                reason, code = _stop_reason(main_gone, reason, code)
                break
            now = time.monotonic()
            if now >= next_tick:
                next_tick = now + 0.5
                pp.queue_depth = q.qsize()
                pp.tick()
                if reader_failed.is_set():
                    reason, code = "reader process died", 1
                    log.error("reader process died: relays to safe state")
                    break
                if main_gone():
                    reason, code = "main process died", 1
                    log.error("main process is gone: relays to safe state")
                    break
            if stop_event.is_set():
                reason, code = _stop_reason(main_gone, reason, code)
                if not reader_failed.is_set():
                    _drain(q, pp, deadline=time.monotonic() + DRAIN_S)
                break
    except Exception:
        log.exception("post-processor crashed")
        reason, code = "post-processor error", 1
    finally:
        if not pp.close(reason, timeout_s=None if finished else CLOSE_S):
            code = code or 1
    raise SystemExit(code)


def _take_meters(meters: list[multiprocessing.Queue[Any]], pp: PostProcessor) -> None:
    """What the [meter:NAME] processes sent (a few items each, never waiting); a queue that broke is dropped
    from the round (its meter goes offline on the board). A meter's STOPPED mark only ends its process:
    main may start that meter again on the same queue."""
    for mq in list(meters):
        for _ in range(16):
            try:
                item = mq.get_nowait()
            except queue_mod.Empty:
                break
            except (EOFError, OSError):  # main holds every write end: only main's end closes them all
                log.debug("a meter queue closed (main is gone: noticed in the loop)")
                meters.remove(mq)
                break
            if item == STOPPED:
                break
            pp.dispatch(item)


def _take_control(control: Connection, pp: PostProcessor) -> bool:
    """Main's meter fleet messages (never waiting); False when the pipe closed."""
    try:
        while control.poll():
            pp.on_control(control.recv())
    except (EOFError, OSError):
        return False
    return True


def _stop_reason(main_gone: Callable[[], bool], reason: str, code: int) -> tuple[str, int]:
    """A stop is a shutdown unless main is gone (the reader stops too when it sees that)."""
    if main_gone():
        log.error("main process is gone: relays to safe state")
        return "main process died", 1
    return reason, code


def _drain(q: multiprocessing.Queue[Any], pp: PostProcessor, deadline: float) -> None:
    """Take what the reader still sends until its STOPPED mark (bounded in time): a shutdown loses
    nothing the reader had read."""
    while time.monotonic() < deadline:
        pp.beat()
        try:
            item = q.get(timeout=0.05)
        except queue_mod.Empty:
            continue
        except (EOFError, OSError):
            return
        if pp.dispatch(item) is not _NOTHING:
            return
