"""The SQLite file: schema, opening (WAL, one writer, any number of readers) and writing quarters.

    meters      id, ident (the meter's id), first_at, last_at, state (JSON: last counters, to go on after a restart)
    days        (day, meter) -> the sums of that local day's quarters, its highest quarter (peak kWh, peak_at):
                a rollup kept by the writer, so months and years read ~30 rows a month, not ~3000
    quarters    (start, meter) -> off, day, imp1 imp2 exp1 exp2 (kWh), gas (m3), imp_mean imp_max exp_mean
                exp_max (kW), demand_kw (1-0:1.4.0), peak_kw peak_at (1-0:1.6.0), readings, flags
    month_peaks (meter, month 'YYYY-MM') -> kw, at, source ('meter' = 1-0:1.6.0, 'p1-history' = 0-0:98.1.0,
                'quarters' = our highest quarter where the meter sent neither)
Times are epoch seconds (UTC); `off` is the local UTC offset at the quarter's start, `day` its local date
(YYYYMMDD), so local days, months and years group without time-zone arithmetic in SQL.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from app.store.quarters import OPEN, REGISTERS, Quarter, Timeline

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meters (
    id INTEGER PRIMARY KEY, ident TEXT UNIQUE NOT NULL, first_at INTEGER, last_at INTEGER, state TEXT);
CREATE TABLE IF NOT EXISTS quarters (
    start INTEGER NOT NULL, meter INTEGER NOT NULL, off INTEGER NOT NULL, day INTEGER NOT NULL,
    imp1 REAL NOT NULL, imp2 REAL NOT NULL, exp1 REAL NOT NULL, exp2 REAL NOT NULL, gas REAL NOT NULL,
    imp_mean REAL, imp_max REAL, exp_mean REAL, exp_max REAL, demand_kw REAL, peak_kw REAL, peak_at INTEGER,
    readings INTEGER NOT NULL, flags INTEGER NOT NULL, PRIMARY KEY (start, meter)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS quarters_day ON quarters (day);
CREATE TABLE IF NOT EXISTS days (
    day INTEGER NOT NULL, meter INTEGER NOT NULL, imp1 REAL NOT NULL, imp2 REAL NOT NULL, exp1 REAL NOT NULL,
    exp2 REAL NOT NULL, gas REAL NOT NULL, peak REAL NOT NULL, peak_at INTEGER NOT NULL,
    PRIMARY KEY (day, meter)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS month_peaks (
    meter INTEGER NOT NULL, month TEXT NOT NULL, kw REAL NOT NULL, at INTEGER, source TEXT NOT NULL,
    PRIMARY KEY (meter, month)) WITHOUT ROWID;
"""
# A quarter already stored is replaced only by one built from at least as many readings: a live
# writer's growing quarter replaces its earlier snapshot, importing the same data again changes
# nothing, and a partial quarter never overwrites a complete one.
_UPSERT = """
INSERT INTO quarters VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (start, meter) DO UPDATE SET
    off=excluded.off, day=excluded.day, imp1=excluded.imp1, imp2=excluded.imp2, exp1=excluded.exp1,
    exp2=excluded.exp2, gas=excluded.gas, imp_mean=excluded.imp_mean, imp_max=excluded.imp_max,
    exp_mean=excluded.exp_mean, exp_max=excluded.exp_max, demand_kw=excluded.demand_kw,
    peak_kw=excluded.peak_kw, peak_at=excluded.peak_at, readings=excluded.readings, flags=excluded.flags
WHERE excluded.readings >= quarters.readings
"""
# Energy that reached a quarter after it was written (gas read late, a restart's gap) is added.
_ADD = """
INSERT INTO quarters VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)
ON CONFLICT (start, meter) DO UPDATE SET
    imp1=imp1+excluded.imp1, imp2=imp2+excluded.imp2, exp1=exp1+excluded.exp1, exp2=exp2+excluded.exp2,
    gas=gas+excluded.gas, flags=flags|excluded.flags
"""
_PEAK = """
INSERT INTO month_peaks VALUES (?,?,?,?,?)
ON CONFLICT (meter, month) DO UPDATE SET kw=excluded.kw, at=excluded.at, source=excluded.source
"""

_QPEAK = """
INSERT INTO month_peaks VALUES (?,?,?,?,'quarters')
ON CONFLICT (meter, month) DO UPDATE SET kw=excluded.kw, at=excluded.at
WHERE month_peaks.source = 'quarters' AND excluded.kw > month_peaks.kw
"""

_ROLLUP = """
INSERT OR REPLACE INTO days
SELECT day, meter, SUM(imp1), SUM(imp2), SUM(exp1), SUM(exp2), SUM(gas), MAX(imp1 + imp2), start
FROM quarters WHERE day = ? AND meter = ? GROUP BY day, meter
"""


def connect(path: str, readonly: bool = False) -> sqlite3.Connection:
    """Open the store (creating it and its directory for the writer); readers never write."""
    if readonly:
        if not Path(path).exists():
            raise FileNotFoundError(f"no history store at {path} (is [history] enabled and has it run?)")
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        con.execute("PRAGMA query_only = ON")
        return con
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")  # WAL: a power cut loses at most the last commit
    con.execute("PRAGMA busy_timeout = 5000")
    con.executescript(SCHEMA)
    con.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    if con.execute("SELECT 1 FROM days LIMIT 1").fetchone() is None:  # a store written before the rollup
        con.execute("INSERT INTO days SELECT day, meter, SUM(imp1), SUM(imp2), SUM(exp1), SUM(exp2), SUM(gas), "
                    "MAX(imp1 + imp2), start FROM quarters GROUP BY day, meter")
    return con


def quarter_row(mid: int, q: Quarter, open_: bool = False) -> tuple[object, ...]:
    """The row of one quarter."""
    k = q.kwh
    n = q.powers
    return (q.start, mid, q.offset, q.day, k[0], k[1], k[2], k[3], q.gas_m3,
            q.imp_sum / n if n else None, q.imp_max, q.exp_sum / n if n and q.exp_max is not None else None,
            q.exp_max, q.demand_kw, q.peak_kw, None if q.peak_at is None else int(q.peak_at),
            q.readings, q.flags | (OPEN if open_ else 0))


def row_quarter(ident: str, row: tuple[object, ...]) -> Quarter:
    """A stored (open) quarter back into the accumulator after a restart."""
    (start, _mid, off, day, i1, i2, e1, e2, gas, imp_mean, imp_max, exp_mean, exp_max, demand, peak,
     peak_at, readings, flags) = row
    n = int(readings)  # type: ignore[call-overload]
    q = Quarter(ident, int(start), int(off), int(day),  # type: ignore[call-overload]
                [float(x) for x in (i1, i2, e1, e2)], float(gas), n)  # type: ignore[arg-type]
    if imp_mean is not None:
        q.imp_sum, q.imp_max, q.powers = float(imp_mean) * n, imp_max, n  # type: ignore[arg-type,assignment]
        if exp_mean is not None:
            q.exp_sum, q.exp_max = float(exp_mean) * n, exp_max  # type: ignore[arg-type,assignment]
    q.demand_kw, q.peak_kw, q.peak_at, q.flags = demand, peak, peak_at, int(flags)  # type: ignore[assignment,call-overload]
    assert len(q.kwh) == REGISTERS
    return q


class Writer:
    """Writes into the store; the caller decides when to commit (one transaction each)."""

    def __init__(self, path: str) -> None:
        self.con = connect(path)
        self.ids: dict[str, int] = {ident: mid for mid, ident in self.con.execute("SELECT id, ident FROM meters")}
        self.in_tx = False

    def _begin(self) -> None:
        if not self.in_tx:
            self.con.execute("BEGIN IMMEDIATE")
            self.in_tx = True

    def meter_id(self, ident: str, at: float) -> int:
        """The row id of a meter, added on first sight."""
        mid = self.ids.get(ident)
        if mid is None:
            self._begin()
            cur = self.con.execute("INSERT INTO meters (ident, first_at, last_at) VALUES (?, ?, ?)",
                                   (ident, int(at), int(at)))
            mid = self.ids[ident] = int(cur.lastrowid or 0)
        return mid

    def put(self, closed: Iterable[Quarter], late: Iterable[Quarter] = (), open_: Iterable[Quarter] = ()) -> None:
        """Stage quarters: complete ones and open snapshots replace (by readings), late fragments add."""
        self._begin()
        rows = [quarter_row(self.meter_id(q.meter, q.start), q) for q in closed]
        rows += [quarter_row(self.meter_id(q.meter, q.start), q, open_=True) for q in open_]
        self.con.executemany(_UPSERT, rows)
        late_rows = [quarter_row(self.meter_id(q.meter, q.start), q) for q in late]
        self.con.executemany(_ADD, late_rows)
        self.con.executemany(_ROLLUP, sorted({(r[3], r[1]) for r in (*rows, *late_rows)}))
        seen: dict[int, tuple[int, int]] = {}
        for r in rows:
            mid, t = int(r[1]), int(r[0])  # type: ignore[call-overload]
            lo, hi = seen.get(mid, (t, t))
            seen[mid] = (min(lo, t), max(hi, t + 900))
        self.con.executemany("UPDATE meters SET first_at = MIN(first_at, ?), last_at = MAX(last_at, ?) WHERE id = ?",
                             [(lo, hi, mid) for mid, (lo, hi) in seen.items()])

    def put_peak(self, ident: str, month: str, kw: float, at: float | None, source: str) -> None:
        """Stage one month's peak."""
        self._begin()
        self.con.execute(_PEAK, (self.meter_id(ident, at or 0), month, kw, None if at is None else int(at), source))

    def put_quarter_peak(self, ident: str, month: str, kw: float, at: float) -> None:
        """A quarter's average import as its month's peak where the meter gave none (or a lower one of ours)."""
        self._begin()
        self.con.execute(_QPEAK, (self.meter_id(ident, at), month, kw, int(at)))

    def put_state(self, ident: str, last_t: float, power: Timeline | None, gas: Timeline | None) -> None:
        """Stage where a meter's counters stood (to go on after a restart with no kWh lost)."""
        self._begin()
        state = json.dumps({"t": last_t, "p": None if power is None else [power.t, list(power.values)],
                            "g": None if gas is None else [gas.t, list(gas.values)]})
        self.con.execute("UPDATE meters SET last_at = MAX(last_at, ?), state = ? WHERE id = ?",
                         (int(last_t), state, self.meter_id(ident, last_t)))

    def states(self) -> list[tuple[str, float, Timeline | None, Timeline | None, list[Quarter]]]:
        """Each meter's committed state and its open quarters."""
        out = []
        for mid, ident, state in self.con.execute("SELECT id, ident, state FROM meters WHERE state IS NOT NULL"):
            s = json.loads(state)
            power = Timeline(s["p"][0], tuple(s["p"][1])) if s["p"] else None
            gas = Timeline(s["g"][0], tuple(s["g"][1])) if s["g"] else None
            rows = self.con.execute("SELECT * FROM quarters WHERE meter = ? AND flags & ? AND start >= ?",
                                    (mid, OPEN, int(s["t"]) - 86400 * 2)).fetchall()
            out.append((ident, float(s["t"]), power, gas, [row_quarter(ident, r) for r in rows]))
        return out

    def prune(self, before: float) -> int:
        """Delete quarters that start before `before` (retention)."""
        self._begin()
        n = self.con.execute("DELETE FROM quarters WHERE start < ?", (int(before),)).rowcount
        if n:
            self.con.execute("DELETE FROM days WHERE day < (SELECT MIN(day) FROM quarters)")
        return int(n)

    def commit(self) -> None:
        """Commit what is staged."""
        if self.in_tx:
            self.con.execute("COMMIT")
            self.in_tx = False

    def rollback(self) -> None:
        """Drop what is staged (after a failed write)."""
        if self.in_tx:
            self.in_tx = False
            try:
                self.con.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def close(self) -> None:
        """Commit and close; idempotent."""
        try:
            self.commit()
        finally:
            self.con.close()
