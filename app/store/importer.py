"""`--import PATH...`: captures (as for --replay) and this appliance's CSV day files into the store.

Quarters already stored are replaced only by ones built from at least as many readings, so importing
the same file twice changes nothing and a partial quarter never overwrites a complete one. CSV rows
carry no meter id: they are counted for the store's most recently seen meter (or "csv" in an empty
store). A CSV row's counters are taken at the end of its interval (the next row's start).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

from app.config import Config
from app.errors import ProtocolError
from app.framing.auto import make_framer
from app.protocols.route import FrameDecoder
from app.store.quarters import Sample
from app.store.recorder import Recorder

log = logging.getLogger("app.store.import")
CHUNK = 1 << 20
COMMIT_EVERY = 200_000  # readings: bounded memory for a year-long capture
_COUNTERS = ("total_consumption_day", "total_consumption_night", "total_injection_day", "total_injection_night")


@dataclass
class ImportStats:
    """What one --import did."""

    files: int = 0
    readings: int = 0
    rejected: int = 0
    no_time: int = 0
    quarters: int = 0
    seconds: float = 0.0


def _files(paths: list[str]) -> Iterator[Path]:
    for p in map(Path, paths):
        if p.is_dir():
            yield from sorted(f for f in p.rglob("*") if f.is_file())
        elif p.exists():
            yield p
        else:
            raise FileNotFoundError(f"{p}: no such file")


def _is_csv(path: Path) -> bool:
    with path.open("rb") as fh:
        head = fh.read(10)
    return head.startswith(b"timestamp") and len(head) == 10 and head[9:10] in (b",", b";", b"\t", b"|")


def import_capture(rec: Recorder, path: Path, cfg: Config, stats: ImportStats) -> None:
    """Frames of a captured byte stream -> readings -> the recorder."""
    m = cfg.meter
    framer = make_framer(m.protocol, max(m.max_frame, 1 << 16))
    decoder = FrameDecoder(ZoneInfo(m.timezone), m.key, m.auth_key, m.profile)
    now = datetime.now(UTC)
    since = 0
    with path.open("rb") as fh:
        while True:
            chunk = fh.read(CHUNK)
            frames = framer.feed(chunk) if chunk else framer.flush()
            for frame in frames:
                if not frame.ok:
                    stats.rejected += 1
                    continue
                try:
                    reading = decoder.decode(frame, now, stats.readings)
                except ProtocolError:
                    stats.rejected += 1
                    continue
                if reading.meter_time is None:
                    stats.no_time += 1
                    continue
                rec.add(reading)
                stats.readings += 1
                since += 1
            if since >= COMMIT_EVERY:
                rec.commit(snapshot=False)
                since = 0
            if not chunk:
                break


def import_csv(rec: Recorder, path: Path, meter: str, stats: ImportStats, interval_s: float = 0.0) -> float:
    """Rows of a CSV day file written by this appliance -> samples -> the recorder; returns the row
    interval found (a file of one row uses `interval_s`, the one before it)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    delim = lines[0][9]
    cols = lines[0].split(delim)
    body = [line.split(delim) for line in lines[1:] if line.strip()]
    decimal = "," if delim != "," and any("," in c for row in body[:50] for c in row[1:]) else "."
    times: list[float] = []
    rows: list[dict[str, str]] = []
    for cells in body:
        if len(cells) != len(cols):
            stats.rejected += 1
            continue
        try:
            t = datetime.fromisoformat(cells[0]).timestamp()
        except ValueError:
            stats.rejected += 1
            continue
        times.append(t)
        rows.append(dict(zip(cols, cells, strict=True)))
    steps = [b - a for a, b in pairwise(times) if b > a]
    interval = min(steps) if steps else interval_s
    shift = interval if interval > 10 else 0.0  # rows per interval: counters as at the interval's end

    def num(row: dict[str, str], name: str) -> float | None:
        text = row.get(name, "")
        if not text:
            return None
        try:
            return float(text.replace(decimal, ".") if decimal != "." else text)
        except ValueError:
            return None

    for t, row in zip(times, rows, strict=True):
        c = [num(row, n) for n in _COUNTERS]
        counters: tuple[float, float, float, float] | None = None
        if c[0] is not None:
            counters = (c[0], c[1] or 0.0, c[2] or 0.0, c[3] or 0.0)
        elif (tot := num(row, "total_consumption")) is not None:
            counters = (tot, 0.0, num(row, "total_injection") or 0.0, 0.0)
        gas_t = None
        if row.get("gas_timestamp"):
            try:
                gas_t = datetime.fromisoformat(row["gas_timestamp"]).timestamp()
            except ValueError:
                gas_t = None
        imp = num(row, "actual_total_consumption")
        rec.acc.add(Sample(meter, t + shift, counters, num(row, "total_gas_consumption"), gas_t, imp,
                           num(row, "actual_total_injection") if imp is not None else None,
                           num(row, "current_average_demand"), None, None))
        stats.readings += 1
    return interval


def run_import(cfg: Config, paths: list[str]) -> ImportStats:
    """Import every path (files, or directories of them) into [history] path."""
    t0 = time.monotonic()
    stats = ImportStats()
    rec = Recorder(cfg.history.path, ZoneInfo(cfg.meter.timezone), live=False)
    try:
        row = rec.writer.con.execute("SELECT ident FROM meters ORDER BY last_at DESC LIMIT 1").fetchone()
        csv_meter = row[0] if row else "csv"
        interval = 0.0
        for path in _files(paths):
            stats.files += 1
            before = stats.readings
            if _is_csv(path):
                interval = import_csv(rec, path, csv_meter, stats, interval)
            else:
                import_capture(rec, path, cfg, stats)
            log.info("%s: %d readings", path, stats.readings - before)
        rec.commit(final=True)
        stats.quarters = rec.quarters_written
    finally:
        rec.writer.close()
    stats.seconds = time.monotonic() - t0
    return stats
