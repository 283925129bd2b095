"""`--import PATH...`: captures (as for --replay) and this appliance's CSV day files into the store.

Quarters already stored are replaced only by ones built from at least as many readings, so importing
the same file twice changes nothing and a partial quarter never overwrites a complete one. CSV rows
carry no meter id: they are counted for the store's most recently seen meter (or "csv" in an empty
store). A CSV row's counters are taken at the end of its interval (the next row's start).

Every reading and every CSV row passes the plausibility gate the live path and a replay use
(app.protocols.plausibility: [meter] max_power, counters that go backwards or jump, impossible
values; the meter clock by meter time only, as in a replay): an implausible one is not stored,
counted and its reason logged (rate-limited). A gate per meter id; a capture decoded in parallel
pieces gets its gates per piece (the first reading of a piece is judged on its own values).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from zoneinfo import ZoneInfo

from app.config import Config
from app.errors import ProtocolError
from app.framing.auto import make_framer
from app.logutil import RateLimited
from app.obis import FIELD_UNITS
from app.protocols.peaks import MONTH_PEAKS_REF
from app.protocols.plausibility import DEFAULT_MAX_POWER_W, PlausibilityGate
from app.protocols.route import FrameDecoder
from app.records import Reading, Value, make_value
from app.store.quarters import Sample
from app.store.recorder import Recorder, sample_of

log = logging.getLogger("app.store.import")
CHUNK = 1 << 20
PIECE = 8 << 20  # bytes of a capture one worker decodes at a time
MAX_TELEGRAM = 1 << 16  # a telegram starting in a piece ends within this many bytes after it
COMMIT_EVERY = 200_000  # readings: bounded memory for a year-long capture
IMPLAUSIBLE_LOG_S = 10.0  # one line per reason kind this often (a bad file may hold thousands)
_COUNTERS = ("total_consumption_day", "total_consumption_night", "total_injection_day", "total_injection_night")


@dataclass
class ImportStats:
    """What one --import did."""

    files: int = 0
    readings: int = 0
    rejected: int = 0
    no_time: int = 0
    implausible: int = 0  # readings / rows the plausibility gate refused: not stored
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


def _looks_dsmr(head: bytes) -> bool:
    """A plain DSMR text capture (telegrams start with '/XXX' at a line start)."""
    return re.search(rb"(?:^|\n)/[A-Za-z]{3}", head) is not None and b"1-0:" in head


def _decode_piece(args: tuple[str, int, int, str, str, float]
                  ) -> tuple[list[Sample], list[tuple[str, Value]], int, int, list[str]]:
    """Worker: the telegrams that START in bytes [start, end) of a DSMR text capture -> samples, the
    0-0:98.1.0 values where they changed, rejected and time-less counts, the implausible ones' reasons."""
    path, start, end, timezone, protocol, max_power_w = args
    gate = _Gates(max_power_w)
    implausible: list[str] = []
    framer = make_framer(protocol, 1 << 16)
    decoder = FrameDecoder(ZoneInfo(timezone))
    with open(path, "rb") as fh:
        fh.seek(start)
        data = fh.read(end - start + MAX_TELEGRAM)
    a = 0 if start == 0 else data.find(b"\n/") + 1
    b = data.find(b"\n/", end - start - 1)
    if a <= 0 and start != 0:
        return [], [], 0, 0, []
    piece = data[a:] if b < 0 else data[a:b + 1]
    samples: list[Sample] = []
    history: list[tuple[str, Value]] = []
    last_hist: object = None
    rejected = no_time = 0
    now = datetime.now(UTC)
    for n, frame in enumerate(framer.feed(piece) + framer.flush()):
        if not frame.ok:
            rejected += 1
            continue
        try:
            reading = decoder.decode(frame, now, n)
        except ProtocolError:
            rejected += 1
            continue
        if reading.meter_time is None:
            no_time += 1
            continue
        why = gate.check(reading)
        if why:
            implausible.append(f"{reading.time.isoformat(timespec='seconds')}: {why}")
            continue
        s = sample_of(reading)
        samples.append(s)
        hist = reading.values.get(MONTH_PEAKS_REF)
        if hist is not None and hist.groups and hist.groups != last_hist:
            last_hist = hist.groups
            history.append((s.meter, hist))
    return samples, history, rejected, no_time, implausible


class _Gates:
    """A plausibility gate per meter id (a capture may hold several meters' telegrams one after another),
    judging the clock by meter time only, as in a replay."""

    def __init__(self, max_power_w: float) -> None:
        self.max_power_w = max_power_w
        self.gates: dict[str, PlausibilityGate] = {}

    def check(self, reading: Reading) -> str:
        """'' for a plausible reading, else why not."""
        gate = self.gates.get(reading.meter_id)
        if gate is None:
            if len(self.gates) >= 64:  # garbage ids: bounded
                self.gates.clear()
            gate = self.gates[reading.meter_id] = PlausibilityGate(self.max_power_w, check_clock=False)
        return gate.check(reading)


class _Implausible:
    """Counts the readings the gate refused and logs why, a line per reason kind at a limited rate."""

    def __init__(self, stats: ImportStats, path: Path) -> None:
        self.stats = stats
        self.path = path
        self.limited = RateLimited(log, IMPLAUSIBLE_LOG_S)

    def __call__(self, why: str) -> None:
        self.stats.implausible += 1
        kind = why.split(": ", 1)[-1].split(" ", 1)[0]
        self.limited.warning(kind, "%s: implausible reading not stored: %s (%d so far)", self.path, why,
                             self.stats.implausible)


def import_capture(rec: Recorder, path: Path, cfg: Config, stats: ImportStats, workers: int = 0) -> None:
    """Frames of a captured byte stream -> readings -> the recorder. A plain DSMR capture is decoded by
    `workers` processes (default: one per core) in pieces, fed to the recorder in file order."""
    m = cfg.meter
    with path.open("rb") as fh:
        head = fh.read(1 << 16)
    size = path.stat().st_size
    workers = workers or os.cpu_count() or 1
    piece_bytes = PIECE
    if m.protocol in ("dsmr", "auto") and not m.key and _looks_dsmr(head) and workers > 1 and size > piece_bytes:
        pieces = [(str(path), a, min(a + piece_bytes, size), m.timezone, "dsmr", m.max_power)
                  for a in range(0, size, piece_bytes)]
        since = 0
        refused = _Implausible(stats, path)
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for samples, history, rejected, no_time, implausible in pool.imap(_decode_piece, pieces):
                for why in implausible:
                    refused(why)
                for s in samples:
                    rec.add_sample(s)
                for meter, value in history:
                    rec.add_history(meter, value)
                stats.readings += len(samples)
                stats.rejected += rejected
                stats.no_time += no_time
                since += len(samples)
                if since >= COMMIT_EVERY:
                    rec.commit(snapshot=False)
                    since = 0
        return
    framer = make_framer(m.protocol, max(m.max_frame, 1 << 16))
    decoder = FrameDecoder(ZoneInfo(m.timezone), m.key, m.auth_key, m.profile)
    gate = _Gates(m.max_power)
    refused = _Implausible(stats, path)
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
                why = gate.check(reading)
                if why:
                    refused(f"{reading.time.isoformat(timespec='seconds')}: {why}")
                    continue
                rec.add(reading)
                stats.readings += 1
                since += 1
            if since >= COMMIT_EVERY:
                rec.commit(snapshot=False)
                since = 0
            if not chunk:
                break


class RowGate:
    """The plausibility gate for CSV rows of one file set (day files continue each other). An empty cell
    is no reason to refuse a row: the gate sees the column's last value there."""

    def __init__(self, max_power_w: float) -> None:
        self.gate = PlausibilityGate(max_power_w, check_clock=False)
        self.last: dict[str, float] = {}

    def check(self, row: dict[str, str], t: float, num: Callable[[dict[str, str], str], float | None]) -> str:
        """'' for a plausible row, else why not."""
        fields = {name: v for name in row if name in FIELD_UNITS and (v := num(row, name)) is not None}
        seen = self.last | fields
        at = datetime.fromtimestamp(t, UTC)
        why = self.gate.check(Reading(seq=0, protocol="csv", meter_id="", header="", meter_time=at, received=at,
                                      values={n: make_value(v, FIELD_UNITS[n]) for n, v in seen.items()},
                                      fields=seen))
        if not why:
            self.last = seen
        return why


def import_csv(rec: Recorder, path: Path, meter: str, stats: ImportStats, interval_s: float = 0.0,
               gate: RowGate | None = None) -> float:
    """Rows of a CSV day file written by this appliance -> samples -> the recorder; returns the row
    interval found (a file of one row uses `interval_s`, the one before it). `gate`: the plausibility
    gate every row passes (one per directory: a file set continues from file to file)."""
    gate = gate or RowGate(DEFAULT_MAX_POWER_W)
    refused = _Implausible(stats, path)
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
        why = gate.check(row, t, num)
        if why:
            refused(f"{row[cols[0]]}: {why}")
            continue
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


def run_import(cfg: Config, paths: list[str], workers: int = 0) -> ImportStats:
    """Import every path (files, or directories of them) into [history] path."""
    t0 = time.monotonic()
    stats = ImportStats()
    rec = Recorder(cfg.history.path, ZoneInfo(cfg.meter.timezone), live=False)
    try:
        row = rec.writer.con.execute("SELECT ident FROM meters ORDER BY last_at DESC LIMIT 1").fetchone()
        csv_meter = row[0] if row else "csv"
        interval = 0.0
        row_gates: dict[Path, RowGate] = {}  # a file set per directory ([meter:NAME] meters write their own)
        for path in _files(paths):
            stats.files += 1
            before, refused = stats.readings, stats.implausible
            if _is_csv(path):
                gate = row_gates.setdefault(path.parent, RowGate(cfg.meter.max_power))
                interval = import_csv(rec, path, csv_meter, stats, interval, gate)
            else:
                import_capture(rec, path, cfg, stats, workers)
            log.info("%s: %d readings%s", path, stats.readings - before,
                     f", {stats.implausible - refused} implausible ones not stored" if stats.implausible > refused
                     else "")
        rec.commit(final=True)
        stats.quarters = rec.quarters_written
    finally:
        rec.writer.close()
    stats.seconds = time.monotonic() - t0
    return stats
