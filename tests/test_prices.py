"""Dynamic prices file: formats read, every bad line named, quarter lookup, a round trip (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.errors import ConfigError
from app.tariffs.prices import PriceTable, format_prices, load_prices, parse_prices

BRU = ZoneInfo("Europe/Brussels")
AMS = ZoneInfo("Europe/Amsterdam")


def _err(text: str, currency: str = "EUR") -> str:
    with pytest.raises(ConfigError) as exc:
        parse_prices(text, BRU, currency, "prices.csv")
    return str(exc.value)


def test_hourly_iso_with_header_comments_and_export_column() -> None:
    t = parse_prices("# day-ahead, all-in\n\nstart;import EUR/kWh;export EUR/kWh\n"
                     "2025-06-01T00:00:00+02:00;0.25;0.05\n"
                     "2025-06-01T01:00:00+02:00 ; 0.20 ; 0.04   # night\n"
                     "2025-06-01T02:00:00+02:00;-0.01;-0.02\n", BRU)
    assert t.import_prices == (0.25, 0.20, -0.01)
    assert t.export_prices == (0.05, 0.04, -0.02)
    start = datetime(2025, 6, 1, tzinfo=BRU)
    assert t.end_s == int((start + timedelta(hours=3)).timestamp())  # the last slot is as long as the others
    assert t.import_price(start + timedelta(minutes=45)) == 0.25
    assert t.import_price(start + timedelta(hours=1, minutes=15)) == 0.20
    assert t.export_price(start + timedelta(hours=2, minutes=45)) == -0.02
    assert t.import_price(start + timedelta(hours=3)) is None
    assert t.import_price(start - timedelta(minutes=15)) is None


def test_local_times_decimal_comma_and_quarter_slots() -> None:
    t = parse_prices("2025-06-01 00:00;0,30\n2025-06-01 00:15;0,31\n2025-06-01 00:30;0,32\n", AMS)
    assert t.export_prices is None
    assert t.starts[0] == int(datetime(2025, 6, 1, tzinfo=AMS).timestamp())
    assert t.end_s - t.starts[-1] == 900
    assert t.import_prices == (0.30, 0.31, 0.32)


def test_comma_separated_and_utc_z_times() -> None:
    t = parse_prices("time,price\n2025-01-01T00:00Z,0.1\n2025-01-01T01:00Z,0.2\n", BRU)
    assert t.import_prices == (0.1, 0.2)
    assert t.starts[0] == int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())


def test_mwh_header_is_divided_and_cents_header_scaled() -> None:
    assert parse_prices("start;price (EUR/MWh)\n2025-01-01 00:00;125.5\n", BRU).import_prices == (0.1255,)
    assert parse_prices("start;price ct/kWh\n2025-01-01 00:00;25\n", BRU).import_prices == (0.25,)


def test_values_may_carry_their_currency() -> None:
    t = parse_prices("2025-01-01 00:00;€0.25;0.05 EUR\n", BRU)
    assert t.import_prices == (0.25,) and t.export_prices == (0.05,)


def test_hour_to_quarter_switch_on_a_day_boundary() -> None:
    lines = ["2025-09-30 22:00;0.1", "2025-09-30 23:00;0.1"]
    lines += [f"2025-10-01 00:{m:02d};0.2" for m in (0, 15, 30, 45)]
    t = parse_prices("\n".join(lines), BRU)
    assert len(t.starts) == 6 and t.end_s - t.starts[-1] == 900


def test_dst_days_in_local_time() -> None:
    spring = "\n".join(f"2025-03-30 {h:02d}:00;0.{h + 10}" for h in (0, 1, 3, 4))  # 02:00 does not exist
    t = parse_prices(spring, BRU)
    assert [b - a for a, b in zip(t.starts, t.starts[1:], strict=False)] == [3600] * 3
    autumn = "\n".join(f"2025-10-26 {h:02d}:00;0.{i + 10}" for i, h in enumerate((0, 1, 2, 2, 3)))
    t = parse_prices(autumn, BRU)  # the repeated 02:00 is the second 02:00
    assert [b - a for a, b in zip(t.starts, t.starts[1:], strict=False)] == [3600] * 4
    assert "does not exist" in _err("2025-03-30 02:00;0.1\n")


def test_gap_names_file_line_and_missing_time() -> None:
    msg = _err("2025-06-01 00:00;0.1\n2025-06-01 01:00;0.1\n2025-06-01 03:00;0.1\n")
    assert msg.startswith("prices.csv line 3: gap: no price from 2025-06-01T02:00+02:00 to 2025-06-01T03:00+02:00")


def test_missing_quarter_in_a_quarter_day_is_a_gap() -> None:
    msg = _err("2025-06-01 00:00;0.1\n2025-06-01 00:15;0.1\n2025-06-01 01:15;0.1\n2025-06-01 01:30;0.1\n")
    assert msg.startswith("prices.csv line 3: gap: no price from 2025-06-01T00:30+02:00 to 2025-06-01T01:15+02:00")


def test_duplicate_slot_names_both_lines() -> None:
    msg = _err("# c\n2025-06-01 00:00;0.1\n2025-06-01 01:00;0.1\n2025-06-01T01:00:00+02:00;0.2\n")
    assert msg == "prices.csv line 4: duplicate slot 2025-06-01T01:00+02:00, also on line 3"


def test_out_of_order_slot() -> None:
    assert _err("2025-06-01 01:00;0.1\n2025-06-01 00:00;0.1\n").startswith("prices.csv line 2: slot 2025-06-01T00:00")


@pytest.mark.parametrize("value", ["abc", "", "0.1.2", "nan", "inf", "1e999"])
def test_bad_number_is_an_error_never_zero(value: str) -> None:
    msg = _err(f"2025-06-01 00:00;0.1\n2025-06-01 01:00;{value}\n")
    assert msg.startswith("prices.csv line 2: ") and ("not a number" in msg or "finite" in msg or "fields" in msg)


def test_different_currency_in_header_or_value() -> None:
    assert _err("start;price USD/kWh\n2025-06-01 00:00;0.1\n") == (
        "prices.csv line 1: prices in USD/kWh, [tariff] currency is EUR")
    assert _err("2025-06-01 00:00;0.1\n2025-06-01 01:00;0.1 GBP\n") == (
        "prices.csv line 2: price '0.1 GBP' is in GBP, [tariff] currency is EUR")
    assert parse_prices("start;price SEK/kWh\n2025-06-01 00:00;1.1\n", BRU, "SEK").import_prices == (1.1,)


def test_a_bad_first_time_is_not_taken_for_a_header() -> None:
    assert _err("2025-13-01 00:00;0.1\n2025-06-01 01:00;0.1\n").startswith(
        "prices.csv line 1: '2025-13-01 00:00' is not a time")


def test_other_bad_lines() -> None:
    assert "not a time" in _err("2025-06-01 00:00;0.1\nyesterday;0.1\n")
    assert "2 fields where the lines before have 3" in _err("2025-06-01 00:00;0.1;0.0\n2025-06-01 01:00;0.1\n")
    assert "not the start of a quarter-hour" in _err("2025-06-01 00:10;0.1\n")
    assert "does not start on the hour" in _err("2025-06-01 00:15;0.1\n2025-06-01 01:15;0.1\n")
    assert _err("# only a comment\n").startswith("prices.csv: no prices (expected lines 'start time ; import price")


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "prices.csv"
    path.write_text("2025-06-01 00:00;0.1\n2025-06-01 02:00;0.1\n")
    with pytest.raises(ConfigError, match=f"^{path} line 2: gap"):
        load_prices(path, BRU)
    with pytest.raises(ConfigError, match="file not found"):
        load_prices(tmp_path / "nope.csv", BRU)


@st.composite
def tables(draw: st.DrawFn) -> PriceTable:
    """Contiguous tables of whole days, hourly or quarter-hour per day, around both DST changes."""
    day0 = draw(st.sampled_from([datetime(2025, 3, 29), datetime(2025, 10, 25), datetime(2024, 2, 28)]))
    ndays = draw(st.integers(1, 3))
    starts: list[int] = []
    for i in range(ndays):
        d0 = int((day0 + timedelta(days=i)).replace(tzinfo=BRU).timestamp())
        d1 = int((day0 + timedelta(days=i + 1)).replace(tzinfo=BRU).timestamp())
        step = draw(st.sampled_from([900, 3600]))
        starts += range(d0, d1, step)
    prices = st.floats(-1, 5, allow_nan=False, allow_infinity=False)
    n = len(starts)
    imp = tuple(draw(st.lists(prices, min_size=n, max_size=n)))
    exp = draw(st.none() | st.lists(prices, min_size=n, max_size=n).map(tuple))
    last = starts[-1] - starts[-2] if n > 1 else 3600
    return PriceTable("<t>", tuple(starts), starts[-1] + last, imp, exp)


@given(tables(), st.sampled_from([BRU, UTC, ZoneInfo("America/New_York")]))
def test_round_trip(table: PriceTable, tz: ZoneInfo) -> None:
    text = format_prices(table, tz)
    assert parse_prices(text, BRU) == table
