"""Pricing.cost by part, fixed fees per day, dynamic prices, projection, comparison; hypothesis invariants."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.tariffs.cost import Cost, MonthPeak, Pricing, QuarterUse, compare, day_shares, project, projections
from app.tariffs.prices import parse_prices
from app.tariffs.settings import TariffConfig

BRU = ZoneInfo("Europe/Brussels")
Q = timedelta(minutes=15)
DAY_NIGHT = TariffConfig(import_price_t1=0.32, import_price_t2=0.26, export_price_t1=0.04, export_price_t2=0.03,
                         gas_price=1.10)


def _day(d: date, imp1: float = 0.1, imp2: float = 0.05, exp1: float = 0.0, exp2: float = 0.0,
         gas: float = 0.0) -> list[QuarterUse]:
    """Every local quarter of a day (92, 96 or 100 of them), the same use in each."""
    t = datetime.combine(d, datetime.min.time(), BRU)
    end = datetime.combine(d + timedelta(days=1), datetime.min.time(), BRU)
    out = []
    while t < end:
        out.append(QuarterUse(t, imp1, imp2, exp1, exp2, gas))
        t = (t.astimezone(ZoneInfo("UTC")) + Q).astimezone(BRU)
    return out


def _at(*args: int) -> datetime:
    return datetime(*args, tzinfo=BRU)  # type: ignore[misc]


def test_energy_per_register_export_negative_and_gas() -> None:
    qs = _day(date(2025, 6, 2), 0.1, 0.05, 0.2, 0.1, 0.01)
    c = Pricing(DAY_NIGHT).cost(qs, _at(2025, 6, 2), _at(2025, 6, 3))
    assert c.import_ == pytest.approx(96 * (0.1 * 0.32 + 0.05 * 0.26))
    assert c.export == pytest.approx(-96 * (0.2 * 0.04 + 0.1 * 0.03))
    assert c.gas == pytest.approx(96 * 0.01 * 1.10)
    assert (c.fixed, c.capacity) == (0.0, 0.0)
    assert c.total == pytest.approx(c.import_ + c.export + c.gas)
    assert c.as_dict() == {"total": round(c.total, 4), "import": 4.3200, "export": -1.056, "capacity": 0.0,
                           "fixed": 0.0, "gas": 1.056}


def test_quarters_outside_the_period_are_not_counted() -> None:
    qs = _day(date(2025, 6, 2))
    c = Pricing(DAY_NIGHT).cost(qs, _at(2025, 6, 2, 12), _at(2025, 6, 2, 13))
    assert c.import_ == pytest.approx(4 * (0.1 * 0.32 + 0.05 * 0.26))


def test_fixed_fees_spread_per_local_day() -> None:
    t = TariffConfig(fixed_per_year=365.0, fixed_per_month=31.0, fixed_per_day=0.5)
    p = Pricing(t)
    may_1 = p.cost([], _at(2025, 5, 1), _at(2025, 5, 2))
    assert may_1.fixed == pytest.approx(1.0 + 1.0 + 0.5)
    june = p.cost([], _at(2025, 6, 1), _at(2025, 7, 1))
    assert june.fixed == pytest.approx(30 + 31 + 15)
    year = p.cost([], _at(2024, 1, 1), _at(2025, 1, 1))  # a leap year: still exactly the year's fee
    assert year.fixed == pytest.approx(365 + 12 * 31 + 366 * 0.5)
    hour = p.cost([], _at(2025, 5, 1, 10), _at(2025, 5, 1, 11))
    assert hour.fixed == pytest.approx(2.5 / 24)
    dst = p.cost([], _at(2025, 3, 30, 0), _at(2025, 3, 30, 12))  # a 23-hour day: 12 of its 23 hours
    assert dst.fixed == pytest.approx((365 / 365 + 31 / 31 + 0.5) * 11 / 23)


def test_day_shares_of_dst_days() -> None:
    assert day_shares(_at(2025, 10, 26), _at(2025, 10, 27), BRU) == [(date(2025, 10, 26), 1.0)]
    shares = day_shares(_at(2025, 10, 25, 12), _at(2025, 10, 26, 12), BRU)
    assert shares[0] == (date(2025, 10, 25), 0.5)
    assert shares[1][0] == date(2025, 10, 26) and shares[1][1] == pytest.approx(13 / 25)
    assert day_shares(_at(2025, 1, 2), _at(2025, 1, 1), BRU) == []


def test_dynamic_prices_per_slot_with_fallback_outside_the_file() -> None:
    table = parse_prices("2025-06-02 00:00;0.10;0.02\n2025-06-02 01:00;0.50;0.07\n", BRU)
    t = replace(DAY_NIGHT, prices_file="mem", prices=table)
    qs = _day(date(2025, 6, 2), 0.1, 0.1, 0.2, 0.0)[:12]  # 00:00 .. 03:00
    c = Pricing(t).cost(qs, _at(2025, 6, 2), _at(2025, 6, 3))
    assert c.import_ == pytest.approx(4 * 0.2 * 0.10 + 4 * 0.2 * 0.50 + 4 * (0.1 * 0.32 + 0.1 * 0.26))
    assert c.export == pytest.approx(-(4 * 0.2 * 0.02 + 4 * 0.2 * 0.07 + 4 * 0.2 * 0.04))
    assert c.unpriced_kwh == pytest.approx(4 * 0.4)
    assert c.as_dict()["unpriced_kwh"] == pytest.approx(1.6)


def test_dynamic_import_only_file_keeps_register_export_prices() -> None:
    table = parse_prices("2025-06-02 00:00;0.10\n", BRU)
    t = replace(DAY_NIGHT, prices_file="mem", prices=table)
    c = Pricing(t).cost([QuarterUse(_at(2025, 6, 2), 1.0, 0.0, 0.5, 0.5)], _at(2025, 6, 2), _at(2025, 6, 3))
    assert (c.import_, c.export, c.unpriced_kwh) == (pytest.approx(0.1), pytest.approx(-0.035), 0.0)
    assert "unpriced_kwh" not in c.as_dict()


def test_project_month_from_the_daily_average_so_far() -> None:
    t = replace(DAY_NIGHT, fixed_per_month=30.0, capacity_price=60.0)
    qs = [q for d in range(10) for q in _day(date(2025, 6, 1) + timedelta(days=d))]
    now = _at(2025, 6, 11)
    pr = project(Pricing(t), qs, now, [MonthPeak(date(2025, 5, 1), 4.0)])
    day_import = 96 * (0.1 * 0.32 + 0.05 * 0.26)
    assert pr.basis_days == pytest.approx(10)
    assert pr.so_far.import_ == pytest.approx(10 * day_import)
    assert pr.so_far.fixed == pytest.approx(10.0)
    assert pr.projected.import_ == pytest.approx(30 * day_import)
    assert pr.projected.fixed == pytest.approx(30.0)
    assert pr.projected.capacity == pytest.approx(60 / 12 * (4.0 + 2.5) / 2)  # June so far: 0.6 kW -> floor
    assert pr.projected.total == pytest.approx(pr.projected.import_ + pr.projected.fixed + pr.projected.capacity)
    assert (pr.start, pr.end) == (_at(2025, 6, 1), _at(2025, 7, 1))


def test_project_year_counts_from_the_first_data() -> None:
    qs = [q for d in range(20) for q in _day(date(2025, 12, 1) + timedelta(days=d))]  # installed 1 December
    now = _at(2025, 12, 21)
    pr = project(Pricing(DAY_NIGHT), qs, now, period="year")
    day_import = 96 * (0.1 * 0.32 + 0.05 * 0.26)
    assert pr.basis_days == pytest.approx(20)
    assert pr.projected.import_ == pytest.approx(31 * day_import)
    assert pr.as_dict()["end"] == "2026-01-01T00:00:00+01:00"


def test_project_without_data_is_the_standing_charges() -> None:
    pr = project(Pricing(TariffConfig(fixed_per_day=1.0)), [], _at(2025, 2, 10, 12))
    assert pr.projected.total == pytest.approx(28.0) and pr.basis_days == 0
    with pytest.raises(ValueError, match="period"):
        project(Pricing(DAY_NIGHT), [], _at(2025, 2, 10), period="week")


def test_compare_cheapest_first() -> None:
    qs = _day(date(2025, 6, 2), 0.05, 0.2)  # mostly night use
    fixed = Pricing(TariffConfig(name="single", import_price_t1=0.30, import_price_t2=0.30))
    dn = Pricing(replace(DAY_NIGHT, name="daynight", gas_price=0.0))
    dearer = Pricing(TariffConfig(name="dear", import_price_t1=0.40, import_price_t2=0.40, fixed_per_day=1.0))
    rows = compare([dearer, fixed, dn], qs, _at(2025, 6, 2), _at(2025, 6, 3))
    assert [name for name, _c in rows] == ["daynight", "single", "dear"]
    assert rows[0][1].import_ == pytest.approx(96 * (0.05 * 0.32 + 0.2 * 0.26))


def test_compare_refuses_mixed_currencies() -> None:
    with pytest.raises(ValueError, match="different currencies"):
        compare([Pricing(TariffConfig(name="a")), Pricing(TariffConfig(name="b", currency="SEK"))], [],
                _at(2025, 6, 2), _at(2025, 6, 3))


def test_a_generator_of_quarters_is_read_once() -> None:
    qs = _day(date(2025, 6, 2))
    gen_cost = Pricing(replace(DAY_NIGHT, capacity_price=50.0)).cost(iter(qs), _at(2025, 6, 2), _at(2025, 6, 3))
    list_cost = Pricing(replace(DAY_NIGHT, capacity_price=50.0)).cost(qs, _at(2025, 6, 2), _at(2025, 6, 3))
    assert gen_cost == list_cost


# ---------------------------------------------------------------- properties

_kwh = st.floats(0, 2, allow_nan=False, allow_infinity=False)
_price = st.floats(0, 1, allow_nan=False, allow_infinity=False)
_DAYS = [date(2025, 3, 29), date(2025, 10, 25), date(2025, 1, 30), date(2024, 2, 28), date(2025, 12, 31)]


@st.composite
def tariffs(draw: st.DrawFn, name: str = "") -> TariffConfig:
    return TariffConfig(name=name, import_price_t1=draw(_price), import_price_t2=draw(_price),
                        export_price_t1=draw(_price), export_price_t2=draw(_price), gas_price=draw(_price),
                        fixed_per_year=draw(st.floats(0, 500)), fixed_per_month=draw(st.floats(0, 20)),
                        fixed_per_day=draw(st.floats(0, 1)), capacity_price=draw(st.floats(0, 80)),
                        capacity_floor_kw=draw(st.floats(0, 5)))


@st.composite
def uses(draw: st.DrawFn) -> tuple[list[QuarterUse], datetime, datetime]:
    """Quarters over 1-3 local days around DST changes, month ends, leap days and the new year."""
    d0 = draw(st.sampled_from(_DAYS))
    start = datetime.combine(d0, datetime.min.time(), BRU)
    end = datetime.combine(d0 + timedelta(days=draw(st.integers(1, 3))), datetime.min.time(), BRU)
    n = int((end.timestamp() - start.timestamp()) // 900)
    kept = draw(st.lists(st.tuples(st.integers(0, n - 1), _kwh, _kwh, _kwh, _kwh, st.floats(0, 1)),
                         max_size=40, unique_by=lambda r: r[0]))
    utc = ZoneInfo("UTC")
    qs = [QuarterUse((start.astimezone(utc) + i * Q).astimezone(BRU), a, b, c, d, g) for i, a, b, c, d, g in kept]
    return qs, start, end


@given(tariffs(), uses(), st.floats(0, 1), st.lists(st.floats(0, 9), max_size=13))
def test_cost_is_additive_over_split_periods(t: TariffConfig, use: tuple[list[QuarterUse], datetime, datetime],
                                             frac: float, peak_kws: list[float]) -> None:
    qs, a, c = use
    b = datetime.fromtimestamp(a.timestamp() + frac * (c.timestamp() - a.timestamp()), BRU)
    peaks = [MonthPeak(date(2025, 12, 1) - timedelta(days=31 * i), kw) for i, kw in enumerate(peak_kws)]
    p = Pricing(t)
    whole = p.cost(qs, a, c, peaks)
    parts = p.cost(qs, a, b, peaks) + p.cost(qs, b, c, peaks)
    for part in ("total", "import_", "export", "capacity", "fixed", "gas"):
        assert getattr(parts, part) == pytest.approx(getattr(whole, part), rel=1e-9, abs=1e-9), part


@given(tariffs(), uses(), st.integers(0, 39), _kwh, _kwh)
def test_export_never_increases_cost(t: TariffConfig, use: tuple[list[QuarterUse], datetime, datetime], k: int,
                                     more1: float, more2: float) -> None:
    qs, a, c = use
    if not qs:
        return
    q = qs[k % len(qs)]
    more = [*qs]
    more[k % len(qs)] = replace(q, export_kwh_t1=q.export_kwh_t1 + more1, export_kwh_t2=q.export_kwh_t2 + more2)
    p = Pricing(t)
    before, after = p.cost(qs, a, c), p.cost(more, a, c)
    assert after.total <= before.total + 1e-9
    assert after.export <= 0.0


@given(st.lists(tariffs(), min_size=1, max_size=5), uses())
def test_comparison_is_sorted_and_complete(ts: list[TariffConfig], use: tuple[list[QuarterUse], datetime, datetime]
                                           ) -> None:
    qs, a, c = use
    pricings = [Pricing(replace(t, name=f"t{i}")) for i, t in enumerate(ts)]
    rows = compare(pricings, qs, a, c)
    totals = [cost.total for _n, cost in rows]
    assert totals == sorted(totals)
    assert sorted(n for n, _c in rows) == sorted(p.name for p in pricings)
    for name, cost in rows:
        assert cost == next(p for p in pricings if p.name == name).cost(qs, a, c)


def test_cost_default_is_zero() -> None:
    assert Cost().as_dict() == {"total": 0.0, "import": 0.0, "export": 0.0, "capacity": 0.0, "fixed": 0.0, "gas": 0.0}



def test_period_sums_with_derive_peaks_off_take_peaks_only_from_peaks() -> None:
    t = TariffConfig(capacity_price=60.0)
    day_sum = [QuarterUse(_at(2025, 6, 2), 12.0, 6.0, 0, 0)]  # a day's kWh in one row: not a quarter
    with_sum = Pricing(t).cost(day_sum, _at(2025, 6, 2), _at(2025, 6, 3), [MonthPeak(date(2025, 5, 1), 3.0)])
    assert with_sum.capacity == pytest.approx(60 / 12 * (72.0 + 3.0) / 2 / 30)  # the row read as a 72 kW quarter
    right = Pricing(t).cost(day_sum, _at(2025, 6, 2), _at(2025, 6, 3), [MonthPeak(date(2025, 5, 1), 3.0)],
                            derive_peaks=False)
    assert right.capacity == pytest.approx(60 / 12 * 3.0 / 30)


def test_projections_month_and_year() -> None:
    qs = [q for d in range(3) for q in _day(date(2025, 6, 1) + timedelta(days=d))]
    out = projections(Pricing(DAY_NIGHT), qs, _at(2025, 6, 4))
    assert set(out) == {"method", "month", "year"}
    month, year = out["month"], out["year"]
    assert isinstance(month, dict) and isinstance(year, dict)
    assert month["projected"]["import"] == pytest.approx(30 * 96 * (0.1 * 0.32 + 0.05 * 0.26), abs=1e-3)
    assert year["end"] == "2026-01-01T00:00:00+01:00" and year["basis_days"] == 3.0


@given(tariffs(), uses(), st.booleans(), st.lists(st.floats(0, 9), max_size=13))
def test_cost_rows_equals_cost(t: TariffConfig, use: tuple[list[QuarterUse], datetime, datetime], dynamic: bool,
                               peak_kws: list[float]) -> None:
    qs, a, c = use
    if dynamic:  # hourly prices over the first day only: the rest is priced at the registers
        lines = [f"{(a + timedelta(hours=h)).astimezone(ZoneInfo('UTC')).isoformat()};0.{h + 10};0.0{h % 10}"
                 for h in range(24)]
        t = replace(t, prices_file="mem", prices=parse_prices("\n".join(lines), BRU))
    peaks = [MonthPeak(date(2025, 12, 1) - timedelta(days=31 * i), kw) for i, kw in enumerate(peak_kws)]
    rows = [(q.start.timestamp(), q.import_kwh_t1, q.import_kwh_t2, q.export_kwh_t1, q.export_kwh_t2, q.gas_m3)
            for q in reversed(qs)]
    p = Pricing(t)
    by_rows = p.cost_rows(rows, a, c, peaks)
    by_quarters = p.cost(qs, a, c, peaks, derive_peaks=False)
    assert by_rows.as_dict() == pytest.approx(by_quarters.as_dict(), abs=1e-6)
