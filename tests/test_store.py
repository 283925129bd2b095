"""The quarter store: counter differences give quarters that sum to what the meter counted, whatever the
gaps, restarts, DST days, counter resets, commit points or batching; 0-0:98.1.0 month peaks; queries."""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.config import loads
from app.protocols.dsmr import parse_telegram
from app.protocols.peaks import month_peaks
from app.records import Value
from app.store.quarters import GAP, PARTIAL, QUARTER_S, RESET, Accumulator, Sample, quarter_of
from app.store.query import HistoryQuery
from app.store.recorder import Recorder
from tests.conftest import FIXTURES

TZ = ZoneInfo("Europe/Brussels")
DST_DAYS = [datetime(2026, 3, 29, tzinfo=TZ), datetime(2026, 10, 25, tzinfo=TZ), datetime(2026, 6, 1, tzinfo=TZ)]

# one step: seconds since the last reading, kWh added per register, gas added, reset?
step = st.tuples(
    st.one_of(st.integers(1, 30), st.integers(31, 4000), st.integers(4001, 3 * 86400)),
    st.tuples(*[st.floats(0, 0.5, allow_nan=False)] * 4),
    st.floats(0, 0.1, allow_nan=False),
    st.integers(0, 9).map(lambda n: n == 0),
)


def _samples(start: datetime, steps: list[tuple[int, tuple[float, ...], float, bool]],
             meter: str = "M1") -> tuple[list[Sample], float, float]:
    """Samples for the steps, and the kWh and m3 the meter counted outside resets."""
    t = start.timestamp()
    c = [1000.0, 2000.0, 300.0, 400.0]
    gas = 50.0
    out = [Sample(meter, t, (c[0], c[1], c[2], c[3]), gas, t, 1.0, 0.0)]
    counted = counted_gas = 0.0
    for dt, add, g, reset in steps:
        t += dt
        if reset:
            c = [0.5, 0.5, 0.0, 0.0]
            gas = 1.0
        else:
            c = [round(a + b, 3) for a, b in zip(c, add, strict=True)]
            counted += sum(round(b, 3) for b in add)
            gas = round(gas + g, 3)
            counted_gas += round(g, 3)
        out.append(Sample(meter, t, (c[0], c[1], c[2], c[3]), gas, t, 0.5, 0.1))
    return out, counted, counted_gas


def _fold(samples: list[Sample]) -> list:
    acc = Accumulator(TZ)
    for s in samples:
        acc.add(s)
    done, late = acc.closed(final=True)
    return done + late


@given(st.sampled_from(DST_DAYS), st.lists(step, max_size=40))
def test_quarters_sum_to_the_counter_difference(start: datetime, steps: list) -> None:
    samples, counted, counted_gas = _samples(start, steps)
    quarters = _fold(samples)
    kwh = sum(sum(q.kwh) for q in quarters)
    assert kwh == pytest.approx(counted, abs=1e-6)
    assert sum(q.gas_m3 for q in quarters) == pytest.approx(counted_gas, abs=1e-6)
    for q in quarters:
        assert q.start % QUARTER_S == 0
        assert min(q.kwh) >= -1e-9 and q.gas_m3 >= -1e-9
    assert sum(q.readings for q in quarters) == len(samples)
    assert any(q.flags & RESET for q in quarters) == any(s[3] for s in steps)


def test_a_reading_on_a_boundary_closes_the_quarter_that_ends_there() -> None:
    t0 = datetime(2026, 6, 1, 12, 0, tzinfo=TZ).timestamp()
    assert quarter_of(t0) == t0 - 900 and quarter_of(t0 + 1) == t0
    acc = Accumulator(TZ)
    acc.add(Sample("M", t0 - 900, (0.0, 0.0, 0.0, 0.0)))
    acc.add(Sample("M", t0, (1.0, 0.0, 0.0, 0.0)))
    done, _ = acc.closed()
    assert [(q.start, q.kwh[0]) for q in done] == [(int(t0 - 1800), 0.0), (int(t0 - 900), 1.0)]
    assert done[0].flags & PARTIAL


def test_a_gap_is_spread_over_its_quarters_and_flagged() -> None:
    t0 = datetime(2026, 6, 1, 12, 0, tzinfo=TZ).timestamp()
    quarters = _fold([Sample("M", t0, (0.0, 0.0, 0.0, 0.0)), Sample("M", t0 + 3600, (4.0, 0.0, 0.0, 0.0))])
    gap = [q for q in quarters if q.start >= t0]
    assert [q.kwh[0] for q in gap] == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert all(q.flags & GAP for q in gap)


def test_a_counter_reset_or_swap_is_no_huge_quarter() -> None:
    t0 = datetime(2026, 6, 1, 12, 0, tzinfo=TZ).timestamp()
    quarters = _fold([Sample("M", t0, (5000.0, 0.0, 0.0, 0.0)), Sample("M", t0 + 10, (5000.01, 0, 0, 0)),
                      Sample("M", t0 + 20, (3.0, 0.0, 0.0, 0.0)), Sample("M", t0 + 30, (3.02, 0, 0, 0)),
                      Sample("M", t0 + 40, (90000.0, 0, 0, 0)), Sample("M", t0 + 50, (90000.01, 0, 0, 0))])
    assert sum(q.kwh[0] for q in quarters) == pytest.approx(0.04)
    assert any(q.flags & RESET for q in quarters)
    # a new meter id is a new series: no difference across meters
    quarters = _fold([Sample("OLD", t0, (5000.0, 0, 0, 0)), Sample("NEW", t0 + 10, (1.0, 0, 0, 0)),
                      Sample("NEW", t0 + 20, (1.5, 0, 0, 0))])
    assert sum(q.kwh[0] for q in quarters) == pytest.approx(0.5)


def _store_rows(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT start, meter, imp1, imp2, exp1, exp2, gas, readings, flags FROM quarters "
                           "ORDER BY start").fetchall()
    finally:
        con.close()


@given(st.lists(step.filter(lambda s: not s[3]), min_size=1, max_size=30), st.data())
def test_any_commit_points_give_the_same_store(steps: list, data: st.DataObject) -> None:
    samples, _, _ = _samples(DST_DAYS[1], steps)
    cuts = set(data.draw(st.lists(st.integers(0, len(samples)), max_size=5)))
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.sqlite", Path(tmp) / "b.sqlite"
        rec = Recorder(str(a), TZ)
        for s in samples:
            rec.acc.add(s)
        rec.close()
        rec = Recorder(str(b), TZ)
        for n, s in enumerate(samples):
            if n in cuts:
                rec.commit()
            rec.acc.add(s)
        rec.close()
        assert _store_rows(a) == _store_rows(b)


@given(st.lists(step.filter(lambda s: not s[3]), min_size=2, max_size=30), st.data())
def test_a_kill_loses_detail_never_kwh(steps: list, data: st.DataObject) -> None:
    """Commit at k, lose readings k..j (SIGKILL before the next commit), restart and go on."""
    samples, counted, _ = _samples(DST_DAYS[0], steps)
    k = data.draw(st.integers(1, len(samples) - 1))
    j = data.draw(st.integers(k, len(samples) - 1))
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "h.sqlite")
        rec = Recorder(path, TZ)
        for s in samples[:k]:
            rec.acc.add(s)
        rec.commit()
        for s in samples[k:j]:
            rec.acc.add(s)  # never committed: the process is killed
        rec.writer.con.close()
        rec = Recorder(path, TZ)
        for s in samples[j:]:
            rec.acc.add(s)
        rec.close()
        con = sqlite3.connect(path)
        total = con.execute("SELECT SUM(imp1 + imp2 + exp1 + exp2) FROM quarters").fetchone()[0]
        con.close()
        assert total == pytest.approx(counted, abs=1e-6)


def _telegram_values(name: str) -> dict[str, Value]:
    data = (FIXTURES / "dsmr" / name).read_bytes()
    return parse_telegram(data, datetime.now(TZ), TZ, crc_ok=True).values


def test_fluvius_month_peaks_become_months() -> None:
    values = _telegram_values("fluvius_be_p1v50217_2.txt")
    peaks = month_peaks(values["0-0:98.1.0"], TZ)
    assert [(p.month, p.kw) for p in peaks] == [(date(2023, 10, 1), 1.747), (date(2023, 11, 1), 3.26),
                                                (date(2023, 12, 1), 1.981)]
    assert peaks[1].at == datetime(2023, 11, 9, 16, 45, tzinfo=TZ)
    bad = month_peaks(Value(4, None, None, (("4", None), ("1-0:1.6.0", None), ("1-0:1.6.0", None),
                                            ("230801000000S", None), ("632525252525W", None), ("00.000", "kW"))), TZ)
    assert bad[0].month == date(2023, 7, 1) and bad[0].at is None
    # another meter's 98.1.0 (Hungarian billing values) is not month peaks
    assert month_peaks(Value(1, None, None, (("230701000000S", None), ("000040.777", "kWh"))), TZ) == []


def _filled_store(path: Path, days: int = 3) -> None:
    rec = Recorder(str(path), TZ, live=False)
    t = datetime(2026, 10, 24, tzinfo=TZ).timestamp()
    c = 100.0
    for n in range(days * 96 + 1):
        rec.acc.add(Sample("M1", t + n * 900, (c + n * 0.25, 0.0, 0.0, 0.0), None, None, 1.0, 0.0))
    rec.commit(final=True)
    rec.writer.close()


def test_rows_are_local_days_months_and_hours(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    _filled_store(path)
    cfg = loads(f"[history]\npath = {path}\n")
    q = HistoryQuery(cfg)
    days = q.rows("day", date(2026, 10, 24), date(2026, 10, 27))
    assert [d["start"] for d in days] == ["2026-10-24T00:00:00+02:00", "2026-10-25T00:00:00+02:00",
                                          "2026-10-26T00:00:00+01:00"]
    assert [d["import_kwh"] for d in days] == [24.0, 25.0, 23.0]  # 25 hours on the day DST ends
    assert len(q.rows("hour", date(2026, 10, 25), date(2026, 10, 26))) == 25
    assert len(q.rows("quarter", date(2026, 10, 25), date(2026, 10, 26))) == 100
    assert q.rows("month", None, None)[0]["import_kwh"] == 72.0
    assert set(days[0]) == {"start", "end", "import_kwh", "export_kwh", "import_kwh_t1", "import_kwh_t2",
                            "export_kwh_t1", "export_kwh_t2", "gas_m3", "peak_kw", "peak_at", "cost"}
    assert days[0]["peak_kw"] == 1.0
    with pytest.raises(ValueError, match="resolution"):
        q.rows("week", None, None)
    with pytest.raises(ValueError, match="to = "):
        q.rows("day", date(2026, 10, 25), date(2026, 10, 24))
    with pytest.raises(ValueError, match="not a date"):
        q.rows("day", "yesterday", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tariff"):
        q.rows("day", None, None, tariff="nope")
    assert q.meters()[0]["meter"] == "M1"
    q.close()


def test_cost_comes_from_the_tariff_and_compares(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    _filled_store(path)
    cfg = loads(f"[history]\npath = {path}\n")
    cfg = replace(cfg, tariff=replace(cfg.tariff, import_price_t1=0.30),
                  tariffs=(replace(cfg.tariff, name="cheap", import_price_t1=0.10),))
    q = HistoryQuery(cfg)
    day = q.rows("day", date(2026, 10, 24), date(2026, 10, 25))[0]
    assert day["cost"]["import"] == pytest.approx(24 * 0.30)
    c = q.cost(date(2026, 10, 1), date(2026, 11, 1))
    assert c["total"]["import"] == pytest.approx(72 * 0.30)
    assert [x["tariff"] for x in c["compare"]] == ["cheap", "default"]
    assert {"month", "year", "method"} <= set(c["projection"])
    q.close()


def test_capacity_uses_the_meters_peaks_before_ours(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    today = datetime.now(TZ)
    rec = Recorder(str(path), TZ, live=False)
    t = today.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    rec.acc.add(Sample("M1", t, (10.0, 0, 0, 0)))
    rec.acc.add(Sample("M1", t + 900, (11.0, 0, 0, 0)))  # 4 kW this month
    rec.commit(final=True)
    last = (today.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    rec.writer.put_peak("M1", last, 1.5, None, "p1-history")  # under the floor
    rec.writer.commit()
    rec.writer.close()
    q = HistoryQuery(loads(f"[history]\npath = {path}\n"))
    cap = q.capacity()
    assert cap["month"] == today.strftime("%Y-%m") and cap["month_peak_kw"] == 4.0
    assert cap["mean_12m_kw"] == pytest.approx((4.0 + 2.5) / 2)
    assert [m["source"] for m in cap["months"]] == ["p1-history", "quarters"]
    q.close()


def test_an_empty_or_missing_store_answers_empty(tmp_path: Path) -> None:
    q = HistoryQuery(loads(f"[history]\npath = {tmp_path / 'none.sqlite'}\n"))
    assert q.rows("day", None, None) == [] and q.meters() == []
    assert q.capacity()["month_peak_kw"] is None
    q.close()


def test_dynamic_prices_price_each_quarter(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    _filled_store(path, days=1)  # 0.25 kWh every quarter of 24 October 2026 (CEST)
    prices = tmp_path / "prices.csv"
    prices.write_text("".join(f"2026-10-24 {h:02d}:00 ; {0.10 + h / 100:.2f}\n" for h in range(24))
                      + "2026-10-25 00:00 ; 0.50\n")
    cfg = loads(f"[history]\npath = {path}\n[tariff]\nimport_price = 0.30\nprices_file = {prices}\n")
    q = HistoryQuery(cfg)
    day = q.rows("day", date(2026, 10, 24), date(2026, 10, 25))[0]
    assert day["cost"]["import"] == pytest.approx(sum(1.0 * (0.10 + h / 100) for h in range(24)))
    hours = q.rows("hour", date(2026, 10, 24), date(2026, 10, 25))
    assert [h["cost"]["import"] for h in hours[:2]] == pytest.approx([0.10, 0.11])
    q.close()


def test_retention_deletes_old_quarters_and_their_days(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite"
    rec = Recorder(str(path), TZ)
    t = datetime(2026, 10, 1, tzinfo=TZ).timestamp()
    for n in range(5 * 96 + 1):
        rec.acc.add(Sample("M1", t + n * 900, (n * 0.25, 0.0, 0.0, 0.0)))
    rec.commit(retention_s=2 * 86400)
    rec.close()
    con = sqlite3.connect(path)
    first_q = con.execute("SELECT MIN(start) FROM quarters").fetchone()[0]
    days = [d for (d,) in con.execute("SELECT day FROM days ORDER BY day")]
    con.close()
    assert first_q >= t + 3 * 86400 - 900
    assert days[0] >= 20261003
