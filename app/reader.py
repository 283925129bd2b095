"""The reader process: port -> framer -> parser -> one Reading at a time on a bounded queue.

Live, the reader never waits for the post-processor: when the queue is full it drops the
oldest reading and counts it, so readings never fall behind real time. A replay has no real
time to keep, so it waits for room instead and loses nothing, and ends with `END`.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue as queue_mod
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.synchronize import Event
from typing import Any
from zoneinfo import ZoneInfo

from app import logutil
from app.config import Config, MeterConfig
from app.errors import ChecksumError, DecryptionError, ProtocolError
from app.framing import Frame
from app.framing.auto import make_framer
from app.protocols.plausibility import PlausibilityGate
from app.protocols.route import FrameDecoder
from app.records import END, STOPPED, ReaderStatus, Reading
from app.supervision import Heartbeat, main_watch, queue_putter, stop_check
from app.transport.source import AUTO_CANDIDATES, ByteSource, ReplaySource, SerialSource, SourceError

log = logging.getLogger("app.reader")
STATUS_EVERY_S = 5.0
STATUS_RETRY_S = 0.5  # a status the full queue refused, or the first with telegrams in it, goes this soon
AUTO_BAUD_WINDOW_S = 12.0  # a DSMR 2.2 meter sends every 10 s
MAX_REASONS = 32  # distinct reject reasons kept in the counters; the rest count as "other"


def frame_decoder(meter: MeterConfig) -> FrameDecoder:
    """The decoder for `[meter]`: its time zone, keys and DLMS profile."""
    return FrameDecoder(ZoneInfo(meter.timezone), meter.key, meter.auth_key, meter.profile)


@dataclass
class Counters:
    """What the reader has seen; accepted + rejected = frames seen."""

    frames_ok: int = 0
    frames_bad: int = 0
    crc_errors: int = 0
    parse_errors: int = 0
    decrypt_errors: int = 0
    dropped: int = 0
    implausible: int = 0
    skipped_bytes: int = 0
    lag_sum_s: float = 0.0
    lag_n: int = 0
    lag_max_s: float | None = None
    reasons: dict[str, int] = field(default_factory=dict)

    def status(self, connected: bool, protocol: str, header: str) -> ReaderStatus:
        """A snapshot for the post-processor."""
        return ReaderStatus(
            frames_ok=self.frames_ok, frames_bad=self.frames_bad, crc_errors=self.crc_errors,
            parse_errors=self.parse_errors, decrypt_errors=self.decrypt_errors, dropped=self.dropped,
            lag_mean_s=self.lag_sum_s / self.lag_n if self.lag_n else None, lag_max_s=self.lag_max_s,
            connected=connected, protocol=protocol, header=header, reasons=dict(self.reasons),
            implausible=self.implausible, skipped_bytes=self.skipped_bytes,
        )


class Reader:
    """The reader loop, independent of multiprocessing so tests can drive it directly."""

    def __init__(
        self,
        cfg: Config,
        put: Callable[[Any, bool], bool],
        stop: Callable[[], bool],
        source_factory: Callable[[int, str], ByteSource] | None = None,
    ) -> None:
        self.cfg = cfg
        self.meter = cfg.meter
        self._put = put  # (item, wait) -> delivered
        self._stop = stop
        self.counters = Counters()
        self.limited = logutil.RateLimited(log, cfg.general.log_interval)
        self.decoder = frame_decoder(cfg.meter)
        self.framer = make_framer(cfg.meter.protocol, cfg.meter.max_frame)
        self.gate = PlausibilityGate(cfg.meter.max_power, check_clock=cfg.meter.replay_path is None)
        self.seq = 0
        self.protocol = ""
        self.header = ""
        self.connected = False
        self._last_status = 0.0  # monotonic time of the last status put (delivered or not)
        self._status_due = 0.0  # monotonic time the next status is due
        self._sent_ok = 0  # frames_ok in the last status delivered
        self._source_factory = source_factory or self._open_serial
        self._replay_t0: tuple[datetime, float] | None = None
        self.replay = cfg.meter.replay_path is not None
        # A replay as fast as possible sends a list of readings per chunk read: far fewer queue items.
        fast_replay = cfg.meter.replay_path is not None and cfg.meter.replay_speed <= 0
        self._batch: list[Reading] | None = [] if fast_replay else None

    # ------------------------------------------------------------------ frames

    def handle(self, frames: list[Frame]) -> None:
        """Count, decode and deliver frames."""
        for frame in frames:
            if not frame.ok:  # link checks say "<CRC|HCS|FCS|checksum> mismatch: calculated X, received Y"
                self._reject(frame.reason, "crc" if "mismatch" in frame.reason else "frame")
                continue
            received = datetime.now(UTC)
            try:
                reading = self.decoder.decode(frame, received, self.seq + 1)
            except ChecksumError as exc:
                self._reject(str(exc), "crc")
                continue
            except DecryptionError as exc:
                self._reject(str(exc), "decrypt")
                continue
            except ProtocolError as exc:
                self._reject(str(exc), "parse")
                continue
            why = self.gate.check(reading)
            if why:
                self.counters.implausible += 1
                self._reject(f"implausible reading: {why}", "implausible")
                continue
            self.seq += 1
            self.counters.frames_ok += 1
            self.protocol, self.header = reading.protocol, reading.header
            lag = None if self.replay else reading.lag_s  # a replay's lag is the capture's age
            if lag is not None:
                c = self.counters
                c.lag_sum_s += lag
                c.lag_n += 1
                c.lag_max_s = lag if c.lag_max_s is None else max(c.lag_max_s, lag)
            if self._batch is not None:
                self._batch.append(reading)
            else:
                self._pace(reading)
                self.deliver(reading)
        if self._batch:
            batch, self._batch = self._batch, []
            self.deliver(batch)

    def feed(self, data: bytes) -> None:
        """Frame, decode and deliver one chunk of bytes; count the bytes outside any frame."""
        self.handle(self.framer.feed(data))
        self._count_skipped()

    def _count_skipped(self) -> None:
        skipped = getattr(self.framer, "skipped", 0)
        c = self.counters
        if skipped > c.skipped_bytes:
            c.skipped_bytes = skipped
            self.limited.warning("skipped", "%d bytes outside any frame so far (noise, or not this protocol)",
                                 skipped)

    def _reject(self, reason: str, kind: str) -> None:
        c = self.counters
        c.frames_bad += 1
        if kind == "crc":
            c.crc_errors += 1
        elif kind == "decrypt":
            c.decrypt_errors += 1
        elif kind == "implausible":
            pass
        else:
            c.parse_errors += 1
        short = reason.split(":")[0][:60]
        if short not in c.reasons and len(c.reasons) >= MAX_REASONS:
            short = "other"
        c.reasons[short] = c.reasons.get(short, 0) + 1
        self.limited.warning(kind, "frame rejected: %s (%d rejected so far)", reason, c.frames_bad)

    def deliver(self, item: Any) -> None:
        """Put a reading on the queue; live: drop the oldest when full; replay: wait."""
        if self.replay:
            while not self._put(item, True):
                if self._stop():
                    return
            return
        if not self._put(item, False):
            self.counters.dropped += 1
            self.limited.warning("dropped", "queue full: dropped the oldest reading (%d dropped so far)",
                                 self.counters.dropped)

    def _pace(self, reading: Reading) -> None:
        """Replay at `replay_speed` x real time by the readings' meter timestamps."""
        speed = self.meter.replay_speed
        if not self.replay or speed <= 0 or reading.meter_time is None:
            return
        if self._replay_t0 is None:
            self._replay_t0 = (reading.meter_time, time.monotonic())
            return
        t0, m0 = self._replay_t0
        target = m0 + (reading.meter_time - t0).total_seconds() / speed
        while not self._stop():
            delay = target - time.monotonic()
            if delay <= 0:
                break
            time.sleep(min(delay, 0.1))

    def maybe_status(self, force: bool = False) -> None:
        """Send the counters to the post-processor every few seconds, and soon after the first telegrams
        (the status sent at connect says 0: it must not stand for STATUS_EVERY_S while readings flow)."""
        now = time.monotonic()
        first_ok = self._sent_ok == 0 and self.counters.frames_ok > 0
        if force or now >= self._status_due or (first_ok and now - self._last_status >= STATUS_RETRY_S):
            self._last_status = now
            status = self.counters.status(self.connected, self.protocol, self.header)
            if self._put(status, False):
                self._sent_ok = status.frames_ok
                self._status_due = now + STATUS_EVERY_S
            else:  # the queue was full: try again soon rather than a whole interval later
                self._status_due = now + STATUS_RETRY_S

    # ------------------------------------------------------------------ sources

    def _open_serial(self, baudrate: int, serial_format: str) -> ByteSource:
        return SerialSource(self.meter.source, baudrate, serial_format, self.meter.read_timeout)

    def _candidates(self) -> tuple[tuple[int, str], ...]:
        if self.meter.baudrate == "auto":
            return AUTO_CANDIDATES[self.meter.protocol]
        return ((int(self.meter.baudrate), self.meter.serial_format),)

    def run(self) -> int:
        """Read until stopped (0), or until a replay ends (0 after END is delivered)."""
        if self.meter.replay_path is not None:
            return self._run_replay(self.meter.replay_path)
        backoff = 0.5
        candidates = self._candidates()
        index = 0
        while not self._stop():
            baud, fmt = candidates[index]
            try:
                src = self._source_factory(baud, fmt)
            except SourceError as exc:
                self.connected = False
                self.limited.warning("open", "cannot open %s: %s; retrying in %.1f s",
                                     self.meter.source, exc, backoff)
                self.maybe_status()
                self._sleep(backoff)
                backoff = min(backoff * 2, self.meter.reconnect_max)
                continue
            self.connected = True
            log.info("reading %s at %d %s", self.meter.source, baud, fmt)
            ok_before = self.counters.frames_ok
            opened = time.monotonic()
            try:
                while not self._stop():
                    data = src.read_some()
                    if data:
                        self.feed(data)
                    self.maybe_status()
                    if self.counters.frames_ok > ok_before:
                        backoff = 0.5
                        if len(candidates) > 1:
                            log.info("baud rate detected: %d %s", baud, fmt)
                            candidates = ((baud, fmt),)
                            index = 0
                    elif len(candidates) > 1 and time.monotonic() - opened > AUTO_BAUD_WINDOW_S:
                        index = (index + 1) % len(candidates)
                        log.info("no telegram at %d %s, trying %d %s", baud, fmt, *candidates[index])
                        break
            except SourceError as exc:
                self.connected = False
                self.limited.warning("lost", "lost %s: %s; reconnecting in %.1f s", self.meter.source, exc, backoff)
                self.maybe_status(force=True)
                self._sleep(backoff)
                backoff = min(backoff * 2, self.meter.reconnect_max)
            finally:
                src.close()
                self.framer.flush()
        return 0

    def _run_replay(self, path: str) -> int:
        src = ReplaySource(path, chunk_size=32768 if self._batch is not None else 4096)
        self.connected = True
        try:
            while not self._stop():
                data = src.read_some()
                if not data:
                    break
                self.feed(data)
                self.maybe_status()
            if not self._stop():  # stopped mid-capture: the cut telegram is not a bad frame
                self.handle(self.framer.flush())
        finally:
            src.close()
        final = self.counters.status(self.connected, self.protocol, self.header)
        while not self._stop() and not self._put(final, True):  # the last counters must arrive
            pass
        if not self._stop():
            log.info("replay of %s done: %d readings, %d rejected", path, self.counters.frames_ok,
                     self.counters.frames_bad)
            self.deliver(END)
        return 0

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop() and time.monotonic() < end:
            time.sleep(min(0.1, end - time.monotonic()))


def run(cfg: Config, q: multiprocessing.Queue[Any], stop_event: Event, log_level: str,
        heartbeat: Heartbeat | None = None) -> None:
    """Entry point of the reader process; every loop asks `stop()`, which is also its heartbeat."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # main coordinates shutdown
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logutil.setup(log_level)
    log.info("reader process started (pid %d)", os.getpid())
    main_gone = main_watch()
    put = queue_putter(q, spare=(ReaderStatus,))
    stop = stop_check(stop_event, heartbeat, "reader", log, main_gone)

    try:
        reader = Reader(cfg, put, stop)
        logutil.settle_gc()
        code = reader.run()
    except Exception:
        log.exception("reader crashed")
        raise SystemExit(1) from None
    if stop_event.is_set():
        # Say that nothing follows, then let the queue's feeder thread write out whole messages:
        # a message cut short by exiting mid-write would hang the post-processor's read. If no one
        # reads any more (main or the post-processor gone), give up rather than hang on the pipe.
        try:
            # the last counters first, so the figures logged at the stop add up
            q.put(reader.counters.status(reader.connected, reader.protocol, reader.header), timeout=0.5)
            q.put(STOPPED, timeout=0.5)
        except queue_mod.Full:
            q.cancel_join_thread()
        if main_gone():
            q.cancel_join_thread()
    q.close()
    q.join_thread()
    raise SystemExit(code)
