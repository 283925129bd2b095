"""The quarter accumulator (pure): samples in, local clock quarter-hours per meter out.

Energy comes from counter differences, never from integrating power: the difference between two
readings is spread over the time between them in proportion to time (a reading's counters are the
energy up to its meter time, so a reading exactly on a boundary closes the quarter ending there).
A gap (restart, dropped readings, power cut) is therefore *distributed* evenly over the quarters it
spans, and those quarters are *flagged* `GAP`; no kWh is lost. A counter that goes back, or jumps
faster than `MAX_KW`, is a reset (or a meter swapped under the same id): that difference is not
counted, the quarter is flagged `RESET` and counting starts again from the new value. A new meter
id is a new series. Quarters are aligned on UTC multiples of 900 s, which are the local clock
quarters (:00/:15/:30/:45) in every zone whose offset is a multiple of 15 minutes (all of them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

QUARTER_S = 900
GAP_S = 300.0  # a longer time between two counter readings flags the quarters it spans
MAX_KW = 250.0  # a counter rising faster than this (plus 1 kWh) is a reset or swap, not use
MAX_SPAN_S = 400 * 86400.0  # a longer jump in time restarts counting (a meter clock gone wild)
GAS_WAIT_S = 7200.0  # a quarter waits at most this long for the gas reading that covers it

GAP, RESET, PARTIAL, OPEN = 1, 2, 4, 8
REGISTERS = 4  # import t1, import t2, export t1, export t2


@dataclass(frozen=True, slots=True)
class Sample:
    """What the store needs of one reading (times are epoch seconds)."""

    meter: str
    t: float
    counters: tuple[float, float, float, float] | None = None  # kWh: 1.8.1, 1.8.2, 2.8.1, 2.8.2
    gas_m3: float | None = None
    gas_t: float | None = None
    import_kw: float | None = None
    export_kw: float | None = None
    demand_kw: float | None = None  # 1-0:1.4.0
    peak_kw: float | None = None  # 1-0:1.6.0
    peak_at: float | None = None


@dataclass(slots=True)
class Quarter:
    """One local clock quarter of one meter."""

    meter: str
    start: int  # epoch seconds (UTC)
    offset: int  # local UTC offset at start, seconds
    day: int  # local date of start as YYYYMMDD
    kwh: list[float] = field(default_factory=lambda: [0.0] * REGISTERS)
    gas_m3: float = 0.0
    readings: int = 0
    imp_sum: float = 0.0
    imp_max: float | None = None
    exp_sum: float = 0.0
    exp_max: float | None = None
    powers: int = 0
    demand_kw: float | None = None
    peak_kw: float | None = None
    peak_at: float | None = None
    flags: int = 0

    @property
    def end(self) -> int:
        """Epoch seconds of the quarter's end."""
        return self.start + QUARTER_S


@dataclass(slots=True)
class Timeline:
    """One counter series of a meter (electricity registers, or gas): the last value and its time."""

    t: float
    values: tuple[float, ...]


@dataclass(slots=True)
class MeterState:
    """What the accumulator remembers of one meter."""

    last_t: float = -math.inf
    power: Timeline | None = None
    gas: Timeline | None = None
    closed_until: int = -(1 << 62)  # quarters ending at or before this were emitted
    quarters: dict[int, Quarter] = field(default_factory=dict)
    late: dict[int, Quarter] = field(default_factory=dict)  # gas that arrived after its quarter closed


def quarter_of(t: float) -> int:
    """Start of the quarter a reading at `t` belongs to (a reading on a boundary ends the quarter before)."""
    return math.ceil(t / QUARTER_S) * QUARTER_S - QUARTER_S


class Accumulator:
    """Readings of any number of meters -> closed quarters (plus a snapshot of the open ones)."""

    def __init__(self, tz: ZoneInfo, gas_wait_s: float = GAS_WAIT_S) -> None:
        self.tz = tz
        self.gas_wait_s = gas_wait_s
        self.meters: dict[str, MeterState] = {}
        self.resets = 0
        self.ignored = 0  # readings older than the meter's last one
        self._offsets: dict[int, tuple[int, int]] = {}

    # ------------------------------------------------------------------ input

    def add(self, s: Sample) -> None:
        """Fold one sample in."""
        st = self.meters.get(s.meter)
        if st is None:
            st = self.meters[s.meter] = MeterState()
        if s.t <= st.last_t:
            self.ignored += 1
            return
        st.last_t = s.t
        q = self._quarter(st, s.meter, quarter_of(s.t))
        q.readings += 1
        if s.counters is not None:
            st.power = self._advance(st, s.meter, st.power, s.t, s.counters, q)
        if s.gas_m3 is not None:
            gt = s.gas_t if s.gas_t is not None else s.t
            if st.gas is None or gt > st.gas.t:
                st.gas = self._advance(st, s.meter, st.gas, gt, (s.gas_m3,), q)
        if s.import_kw is not None:
            q.imp_sum += s.import_kw
            q.imp_max = s.import_kw if q.imp_max is None else max(q.imp_max, s.import_kw)
            q.powers += 1
            if s.export_kw is not None:
                q.exp_sum += s.export_kw
                q.exp_max = s.export_kw if q.exp_max is None else max(q.exp_max, s.export_kw)
        if s.demand_kw is not None:
            q.demand_kw = s.demand_kw if q.demand_kw is None else max(q.demand_kw, s.demand_kw)
        if s.peak_kw is not None:
            q.peak_kw, q.peak_at = s.peak_kw, s.peak_at

    def _advance(self, st: MeterState, meter: str, line: Timeline | None, t: float,
                 values: tuple[float, ...], q: Quarter) -> Timeline:
        """Spread the counter differences since the last value over (last t, t]; detect resets."""
        if line is None:
            q.flags |= PARTIAL
            return Timeline(t, values)
        span = t - line.t
        deltas = [v - old for v, old in zip(values, line.values, strict=True)]
        limit = MAX_KW * max(span, 0.0) / 3600.0 + 1.0
        if span <= 0 or span > MAX_SPAN_S or any(d < -0.0005 or d > limit for d in deltas):
            if span > 0 or any(d != 0 for d in deltas):
                q.flags |= RESET
                self.resets += 1
            return Timeline(max(t, line.t), values)
        if not any(deltas):
            return Timeline(t, values)
        flag = GAP if span > GAP_S else 0
        gas = len(values) == 1
        left = list(deltas)
        a = line.t
        while a < t:
            qs = int(a // QUARTER_S) * QUARTER_S
            b = min(qs + QUARTER_S, t)
            last = b >= t
            share = (b - a) / span
            target = self._target(st, meter, qs)
            target.flags |= flag
            if gas:
                part = left[0] if last else deltas[0] * share
                target.gas_m3 += part
                left[0] -= part
            else:
                kwh = target.kwh
                for i in range(REGISTERS):
                    part = left[i] if last else deltas[i] * share
                    kwh[i] += part
                    left[i] -= part
            a = b
        return Timeline(t, values)

    def _target(self, st: MeterState, meter: str, qs: int) -> Quarter:
        """The quarter that takes energy for `qs`: open, or a late fragment when it was already emitted."""
        if qs + QUARTER_S <= st.closed_until:
            late = st.late.get(qs)
            if late is None:
                late = st.late[qs] = self._new(meter, qs)
            return late
        return self._quarter(st, meter, qs)

    def _quarter(self, st: MeterState, meter: str, qs: int) -> Quarter:
        q = st.quarters.get(qs)
        if q is None:
            q = st.quarters[qs] = self._new(meter, qs)
        return q

    def _new(self, meter: str, qs: int) -> Quarter:
        off_day = self._offsets.get(qs)
        if off_day is None:
            local = datetime.fromtimestamp(qs, self.tz)
            off = local.utcoffset()
            off_day = (int(off.total_seconds()) if off else 0, local.year * 10000 + local.month * 100 + local.day)
            if len(self._offsets) > 4096:
                self._offsets.clear()
            self._offsets[qs] = off_day
        return Quarter(meter, qs, off_day[0], off_day[1])

    # ----------------------------------------------------------------- output

    def closed(self, final: bool = False) -> tuple[list[Quarter], list[Quarter]]:
        """(quarters complete now, late gas fragments for quarters emitted before); `final` takes all."""
        done: list[Quarter] = []
        late: list[Quarter] = []
        for st in self.meters.values():
            if st.late:
                late.extend(st.late.values())
                st.late.clear()
            if not st.quarters:
                continue
            if final:
                until = max(q.end for q in st.quarters.values())
            else:
                until = int(st.last_t // QUARTER_S) * QUARTER_S if st.last_t > -math.inf else st.closed_until
                if st.gas is not None and st.last_t - st.gas.t < self.gas_wait_s:
                    until = min(until, int(st.gas.t // QUARTER_S) * QUARTER_S)
            if until <= st.closed_until and not final:
                continue
            for qs in sorted(st.quarters):
                if qs + QUARTER_S > until:
                    break
                done.append(st.quarters.pop(qs))
            st.closed_until = max(st.closed_until, until)
        return done, late

    def open_quarters(self) -> list[Quarter]:
        """The quarters still accumulating (written at each commit, flagged OPEN, replaced later)."""
        return [q for st in self.meters.values() for q in st.quarters.values()]

    def restore(self, meter: str, last_t: float, power: Timeline | None, gas: Timeline | None,
                open_quarters: Iterable[Quarter]) -> None:
        """Continue after a restart from the committed state and open quarters."""
        st = self.meters[meter] = MeterState(last_t=last_t, power=power, gas=gas)
        for q in open_quarters:
            q.flags &= ~OPEN
            st.quarters[q.start] = q
        st.closed_until = min(st.quarters) if st.quarters else int(last_t // QUARTER_S) * QUARTER_S
