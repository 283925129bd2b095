"""The Flemish capacity tariff against worked examples, and its floor (hypothesis)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.tariffs.capacity import add_months, mean_peak_kw, merge_peaks, month_charge, peaks_from_quarters
from app.tariffs.cost import MonthPeak, Pricing, QuarterUse
from app.tariffs.settings import TariffConfig

BRU = ZoneInfo("Europe/Brussels")
PRICE = 53.0  # per kW per year
FLOOR = 2.5


def _months(last: date, kws: list[float]) -> dict[date, float]:
    """kws for the months ending with `last` (oldest first)."""
    return {add_months(last, i - len(kws) + 1): kw for i, kw in enumerate(kws)}


def test_a_month_below_the_floor_is_billed_at_the_floor() -> None:
    peaks = {date(2025, 3, 1): 1.8}
    assert mean_peak_kw(date(2025, 3, 1), peaks, FLOOR) == 2.5
    assert month_charge(date(2025, 3, 1), peaks, PRICE, FLOOR) == pytest.approx(53 / 12 * 2.5)  # 11.04


def test_twelve_months_mean_of_floored_peaks_and_the_thirteenth_drops_out() -> None:
    kws = [9.0,  # 13 months back: outside the window
           3.0, 2.0, 4.2, 5.0, 3.6, 2.8, 2.5, 1.2, 3.3, 4.0, 6.1, 3.5]
    peaks = _months(date(2025, 12, 1), kws)
    # floored: 3.0 2.5 4.2 5.0 3.6 2.8 2.5 2.5 3.3 4.0 6.1 3.5 -> 43.0 / 12
    assert mean_peak_kw(date(2025, 12, 1), peaks, FLOOR) == pytest.approx(43.0 / 12)
    assert month_charge(date(2025, 12, 1), peaks, PRICE, FLOOR) == pytest.approx(53 * 43 / 144)  # 15.83


def test_fewer_months_mean_of_those_there() -> None:
    peaks = _months(date(2025, 3, 1), [4.0, 2.0, 3.0])  # floored 4.0 2.5 3.0
    assert mean_peak_kw(date(2025, 3, 1), peaks, FLOOR) == pytest.approx(9.5 / 3)
    assert month_charge(date(2025, 3, 1), peaks, PRICE, FLOOR) == pytest.approx(53 / 12 * 9.5 / 3)  # 13.99
    assert mean_peak_kw(date(2024, 1, 1), {}, FLOOR) == FLOOR  # nothing known: the minimum billed


def test_no_capacity_price_no_charge() -> None:
    assert month_charge(date(2025, 1, 1), {date(2025, 1, 1): 8.0}, 0.0, FLOOR) == 0.0


def test_peak_from_quarters_is_the_highest_quarter_average() -> None:
    t0 = datetime(2025, 1, 31, 23, 0, tzinfo=BRU)
    qs = [QuarterUse(t0, 0.5, 0.0, 0, 0), QuarterUse(t0 + timedelta(minutes=15), 0.2, 0.9, 0, 0),
          QuarterUse(t0 + timedelta(hours=1), 0.1, 0.0, 0, 0)]  # 1 Feb 00:00 local: another month
    peaks = peaks_from_quarters(qs)
    assert peaks[date(2025, 1, 1)] == MonthPeak(date(2025, 1, 1), pytest.approx(4.4), qs[1].start)
    assert peaks[date(2025, 2, 1)].kw == pytest.approx(0.4)


def test_the_meters_own_peak_wins_over_the_quarters() -> None:
    own = {date(2025, 1, 1): MonthPeak(date(2025, 1, 1), 4.4), date(2025, 2, 1): MonthPeak(date(2025, 2, 1), 3.0)}
    merged = merge_peaks([MonthPeak(date(2025, 1, 1), 5.1), MonthPeak(date(2024, 12, 1), 3.3)], own)
    assert merged == {date(2025, 1, 1): 5.1, date(2025, 2, 1): 3.0, date(2024, 12, 1): 3.3}


def test_cost_spreads_the_month_charge_over_its_days() -> None:
    p = Pricing(TariffConfig(capacity_price=PRICE, capacity_floor_kw=FLOOR))
    peaks = [MonthPeak(m, kw) for m, kw in _months(date(2025, 2, 1), [4.0, 2.0, 3.0]).items()]
    feb = datetime(2025, 2, 1, tzinfo=BRU)
    whole = p.cost([], feb, datetime(2025, 3, 1, tzinfo=BRU), peaks)
    assert whole.capacity == pytest.approx(53 / 12 * 9.5 / 3)
    assert whole.total == pytest.approx(whole.capacity)
    day = p.cost([], feb, feb + timedelta(days=1), peaks)
    assert day.capacity == pytest.approx(whole.capacity / 28)


def test_own_quarters_give_the_peak_where_the_meter_has_none() -> None:
    p = Pricing(TariffConfig(capacity_price=PRICE))
    t0 = datetime(2025, 5, 10, 18, 0, tzinfo=BRU)
    qs = [QuarterUse(t0, 1.5, 0.0, 0, 0)]  # 6 kW for a quarter
    c = p.cost(qs, datetime(2025, 5, 1, tzinfo=BRU), datetime(2025, 6, 1, tzinfo=BRU),
               [MonthPeak(date(2025, 4, 1), 2.0)])  # April: floored to 2.5
    assert c.capacity == pytest.approx(53 / 12 * (6.0 + 2.5) / 2)


@given(st.dictionaries(st.integers(-30, 0), st.floats(0, 50, allow_nan=False)), st.floats(0, 10, allow_nan=False),
       st.floats(0, 200, allow_nan=False))
def test_floor_respected(offsets: dict[int, float], floor: float, price: float) -> None:
    month = date(2025, 6, 1)
    peaks = {add_months(month, k): kw for k, kw in offsets.items()}
    mean = mean_peak_kw(month, peaks, floor)
    assert mean >= floor - 1e-9
    assert mean <= max([floor, *peaks.values()]) + 1e-9
    assert month_charge(month, peaks, price, floor) >= price / 12 * floor - 1e-9
