"""Readings -> the store: the accumulator, the month peaks and the writer together.

Used by the live sink (app/sinks/history.py) and by `--import`; the same code path, so a replay and
an import of the same capture give the same quarters.
"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from app.protocols.peaks import MONTH_PEAKS_REF, month_peaks
from app.records import Reading, Value
from app.store.db import Writer
from app.store.quarters import Accumulator, Quarter, Sample

log = logging.getLogger("app.store")
_T1 = ("total_consumption_day", "total_consumption_night", "total_injection_day", "total_injection_night")
_TOTALS = ("total_consumption", "total_injection")
PEAK_REF = "1-0:1.6.0"


def sample_of(r: Reading) -> Sample:
    """What the store keeps of a reading. A meter without tariff registers counts its totals as register 1."""
    f = r.fields
    counters: tuple[float, float, float, float] | None = None
    if "total_consumption_day" in f:
        counters = (f["total_consumption_day"], f.get("total_consumption_night", 0.0),
                    f.get("total_injection_day", 0.0), f.get("total_injection_night", 0.0))
    elif "total_consumption" in f:
        counters = (f["total_consumption"], 0.0, f.get("total_injection", 0.0), 0.0)
    gas = f.get("total_gas_consumption")
    peak = f.get("maximum_demand_month")
    peak_at = None
    if peak is not None:
        v = r.values.get(PEAK_REF)
        if v is not None and v.timestamp is not None:
            peak_at = v.timestamp.timestamp()
    imp = f.get("actual_total_consumption")
    return Sample(r.meter_id or "meter", r.time.timestamp(), counters, gas,
                  r.gas_time.timestamp() if gas is not None and r.gas_time is not None else None,
                  imp, f.get("actual_total_injection") if imp is not None else None,
                  f.get("current_average_demand"), peak, peak_at)


class Recorder:
    """Folds readings into quarters and stages them in the writer; `commit()` makes them durable."""

    def __init__(self, path: str, tz: ZoneInfo, live: bool = True) -> None:
        self.tz = tz
        self.live = live  # the appliance's writer: goes on from its saved counters, saves them at each commit
        self.writer = Writer(path)
        self.acc = Accumulator(tz)
        self.quarters_written = 0
        self._closed_q: list[Quarter] = []  # staged, not yet committed
        self._late_q: list[Quarter] = []
        self._peaks: dict[tuple[str, str], tuple[float, float | None, str]] = {}
        self._history_seen: dict[str, object] = {}  # meter -> last 0-0:98.1.0 groups
        self._peak_seen: dict[str, tuple[float, float | None]] = {}
        if live:
            for ident, last_t, power, gas, open_q in self.writer.states():
                self.acc.restore(ident, last_t, power, gas, open_q)
                self._history_seen[ident] = None

    def add(self, r: Reading) -> None:
        """One reading."""
        s = sample_of(r)
        self.add_sample(s)
        hist = r.values.get(MONTH_PEAKS_REF)
        if hist is not None and hist.groups:
            self.add_history(s.meter, hist)

    def add_sample(self, s: Sample) -> None:
        """One reading's sample (the meter's month peak 1-0:1.6.0 included)."""
        self.acc.add(s)
        if s.peak_kw is not None and s.peak_at is not None and self._peak_seen.get(s.meter) != (s.peak_kw, s.peak_at):
            self._peak_seen[s.meter] = (s.peak_kw, s.peak_at)
            local = datetime.fromtimestamp(s.peak_at, self.tz)
            self._peaks[(s.meter, f"{local.year:04d}-{local.month:02d}")] = (s.peak_kw, s.peak_at, "meter")

    def add_history(self, meter: str, hist: Value) -> None:
        """A 0-0:98.1.0 value: the months it holds, when it changed."""
        if self._history_seen.get(meter) != hist.groups:
            self._history_seen[meter] = hist.groups
            for p in month_peaks(hist, self.tz):
                self._peaks[(meter, p.month.strftime("%Y-%m"))] = (p.kw, p.at.timestamp() if p.at else None,
                                                                    "p1-history")

    def commit(self, final: bool = False, retention_s: float = 0.0, snapshot: bool = True) -> None:
        """Closed quarters (all with `final`), open snapshots and the counters they came from, in one
        transaction. If it fails, the closed quarters are kept for the next try (no kWh dropped)."""
        closed, late = self.acc.closed(final)
        self._closed_q += closed
        self._late_q += late
        try:
            opened = self.acc.open_quarters() if snapshot and not final else []
            self.writer.put(self._closed_q, self._late_q, opened)
            for q in (*self._closed_q, *opened):
                kw = (q.kwh[0] + q.kwh[1]) * 4.0
                if kw > 0:
                    self.writer.put_quarter_peak(q.meter, f"{q.day // 10000:04d}-{q.day // 100 % 100:02d}", kw, q.start)
            for (ident, month), (kw, at, source) in self._peaks.items():
                self.writer.put_peak(ident, month, kw, at, source)
            for ident, st in self.acc.meters.items() if self.live else ():
                self.writer.put_state(ident, st.last_t, st.power, st.gas)
            if retention_s > 0:
                last = max((st.last_t for st in self.acc.meters.values()), default=0.0)
                if last > 0:
                    self.writer.prune(last - retention_s)
            self.writer.commit()
        except BaseException:
            self.writer.rollback()
            raise
        self.quarters_written += len(self._closed_q)
        self._closed_q, self._late_q = [], []
        self._peaks.clear()

    def close(self) -> None:
        """Commit the open quarters too and close the file."""
        try:
            self.commit()
        finally:
            self.writer.close()
