"""CSV for spreadsheets: one file per local day, `YYYY-MM-DD.csv`.

    timestamp;total_consumption_day;...;actual_total_consumption;...;relay_boiler
    2025-04-19T17:08:00+02:00;18402,951;...;0,338;...;1

`timestamp` first (ISO 8601 with offset, the start of the interval), then the named fields
the meter sends, then `relay_<name>` (1/0, state after the last reading of the row). With an
interval, energy counters and demand registers are the last value and instantaneous values
(power, voltage, current) the mean. Rows are buffered and written whole, with fsync, every
`flush_interval`; a torn last line left by a power cut is cut off when the file is reopened.

Appending is idempotent: a row whose timestamp is at or before the last row of its day file
(a replay or `make demo` run again over the same data, a restart inside an interval, a meter
clock stepping back) is not written again, only counted (logged once, and the total at close).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from app.config import CsvConfig
from app.logutil import RateLimited
from app.obis import ENERGY_FIELDS, FIELD_NAMES
from app.records import Reading
from app.sinks import Sink, SinkIncomplete

log = logging.getLogger("app.sinks.csv")
LAST_VALUE_FIELDS = ENERGY_FIELDS | {"maximum_demand_month", "current_average_demand"}
MAX_PENDING_ROWS = 100_000  # held while the disk is full or read-only; oldest dropped past it
FLUSH_ROWS = 5000  # write at least this often (rows), whatever flush_interval says


def format_number(value: float, decimal: str) -> str:
    """Up to 4 decimals, trailing zeros dropped, with the configured decimal mark."""
    text = f"{value:.4f}".rstrip("0").rstrip(".")
    if text == "-0":
        text = "0"
    return text.replace(".", decimal) if decimal != "." else text


class Interval:
    """The readings of one CSV row: last value for counters, mean for instantaneous values."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.last: dict[str, float] = {}
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.gas_time: datetime | None = None
        self.relays: Mapping[str, bool] = {}

    def add(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        """Fold one reading into the row."""
        for name, value in reading.fields.items():
            if name in LAST_VALUE_FIELDS:
                self.last[name] = value
            else:
                self.sums[name] = self.sums.get(name, 0.0) + value
                self.counts[name] = self.counts.get(name, 0) + 1
        if reading.gas_time is not None:
            self.gas_time = reading.gas_time
        self.relays = relays  # a fresh dict per reading from the post-processor, never mutated

    def values(self) -> dict[str, float]:
        """The row's field values."""
        out = dict(self.last)
        for name, total in self.sums.items():
            out[name] = total / self.counts[name]
        return out


class CsvSink(Sink):
    """Writes rows into day files under `directory`."""

    name = "csv"

    def __init__(self, cfg: CsvConfig, tz: ZoneInfo, relay_names: list[str]) -> None:
        self.cfg = cfg
        self.tz = tz
        self.relay_names = list(relay_names)
        self.dir = Path(cfg.directory)
        self.current: Interval | None = None
        self.pending: list[tuple[str, dict[str, float], datetime | None, Mapping[str, bool], datetime]] = []
        self.headers: dict[str, list[str]] = {}  # day -> columns of that file
        self.last_row: dict[str, datetime | None] = {}  # day -> timestamp of the file's last row
        self.skipped = 0  # rows not written: at or before the last row already in their file
        self.last_flush = time.monotonic()
        self.last_sync = self.last_flush
        self.dropped = 0
        self.rows_written = 0
        self.limited = RateLimited(log, 60.0)
        self._closed = False
        self._failing = False

    # ----------------------------------------------------------------- rows

    def _bucket(self, t: datetime) -> datetime:
        """Start of t's interval, aligned to local wall time, as a fixed-offset local time.

        Flooring the epoch shifted by the UTC offset keeps buckets on :00/:15 local and local
        midnight, and still tells the two 02:00 hours apart on the night summer time ends.
        """
        local = t.astimezone(self.tz)
        offset = local.utcoffset() or timedelta(0)
        epoch = local.timestamp()
        if self.cfg.interval > 0:
            epoch -= (epoch + offset.total_seconds()) % self.cfg.interval
            local = datetime.fromtimestamp(epoch, self.tz)
            offset = local.utcoffset() or timedelta(0)
        return local.replace(tzinfo=timezone(offset), fold=0)

    def write(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        """Fold the reading into the current row; a new interval emits the previous row."""
        start = self._bucket(reading.time)
        if self.current is not None and self.current.start != start:
            self._emit(self.current)
            self.current = None
        if self.current is None:
            self.current = Interval(start)
        self.current.add(reading, relays)
        if self.cfg.interval <= 0:
            self._emit(self.current)
            self.current = None

    def _emit(self, row: Interval) -> None:
        if len(self.pending) >= MAX_PENDING_ROWS:
            del self.pending[0]
            self.dropped += 1
            self.limited.error("drop", "CSV backlog full: dropped the oldest row (%d so far)", self.dropped)
        self.pending.append((row.start.date().isoformat(), row.values(), row.gas_time, row.relays, row.start))
        if len(self.pending) >= FLUSH_ROWS and not self._failing:  # a fast replay: bounded memory
            self.flush()

    def tick(self, now: float) -> None:
        """Write buffered rows every flush_interval."""
        if self.pending and now - self.last_flush >= self.cfg.flush_interval:
            self.flush()

    def flush(self, sync: bool | None = None) -> None:
        """Write every buffered row, whole; fsync at most once per flush_interval (and on close),
        so a fast replay is not held up by an fsync every FLUSH_ROWS rows."""
        now = time.monotonic()
        self.last_flush = now
        if sync is None:
            sync = now - self.last_sync >= self.cfg.flush_interval
        if sync:
            self.last_sync = now
        if not self.pending:
            return
        by_day: dict[str, list[str]] = {}
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            last: dict[str, datetime | None] = {}
            kept = []
            skipped: list[tuple[str, datetime, datetime]] = []
            for row in self.pending:
                day, values, gas_time, relays, start = row
                lines = by_day.get(day)
                if lines is None:
                    lines = by_day[day] = []
                cols = self._columns(day, values, gas_time)  # also reads the file's last row
                newest = last[day] if day in last else self.last_row.get(day)
                if newest is not None and start <= newest:
                    skipped.append((day, start, newest))
                    continue
                last[day] = start
                kept.append(row)
                lines.append(self._line(cols, start, values, gas_time, relays))
            self.pending = kept  # a skipped row is final: its time is already in the file
            for day, start, newest in skipped:
                self._skip(day, start, newest)
            for day, lines in by_day.items():  # oldest day first; each day's rows go in one write
                if lines:
                    self._append(day, lines, sync)
                    self.last_row[day] = last[day]
                self.pending = [row for row in self.pending if row[0] != day]  # never written twice
                self.rows_written += len(lines)
        except OSError as exc:
            self._failing = True
            self.limited.error("write", "cannot write CSV to %s: %s; holding %d rows and retrying",
                               self.dir, exc, len(self.pending))
            return
        finally:
            for old in sorted(self.headers)[:-3]:  # keep the columns of the last few days only
                if old not in by_day:
                    del self.headers[old]
                    self.last_row.pop(old, None)
        if self._failing:
            log.info("CSV writing resumed in %s", self.dir)
            self._failing = False

    def _skip(self, day: str, start: datetime, newest: datetime) -> None:
        self.skipped += 1
        if self.skipped == 1:
            log.warning("CSV: %s already has rows up to %s: rows at or before that time (here %s) are not "
                        "written again (a replay or restart over written data?); counting them",
                        self._path(day), newest.isoformat(timespec="seconds"), start.isoformat(timespec="seconds"))

    def _columns(self, day: str, values: Mapping[str, float], gas_time: datetime | None) -> list[str]:
        """The columns of a day file: its existing header, or those of its first row."""
        cols = self.headers.get(day)
        if cols is None:
            cols, self.last_row[day] = self._existing_header(day)
            if cols is None:
                present = [n for n in FIELD_NAMES if n in values]
                if gas_time is not None:
                    present.append("gas_timestamp")
                cols = ["timestamp", *present, *(f"relay_{n}" for n in self.relay_names)]
            self.headers[day] = cols
        return cols

    def _path(self, day: str) -> Path:
        return self.dir / f"{day}.csv"

    def _existing_header(self, day: str) -> tuple[list[str] | None, datetime | None]:
        """Columns and last row's timestamp of a day file written before a restart; cuts off a torn
        last row (power cut)."""
        path = self._path(day)
        if not path.exists() or path.stat().st_size == 0:
            return None, None
        with path.open("rb+") as fh:
            header = fh.readline()
            size = fh.seek(0, os.SEEK_END)
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                pos = size
                while pos > 0:  # back to the last complete row, a block at a time
                    step = min(4096, pos)
                    fh.seek(pos - step)
                    cut = fh.read(step).rfind(b"\n")
                    if cut >= 0:
                        pos = pos - step + cut + 1
                        break
                    pos -= step
                fh.truncate(pos)
                log.warning("%s ended in a partial row (power cut?); cut it off", path)
                if pos == 0:
                    return None, None
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 4096))
            tail = fh.read().rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        last = None
        if tail and tail != header.rstrip(b"\r\n"):
            try:
                last = datetime.fromisoformat(tail.split(self.cfg.delimiter.encode(), 1)[0].decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                log.warning("%s: last row has no readable timestamp; appending after it", path)
        return header.decode("utf-8").rstrip("\r\n").split(self.cfg.delimiter), last

    def _line(self, cols: list[str], start: datetime, values: Mapping[str, float],
              gas_time: datetime | None, relays: Mapping[str, bool]) -> str:
        cells = []
        dec = self.cfg.decimal
        for col in cols:
            if col == "timestamp":
                cells.append(start.isoformat(timespec="seconds"))
            elif col == "gas_timestamp":
                cells.append(gas_time.astimezone(self.tz).isoformat(timespec="seconds") if gas_time else "")
            elif col.startswith("relay_"):
                state = relays.get(col[len("relay_"):])
                cells.append("" if state is None else ("1" if state else "0"))
            else:
                v = values.get(col)
                cells.append("" if v is None else format_number(v, dec))
        return self.cfg.delimiter.join(cells) + "\n"

    def _append(self, day: str, lines: list[str], sync: bool) -> None:
        path = self._path(day)
        new = not path.exists() or path.stat().st_size == 0
        payload = "".join(lines)
        if new:
            payload = self.cfg.delimiter.join(self.headers[day]) + "\n" + payload  # set by _columns
        data = payload.encode("utf-8")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size_before = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                while written < len(data):
                    written += os.write(fd, data[written:])
                if sync:
                    os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size_before)  # never leave half a row behind
                raise
        finally:
            os.close(fd)

    def close(self) -> None:
        """Emit the partial row and write everything."""
        if self._closed:
            return
        self._closed = True
        if self.current is not None:
            self._emit(self.current)
            self.current = None
        self.flush(sync=True)
        if self.skipped:
            log.info("CSV: %d rows not written again (at or before the last row of their day file)", self.skipped)
        if self.pending:
            raise SinkIncomplete(f"{len(self.pending)} CSV rows could not be written at shutdown")
