"""Durable on-disk spool for batches a sink could not deliver, and the sender that drains it.

A spool directory holds append-only segment files `000000000001.seg`, ... (oldest first), a
`cursor` file naming the segment and byte offset of the next record to replay, a `reject/`
folder for batches the server refused as bad data, and a `lock` file (flock: one process per
spool). Each append is written, flushed and fsync'd before `append` returns. Past `max_bytes`
the oldest segment is deleted and its points counted as dropped. Every record is framed so
that a torn write (power cut mid-append) is detected:

    offset  size  field
    0       2     magic  A5 5A
    2       1     flags  bit 0: payload is zlib-compressed
    3       4     n_points  (big-endian u32) points in the batch
    7       4     length    (big-endian u32) payload bytes that follow
    11      4     crc32     (big-endian u32) of bytes 2..10 and the payload
    15      n     payload   newline-separated line protocol (after zlib inflate)

When the disk refuses an append (full, read-only, over a quota), the batch is held in memory,
oldest first, up to `MEMORY_HOLD_BYTES` (past that the oldest held batch is dropped and counted),
and written to disk as soon as it accepts again (or replayed straight from memory when the server
is back first): the same policy as the CSV sink's rows. What is still held at close is lost,
counted and logged.

A record whose header is short, whose magic is wrong or whose length runs past the end of the
file ends that segment (a torn tail: the rest of the segment is skipped); a record with a good
frame but a wrong CRC is skipped on its own. Both are counted and logged.

`SpooledSender` puts a `send` callable in front of the spool: live batches go to the server
while it answers, else to the spool; the spool is replayed oldest first once the server answers
again, new batches keep flowing meanwhile; a send that reports bad data moves the batch to
`reject/`; failures back off exponentially (no jitter) up to a cap.
"""

from __future__ import annotations

import enum
import fcntl
import logging
import os
import re
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from app.logutil import RateLimited

log = logging.getLogger(__name__)

MAGIC = b"\xa5\x5a"
FLAG_ZLIB = 0x01
_HEADER = struct.Struct(">2sBIII")
HEADER_BYTES = _HEADER.size
_SEGMENT_RE = re.compile(r"^(\d{12})\.seg$")
MAX_SEGMENT_BYTES = 8 * 1024 * 1024
MAX_RECORD_BYTES = 256 * 1024 * 1024
MEMORY_HOLD_BYTES = 16 * 1024 * 1024  # batches held in memory while the disk refuses them
_HELD = -1  # the sequence number of a batch peeked from the memory hold


class SpoolLockedError(OSError):
    """Another process holds the spool directory."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch of line-protocol lines joined by newlines, and how many points it holds."""

    payload: bytes
    n_points: int


@dataclass(slots=True)
class SpoolStats:
    """Counters since start, in points (torn counts records)."""

    written: int = 0  # points the server accepted (live and replayed)
    spooled: int = 0  # points appended to the spool
    replayed: int = 0  # spooled points the server accepted
    dropped: int = 0  # points lost: oldest segment dropped past max_bytes, disk errors, corrupt records
    rejected: int = 0  # points the server refused as bad data, set aside in reject/
    torn: int = 0  # torn or corrupt records skipped

    def snapshot(self) -> dict[str, int]:
        """The counters as a plain dict."""
        return {
            "written": self.written,
            "spooled": self.spooled,
            "replayed": self.replayed,
            "dropped": self.dropped,
            "rejected": self.rejected,
            "torn": self.torn,
        }


def encode_record(batch: Batch, compress: bool = True) -> bytes:
    """One framed record (header + payload) for `batch`."""
    flags = FLAG_ZLIB if compress else 0
    body = zlib.compress(batch.payload, 1) if compress else batch.payload
    prefix = struct.pack(">BII", flags, batch.n_points, len(body))
    crc = zlib.crc32(body, zlib.crc32(prefix))
    return _HEADER.pack(MAGIC, flags, batch.n_points, len(body), crc) + body


@dataclass(slots=True)
class _Segment:
    """One segment file: its sequence number, size on disk and points not yet replayed."""

    seq: int
    path: Path
    size: int
    points: int


@dataclass(slots=True)
class _Peeked:
    """The record at the cursor, decoded, and where the one after it starts."""

    seq: int
    offset: int
    next_offset: int
    batch: Batch


def _fsync_dir(path: Path) -> None:
    """fsync a directory so a created, renamed or deleted entry survives a power cut."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # some filesystems do not allow opening a directory; the entry is still written
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("fsync of %s failed: %s", path, exc)
    finally:
        os.close(fd)


class Spool:
    """Append-only, fsync'd, size-bounded FIFO of batches in segment files under `directory`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int,
        segment_bytes: int | None = None,
        compress: bool = True,
        reject_max_bytes: int | None = None,
    ) -> None:
        self.dir = Path(directory)
        self.reject_dir = self.dir / "reject"
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes or max(4096, min(max_bytes // 8, MAX_SEGMENT_BYTES))
        self.reject_max_bytes = max(4096, max_bytes // 10) if reject_max_bytes is None else reject_max_bytes
        self.compress = compress
        self.stats = SpoolStats()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reject_dir.mkdir(exist_ok=True)
        self._lock = self._take_lock()
        self._cursor_path = self.dir / "cursor"
        self._segments: list[_Segment] = []
        self._active: _Segment | None = None  # the segment appends go to; always a fresh one per run
        self._out: _Appender | None = None
        self._cursor_offset = 0
        self._peeked: _Peeked | None = None
        self._held: deque[tuple[bytes, Batch]] = deque()  # records the disk refused, oldest first
        self._held_bytes = 0
        self.hold_max_bytes = min(max_bytes, MEMORY_HOLD_BYTES)
        self._limited = RateLimited(log, 60.0)
        self._load()

    def _take_lock(self) -> int:
        """An exclusive flock on <dir>/lock, so two processes never share one spool."""
        fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise SpoolLockedError(f"spool {self.dir} is in use by another process") from exc
        return fd

    # ------------------------------------------------------------ state

    @property
    def pending_points(self) -> int:
        """Points waiting for replay (on disk and held in memory)."""
        return sum(s.points for s in self._segments) + sum(b.n_points for _, b in self._held)

    @property
    def held_points(self) -> int:
        """Points held in memory because the disk refused them."""
        return sum(b.n_points for _, b in self._held)

    @property
    def size_bytes(self) -> int:
        """Bytes the segment files take on disk."""
        return sum(s.size for s in self._segments)

    @property
    def segments(self) -> int:
        """Number of segment files."""
        return len(self._segments)

    @property
    def empty(self) -> bool:
        """True when nothing waits for replay."""
        return self.pending_points == 0 and not self._has_unscanned_bytes() and not self._held

    def _has_unscanned_bytes(self) -> bool:
        # bytes of a torn tail are not points, but they still need peek() to skip them and clean up
        if not self._segments:
            return False
        first = self._segments[0]
        return len(self._segments) > 1 or self._cursor_offset < first.size

    # ------------------------------------------------------------ load

    def _load(self) -> None:
        seqs = sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _SEGMENT_RE.match(p.name)))
        cursor_seq, cursor_off = self._read_cursor()
        for seq in seqs:
            path = self._seg_path(seq)
            if seq < cursor_seq:
                self._unlink(path)  # fully replayed before the last stop, deletion did not land
                continue
            start = cursor_off if seq == cursor_seq else 0
            size = path.stat().st_size
            self._segments.append(_Segment(seq, path, size, self._scan_points(path, start, size)))
        if self._segments:
            first = self._segments[0]
            self._cursor_offset = cursor_off if first.seq == cursor_seq else 0
        self._next_seq = max((seqs[-1] + 1) if seqs else 1, cursor_seq + 1)
        if self._segments:
            log.info(
                "spool %s: %d points in %d segments (%d bytes) to replay",
                self.dir, self.pending_points, len(self._segments), self.size_bytes,
            )

    def _read_cursor(self) -> tuple[int, int]:
        try:
            text = self._cursor_path.read_text(encoding="ascii").split()
            return int(text[0]), int(text[1])
        except FileNotFoundError:
            return 0, 0
        except (OSError, ValueError, IndexError) as exc:
            log.warning("spool %s: unreadable cursor (%s); replaying from the oldest segment", self.dir, exc)
            return 0, 0

    def _write_cursor(self, seq: int, offset: int) -> None:
        tmp = self._cursor_path.with_suffix(".tmp")
        try:
            with open(tmp, "w", encoding="ascii") as fh:
                fh.write(f"{seq} {offset}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self._cursor_path)
        except OSError as exc:  # a full disk: replay goes on; a restart may send a few batches again
            self._limited.warning("cursor", "spool %s: cannot save the replay position (%s); after a restart "
                                  "some batches may be sent again (the same points, overwritten)", self.dir, exc)

    @staticmethod
    def _scan_points(path: Path, start: int, size: int) -> int:
        """Points in the well-framed records from `start` (headers only; CRCs are checked on replay)."""
        points = 0
        with open(path, "rb") as fh:
            off = start
            while off + HEADER_BYTES <= size:
                fh.seek(off)
                magic, _flags, n_points, length, _crc = _HEADER.unpack(fh.read(HEADER_BYTES))
                if magic != MAGIC or off + HEADER_BYTES + length > size:
                    break
                points += n_points
                off += HEADER_BYTES + length
        return points

    def _seg_path(self, seq: int) -> Path:
        return self.dir / f"{seq:012d}.seg"

    def _unlink(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass  # already gone: that is what we wanted
        _fsync_dir(self.dir)

    # ------------------------------------------------------------ append

    def append(self, batch: Batch) -> bool:
        """Append one batch durably, or hold it in memory while the disk refuses it; False (and
        counted as dropped) only for a batch larger than the whole spool."""
        record = encode_record(batch, self.compress)
        if len(record) > self.max_bytes:
            log.error("spool %s: a batch of %d bytes exceeds spool_max; dropped", self.dir, len(record))
            self.stats.dropped += batch.n_points
            return False
        self.stats.spooled += batch.n_points
        if self._held and not self._flush_held():
            self._hold(record, batch)
            return True
        try:
            self._append_disk(record, batch)
        except OSError as exc:
            self._limited.error("append", "spool %s: cannot append (%s); holding batches in memory (up to %d "
                                "bytes, then the oldest are dropped) until the disk accepts them",
                                self.dir, exc, self.hold_max_bytes)
            self._hold(record, batch)
        return True

    def _append_disk(self, record: bytes, batch: Batch) -> None:
        while self.size_bytes + len(record) > self.max_bytes and self._segments:
            self._drop_oldest()
        if self._active is not None and self._active.size >= self.segment_bytes:
            self._close_active()
        try:
            seg = self._open_active()
            assert self._out is not None
            self._out.append(record)
        except OSError:
            active = self._active
            self._abort_active()
            if active is not None and active.size == 0 and self._segments and self._segments[-1] is active:
                self._segments.pop()  # no empty segment file left per failed attempt
                try:
                    self._unlink(active.path)
                except OSError:
                    pass  # removed at the next start (an empty segment)
            raise
        seg.size += len(record)
        seg.points += batch.n_points

    def _hold(self, record: bytes, batch: Batch) -> None:
        self._held.append((record, batch))
        self._held_bytes += len(record)
        while self._held_bytes > self.hold_max_bytes and len(self._held) > 1:
            old_record, old = self._held.popleft()
            self._held_bytes -= len(old_record)
            self.stats.dropped += old.n_points
            if self._peeked is not None and self._peeked.seq == _HELD:
                self._peeked = None
            self._limited.error("hold", "spool %s: %d bytes held in memory (disk refusing); dropped the oldest "
                                "batch (%d points dropped so far)", self.dir, self.hold_max_bytes,
                                self.stats.dropped)

    def _flush_held(self) -> bool:
        """Move held batches to disk, oldest first; True when none is left in memory."""
        moved = 0
        while self._held:
            record, batch = self._held[0]
            try:
                self._append_disk(record, batch)
            except OSError:
                return False
            self._held.popleft()
            self._held_bytes -= len(record)
            moved += batch.n_points
            if self._peeked is not None and self._peeked.seq == _HELD:
                self._peeked = None  # it is on disk now: read it from there
        if moved:
            log.info("spool %s: the disk accepts again; %d points held in memory written to it", self.dir, moved)
        return True

    def _open_active(self) -> _Segment:
        if self._active is None:
            seq = self._next_seq
            self._next_seq += 1
            path = self._seg_path(seq)
            self._out = _Appender(path)
            _fsync_dir(self.dir)
            self._active = _Segment(seq, path, 0, 0)
            if not self._segments:
                self._cursor_offset = 0
            self._segments.append(self._active)
        return self._active

    def _close_active(self) -> None:
        if self._out is not None:
            self._out.close()
        self._out = None
        self._active = None

    def _abort_active(self) -> None:
        """After a failed append: cut the partial record off if possible and start a new segment next time."""
        if self._out is not None and self._active is not None:
            self._out.truncate(self._active.size)
        self._close_active()

    def _drop_oldest(self) -> None:
        seg = self._segments.pop(0)
        if seg is self._active:
            self._close_active()
        self.stats.dropped += seg.points
        log.warning(
            "spool %s: spool_max (%d bytes) reached; dropped the oldest segment with %d points",
            self.dir, self.max_bytes, seg.points,
        )
        self._unlink(seg.path)
        self._peeked = None
        self._cursor_offset = 0
        if self._segments:
            self._write_cursor(self._segments[0].seq, 0)

    # ------------------------------------------------------------ replay

    def peek(self) -> Batch | None:
        """The oldest batch not yet replayed (torn or corrupt records skipped), or None when empty."""
        if self._peeked is not None:
            return self._peeked.batch
        if self._held:
            self._flush_held()
        while self._segments:
            seg = self._segments[0]
            off = self._cursor_offset
            if off >= seg.size:
                if seg is self._active:
                    if len(self._segments) == 1:
                        self._reset_empty()
                        return None
                    self._close_active()
                self._finish_segment()
                continue
            peeked = self._read_record(seg, off)
            if peeked is not None:
                self._peeked = peeked
                return peeked.batch
        if self._held:  # the disk still refuses them, the server is back: replay from memory
            self._peeked = _Peeked(_HELD, 0, 0, self._held[0][1])
            return self._peeked.batch
        return None

    def _read_record(self, seg: _Segment, off: int) -> _Peeked | None:
        """Decode the record at `off`, or skip a torn or corrupt one (returning None)."""
        try:
            with open(seg.path, "rb") as fh:
                fh.seek(off)
                header = fh.read(HEADER_BYTES)
                if len(header) < HEADER_BYTES:
                    self._torn(seg, off, "short header")
                    return None
                magic, flags, n_points, length, crc = _HEADER.unpack(header)
                if magic != MAGIC or length > MAX_RECORD_BYTES or off + HEADER_BYTES + length > seg.size:
                    self._torn(seg, off, "bad magic" if magic != MAGIC else "length past end of file")
                    return None
                body = fh.read(length)
        except OSError as exc:
            log.error("spool %s: cannot read %s (%s); segment skipped", self.dir, seg.path.name, exc)
            self.stats.dropped += seg.points
            seg.points = 0
            self._cursor_offset = seg.size
            return None
        nxt = off + HEADER_BYTES + length
        calc = zlib.crc32(body, zlib.crc32(header[2:11]))
        if len(body) != length or calc != crc:
            log.warning(
                "spool %s: corrupt record in %s at offset %d (crc32 calculated %08x, stored %08x); skipped",
                self.dir, seg.path.name, off, calc, crc,
            )
            self.stats.torn += 1
            self._skip_points(seg, n_points)
            self._advance(seg, nxt)
            return None
        try:
            payload = zlib.decompress(body) if flags & FLAG_ZLIB else body
        except zlib.error as exc:
            log.warning(
                "spool %s: undecodable record in %s at %d (%s); skipped", self.dir, seg.path.name, off, exc
            )
            self.stats.torn += 1
            self._skip_points(seg, n_points)
            self._advance(seg, nxt)
            return None
        return _Peeked(seg.seq, off, nxt, Batch(payload, n_points))

    def _torn(self, seg: _Segment, off: int, why: str) -> None:
        """Skip the rest of a segment from a record whose frame is broken."""
        log.warning(
            "spool %s: torn record in %s at offset %d (%s); %d trailing bytes skipped",
            self.dir, seg.path.name, off, why, seg.size - off,
        )
        self.stats.torn += 1
        self._advance(seg, seg.size)

    def _skip_points(self, seg: _Segment, n_points: int) -> None:
        lost = min(n_points, seg.points)
        seg.points -= lost
        self.stats.dropped += lost

    def _advance(self, seg: _Segment, offset: int) -> None:
        self._cursor_offset = offset
        self._write_cursor(seg.seq, offset)

    def ack(self) -> None:
        """The peeked batch reached the server: move the durable cursor past it."""
        self._consume(replayed=True)

    def reject(self, batch: Batch, message: str) -> Path | None:
        """Set a batch the server refused as bad data aside in reject/; returns the file written."""
        path = self.write_reject(batch, message)
        if self._peeked is not None and self._peeked.batch is batch:
            self._consume(replayed=False)
        return path

    def write_reject(self, batch: Batch, message: str) -> Path | None:
        """Write `batch` to reject/<utc time>-<n>.lp and the server's message next to it (.err)."""
        self.stats.rejected += batch.n_points
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        n = 0
        while (self.reject_dir / f"{stamp}-{n:04d}.lp").exists():
            n += 1
        path = self.reject_dir / f"{stamp}-{n:04d}.lp"
        try:
            path.with_suffix(".err").write_text(message.rstrip() + "\n", encoding="utf-8")
            with open(path, "wb") as fh:
                fh.write(batch.payload.rstrip(b"\n") + b"\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.error("spool %s: cannot write %s (%s); %d points lost", self.dir, path, exc, batch.n_points)
            return None
        self._trim_rejects()
        return path

    def _trim_rejects(self) -> None:
        files = sorted(self.reject_dir.iterdir())
        total = sum(p.stat().st_size for p in files)
        while files and total > self.reject_max_bytes:
            victim = files.pop(0)
            total -= victim.stat().st_size
            log.warning("reject/ over %d bytes; deleted %s", self.reject_max_bytes, victim)
            victim.unlink()

    def _consume(self, replayed: bool) -> None:
        peeked = self._peeked
        if peeked is None:
            raise RuntimeError("ack/reject without a peeked batch")
        self._peeked = None
        if replayed:
            self.stats.replayed += peeked.batch.n_points
        if peeked.seq == _HELD:
            record, _ = self._held.popleft()
            self._held_bytes -= len(record)
            return
        seg = self._segments[0]
        seg.points -= min(peeked.batch.n_points, seg.points)
        self._advance(seg, peeked.next_offset)
        if self._cursor_offset >= seg.size and seg is not self._active:
            self._finish_segment()
        elif self._cursor_offset >= seg.size and len(self._segments) == 1:
            self._reset_empty()

    def _finish_segment(self) -> None:
        seg = self._segments.pop(0)
        self._unlink(seg.path)
        self._cursor_offset = 0
        if self._segments:
            self._write_cursor(self._segments[0].seq, 0)
        else:
            self._remove_cursor()

    def _reset_empty(self) -> None:
        """Everything replayed: delete the active segment and the cursor, appends start a new file."""
        self._close_active()
        for seg in self._segments:
            self._unlink(seg.path)
        self._segments.clear()
        self._cursor_offset = 0
        self._peeked = None
        self._remove_cursor()

    def _remove_cursor(self) -> None:
        try:
            self._cursor_path.unlink()
        except FileNotFoundError:
            pass  # nothing to remove

    def close(self) -> None:
        """Write what is held in memory if the disk takes it (else it is lost, counted), close the open
        segment and release the lock; idempotent."""
        if self._held and not self._flush_held():
            lost = self.held_points
            self.stats.dropped += lost
            log.error("spool %s: %d points held in memory could not be written (the disk still refuses "
                      "them); lost at stop", self.dir, lost)
            self._held.clear()
            self._held_bytes = 0
        self._close_active()
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1


class _Appender:
    """An open segment file: append + flush + fsync per record."""

    def __init__(self, path: Path) -> None:
        self.fh = open(path, "ab")  # noqa: SIM115 - kept open across appends, closed by close()

    def append(self, record: bytes) -> None:
        self.fh.write(record)
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def truncate(self, size: int) -> None:
        try:
            self.fh.truncate(size)
        except OSError as exc:
            log.warning("cannot cut a partial record off %s: %s (replay will skip it)", self.fh.name, exc)

    def close(self) -> None:
        try:
            self.fh.close()
        except OSError as exc:
            log.warning("closing %s: %s", self.fh.name, exc)


# ---------------------------------------------------------------- sending


class Outcome(enum.Enum):
    """What a send attempt did."""

    OK = "ok"
    RETRY = "retry"  # server down, network away, timeout, 5xx, 401/403/404/429: keep and retry
    REJECT = "reject"  # the server says the data is bad (400, 413, 422): set aside, never retried


@dataclass(frozen=True, slots=True)
class SendResult:
    """Outcome of one send and the server's message (or the error) for the log."""

    outcome: Outcome
    message: str = ""
    status: int | None = None


Send = Callable[[Batch, float | None], SendResult]


class Backoff:
    """Jitter-free exponential retry delays: min_s, 2*min_s, 4*min_s, ... capped at max_s."""

    def __init__(self, min_s: float = 1.0, max_s: float = 60.0) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.failures = 0
        self.next_at = float("-inf")

    def ready(self, now: float) -> bool:
        """True when a new attempt is allowed at monotonic time `now`."""
        return now >= self.next_at

    def failed(self, now: float) -> float:
        """Record a failure at `now`; returns the delay until the next attempt."""
        delay = min(self.max_s, self.min_s * (2.0 ** min(self.failures, 62)))
        self.failures += 1
        self.next_at = now + delay
        return delay

    def succeeded(self) -> None:
        """Reset after a successful attempt."""
        self.failures = 0
        self.next_at = float("-inf")


@dataclass(slots=True)
class _StatusWindow:
    """Counters at the last status line, to log what changed since."""

    at: float = float("-inf")
    last: dict[str, int] = field(default_factory=dict)


class SpooledSender:
    """Send batches live while the server answers, spool them otherwise and replay the spool in order."""

    def __init__(
        self,
        name: str,
        send: Send,
        spool: Spool,
        backoff: Backoff | None = None,
        status_interval_s: float = 300.0,
        replay_budget_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.send = send
        self.spool = spool
        self.backoff = backoff or Backoff()
        self.status_interval_s = status_interval_s
        self.replay_budget_s = replay_budget_s
        self.clock = clock
        self.stats = spool.stats
        self.last_error = ""
        self._status = _StatusWindow()
        self._was_backlogged = not spool.empty

    @property
    def backlogged(self) -> bool:
        """True while the spool holds batches."""
        return not self.spool.empty

    def submit(self, batch: Batch, now: float, timeout_s: float | None = None) -> None:
        """Send a batch now if the server is believed up, else spool it."""
        if not self.backoff.ready(now):
            self._to_spool(batch)
            return
        result = self.send(batch, timeout_s)
        if result.outcome is Outcome.OK:
            self._ok(batch)
        elif result.outcome is Outcome.REJECT:
            self._reject_live(batch, result)
        else:
            self._failed(now, result)
            self._to_spool(batch)

    def spool_batch(self, batch: Batch) -> None:
        """Put a batch straight into the spool (shutdown while backing off)."""
        self._to_spool(batch)

    def tick(self, now: float) -> None:
        """Replay spooled batches (at least one, then for up to replay_budget_s) while the server answers."""
        deadline = self.clock() + self.replay_budget_s
        while self.backoff.ready(now):
            batch = self.spool.peek()
            if batch is None:
                break
            result = self.send(batch, None)
            if result.outcome is Outcome.OK:
                self.stats.written += batch.n_points
                self.backoff.succeeded()
                self.spool.ack()
            elif result.outcome is Outcome.REJECT:
                self._log_reject(batch, result)
                self.spool.reject(batch, self._reject_text(result))
            else:
                self._failed(now, result)
                break
            if self.clock() >= deadline:
                break  # at least one batch per tick, then give the worker back
        self._log_status(now)

    def _ok(self, batch: Batch) -> None:
        self.stats.written += batch.n_points
        if self.backoff.failures:
            log.info("%s: server answers again", self.name)
        self.backoff.succeeded()

    def _to_spool(self, batch: Batch) -> None:
        self.spool.append(batch)

    def _failed(self, now: float, result: SendResult) -> None:
        first = self.backoff.failures == 0
        delay = self.backoff.failed(now)
        self.last_error = result.message
        level = logging.WARNING if first or self.backoff.failures in (3, 10) else logging.DEBUG
        log.log(level, "%s: write failed (%s); spooling, retry in %.0f s", self.name, result.message, delay)

    def _reject_text(self, result: SendResult) -> str:
        return f"HTTP {result.status}: {result.message}" if result.status is not None else result.message

    def _log_reject(self, batch: Batch, result: SendResult) -> None:
        log.error(
            "%s: server rejected %d points as bad data (%s); set aside in %s",
            self.name, batch.n_points, self._reject_text(result), self.spool.reject_dir,
        )

    def _reject_live(self, batch: Batch, result: SendResult) -> None:
        self.backoff.succeeded()  # the server answered
        self._log_reject(batch, result)
        self.spool.write_reject(batch, self._reject_text(result))

    def _log_status(self, now: float) -> None:
        backlogged = self.backlogged
        if not backlogged:
            if self._was_backlogged:
                s = self.stats
                log.info(
                    "%s: spool drained (since start: spooled %d, replayed %d, dropped %d, rejected %d)",
                    self.name, s.spooled, s.replayed, s.dropped, s.rejected,
                )
            self._was_backlogged = False
            return
        if not self._was_backlogged:
            self._was_backlogged = True
            self._status.at = now  # first status line one interval after the backlog began
            self._status.last = self.stats.snapshot()
            return
        if now - self._status.at < self.status_interval_s:
            return
        snap = self.stats.snapshot()
        delta = {k: snap[k] - self._status.last.get(k, 0) for k in snap}
        log.warning(
            "%s: backlog %d points in %d spool segments (%d bytes); last %.0f s: spooled %d, replayed %d, "
            "dropped %d, rejected %d, torn records %d%s",
            self.name, self.spool.pending_points, self.spool.segments, self.spool.size_bytes,
            now - self._status.at if self._status.at > float("-inf") else 0.0,
            delta["spooled"], delta["replayed"], delta["dropped"], delta["rejected"], delta["torn"],
            f"; last error: {self.last_error}" if self.last_error else "",
        )
        self._status.at = now
        self._status.last = snap
