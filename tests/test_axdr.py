"""A-XDR decoder: every type meters use, and bounds checks on lying or truncated input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from app.errors import ParseError
from app.protocols import axdr
from app.protocols.axdr import Array, BitString, DateTime, Enum, Structure


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("00", None),
        ("0301", True),
        ("0300", False),
        ("05FFFFFFFE", -2),
        ("0600000102", 258),
        ("0F80", -128),
        ("10FF38", -200),
        ("11FF", 255),
        ("12FFFF", 65535),
        ("14FFFFFFFFFFFFFFFF", -1),
        ("150000000100000000", 1 << 32),
        ("0D12", 0x12),
        ("173FC00000", 1.5),
        ("18BFF8000000000000", -1.5),
        ("0903010203", b"\x01\x02\x03"),
        ("0A03414243", "ABC"),
        ("0C04C3A46F6B", "äok"),
        ("FF", None),
    ],
)
def test_simple_types(data: str, expected: object) -> None:
    assert axdr.decode_all(bytes.fromhex(data)) == expected


def test_enum_is_distinct_from_unsigned() -> None:
    value = axdr.decode_all(bytes.fromhex("161B"))
    assert isinstance(value, Enum) and value == 27


def test_bit_string() -> None:
    value = axdr.decode_all(bytes.fromhex("040AC040"))
    assert value == BitString(b"\xc0\x40", 10)
    assert str(value) == "1100000001"


def test_structure_and_array_nesting() -> None:
    value = axdr.decode_all(bytes.fromhex("0202 0103 110111021103 0F FE".replace(" ", "")))
    assert type(value) is Structure
    assert type(value[0]) is Array and value[0] == (1, 2, 3)
    assert value[1] == -2


def test_long_length_forms() -> None:
    payload = bytes(200)
    assert axdr.decode_all(b"\x09\x81\xc8" + payload) == payload
    assert axdr.decode_all(b"\x09\x82\x00\xc8" + payload) == payload


def test_date_time_type_and_octet_string() -> None:
    raw = bytes.fromhex("07E5091B01092F0F00FF8880")
    value = axdr.decode_all(b"\x19" + raw)
    assert isinstance(value, DateTime)
    assert value.to_datetime(None) == datetime(2021, 9, 27, 9, 47, 15, tzinfo=timezone(timedelta(hours=2)))
    assert value.isoformat() == "2021-09-27T09:47:15+02:00"
    assert value.status == 0x80


def test_datetime_without_deviation_uses_tz() -> None:
    dt = axdr.parse_datetime(bytes.fromhex("07EA05040110271400800000"))
    assert dt is not None and dt.deviation_min is None
    assert dt.isoformat() == "2026-05-04T16:39:20"
    aware = dt.to_datetime(UTC)
    assert aware is not None and aware.tzinfo is UTC


def test_datetime_rejects_impossible_fields() -> None:
    assert axdr.parse_datetime(b"181220000009") is None  # a 12-digit meter number
    assert axdr.parse_datetime(bytes.fromhex("07E50D01")) is None  # wrong size


@pytest.mark.parametrize(
    "data",
    [
        "",  # nothing
        "06000001",  # double-long-unsigned cut off
        "0905010203",  # octet-string shorter than its length
        "0984FFFFFFFF00",  # lying 4-byte length: no allocation, a ParseError
        "0184FFFFFFFF11",  # array of 4 billion elements in 2 bytes
        "02051101",  # structure of 5 with 1 element
        "0985",  # length prefix with 5 length bytes
        "0980",  # indefinite length
        "13",  # compact-array: not supported
        "07",  # unknown tag
        "0C02C328",  # invalid UTF-8
        "19000102",  # date-time cut off
    ],
)
def test_bad_input_raises_parse_error(data: str) -> None:
    with pytest.raises(ParseError):
        axdr.decode_all(bytes.fromhex(data))


def test_trailing_bytes_rejected_by_decode_all() -> None:
    with pytest.raises(ParseError, match="1 bytes left"):
        axdr.decode_all(bytes.fromhex("110100"))
    assert axdr.decode(bytes.fromhex("110100"), 0) == (1, 2)


def test_deep_nesting_is_a_parse_error_not_a_recursion_error() -> None:
    data = b"\x02\x01" * 1000 + b"\x00"
    with pytest.raises(ParseError, match="nesting"):
        axdr.decode_all(data)


def test_truncated_is_a_parse_error_subclass() -> None:
    with pytest.raises(axdr.Truncated):
        axdr.decode_all(bytes.fromhex("0601"))
    assert issubclass(axdr.Truncated, ParseError)
