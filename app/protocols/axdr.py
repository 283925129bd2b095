"""Bounds-checked A-XDR decoder for the DLMS `Data` CHOICE (IEC 62056-6-2 / Green Book).

    tag  type                   encoding after the tag
    00   null-data              -
    01   array                  count (BER length), then count elements
    02   structure              count (BER length), then count elements
    03   boolean                1 byte
    04   bit-string             bit count (BER length), ceil(n/8) bytes
    05   double-long            int32 big-endian
    06   double-long-unsigned   uint32
    09   octet-string           length, bytes           (date-time: 12 bytes)
    0A   visible-string         length, ASCII
    0C   utf8-string            length, UTF-8
    0D   bcd                    1 byte
    0F   integer                int8
    10   long                   int16
    11   unsigned               uint8
    12   long-unsigned          uint16
    14   long64                 int64
    15   long64-unsigned        uint64
    16   enum                   uint8
    17   float32                IEEE 754 single
    18   float64                IEEE 754 double
    19   date-time              12 bytes
    1A   date                   5 bytes
    1B   time                   4 bytes
    FF   dont-care              -

BER length: 0x00..0x7F is the length; 0x81..0x84 give the number of length bytes that follow.
Every length and count is checked against the bytes that remain before anything is allocated,
and nesting is limited, so a truncated or lying frame raises `ParseError` and nothing else.
Values decode to: None, int, bool, float, bytes (octet-string), str (visible/utf8 string),
`BitString`, `Enum`, `DateTime`, `Structure` (tuple) and `Array` (tuple).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from app.errors import ParseError

MAX_DEPTH = 16

_INT = {
    0x05: struct.Struct(">i"),
    0x06: struct.Struct(">I"),
    0x0F: struct.Struct(">b"),
    0x10: struct.Struct(">h"),
    0x11: struct.Struct(">B"),
    0x12: struct.Struct(">H"),
    0x14: struct.Struct(">q"),
    0x15: struct.Struct(">Q"),
    0x17: struct.Struct(">f"),
    0x18: struct.Struct(">d"),
}
_UNPACK = {tag: (s.unpack_from, s.size) for tag, s in _INT.items()}


class Truncated(ParseError):
    """The data ends before the value does (more bytes may still arrive on a stream)."""


class Structure(tuple[object, ...]):
    """A DLMS structure: a tuple of its elements."""

    __slots__ = ()


class Array(tuple[object, ...]):
    """A DLMS array: a tuple of its elements."""

    __slots__ = ()


class Enum(int):
    """A DLMS enum value (kept distinct from unsigned so units can be recognised)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class BitString:
    """A DLMS bit-string: `bits` significant bits of `data`, most significant bit first."""

    data: bytes
    bits: int

    def __str__(self) -> str:
        return "".join("1" if self.data[i >> 3] & (0x80 >> (i & 7)) else "0" for i in range(self.bits))


@dataclass(frozen=True, slots=True)
class DateTime:
    """A COSEM date-time (12 bytes) with its deviation and clock status.

    `deviation_min` is local time minus UTC in minutes (None when not specified); the
    Blue Book defines it the other way round, the sign is flipped here.
    """

    raw: bytes
    year: int | None
    month: int | None
    day: int | None
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None
    deviation_min: int | None
    status: int | None

    def to_datetime(self, tz: tzinfo | None) -> datetime | None:
        """An aware datetime (deviation wins over `tz`), or None if a date or time field is unspecified."""
        if None in (self.year, self.month, self.day, self.hour, self.minute):
            return None
        try:
            naive = datetime(
                self.year, self.month, self.day, self.hour, self.minute,  # type: ignore[arg-type]
                self.second or 0, (self.hundredths or 0) * 10_000,
            )
        except ValueError:
            return None
        if self.deviation_min is not None:
            return naive.replace(tzinfo=timezone(timedelta(minutes=self.deviation_min)))
        if tz is not None:
            return naive.replace(tzinfo=tz)
        return naive

    def isoformat(self) -> str:
        """ISO 8601 text; with offset only when the meter sent a deviation."""
        dt = self.to_datetime(None)
        if dt is None:
            return self.raw.hex().upper()
        return dt.isoformat()


def parse_datetime(raw: bytes) -> DateTime | None:
    """A `DateTime` from 12 bytes, or None if they cannot be one (wrong size, month 13, ...)."""
    if len(raw) != 12:
        return None
    year = (raw[0] << 8) | raw[1]
    month, day, _dow, hour, minute, second, hundredths = raw[2:9]
    dev = (raw[9] << 8) | raw[10]
    status = raw[11]
    if year == 0xFFFF:
        y: int | None = None
    elif 1970 <= year <= 2200:
        y = year
    else:
        return None
    m = None if month == 0xFF else month
    d = None if day == 0xFF else day
    if (m is not None and not 1 <= m <= 12) or (d is not None and not 1 <= d <= 31):
        return None
    h = None if hour == 0xFF else hour
    mi = None if minute == 0xFF else minute
    s = None if second == 0xFF else second
    hs = None if hundredths == 0xFF else hundredths
    if (h is not None and h > 23) or (mi is not None and mi > 59) or (s is not None and s > 60):
        return None
    if hs is not None and hs > 99:
        hs = None
    if dev == 0x8000:
        deviation: int | None = None
    else:
        signed = dev - 0x10000 if dev & 0x8000 else dev
        deviation = -signed if -720 <= signed <= 840 else None
    return DateTime(raw, y, m, d, h, mi, s, hs, deviation, None if status == 0xFF else status)


def read_length(buf: bytes, pos: int) -> tuple[int, int]:
    """(length, new position) of a BER length at `pos`."""
    end = len(buf)
    if pos >= end:
        raise Truncated(f"length expected at offset {pos}, data ends at {end}")
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if n == 0 or n > 4:
        raise ParseError(f"invalid length prefix 0x{first:02X} at offset {pos}")
    if pos + 1 + n > end:
        raise Truncated(f"{n}-byte length at offset {pos} runs past the end ({end})")
    return int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


def decode(buf: bytes, pos: int = 0) -> tuple[object, int]:
    """Decode one Data value at `pos`; return (value, position after it)."""
    return _decode(buf, pos, 0)


def decode_all(buf: bytes) -> object:
    """Decode one Data value that must fill `buf` exactly."""
    value, end = _decode(buf, 0, 0)
    if end != len(buf):
        raise ParseError(f"{len(buf) - end} bytes left after the value (ends at {end} of {len(buf)})")
    return value


def _decode(buf: bytes, pos: int, depth: int) -> tuple[object, int]:
    end = len(buf)
    if pos >= end:
        raise Truncated(f"value expected at offset {pos}, data ends at {end}")
    tag = buf[pos]
    pos += 1
    fixed = _UNPACK.get(tag)
    if fixed is not None:
        unpack, size = fixed
        if pos + size > end:
            raise Truncated(f"type 0x{tag:02X} needs {size} bytes at offset {pos}, {end - pos} left")
        return unpack(buf, pos)[0], pos + size
    if tag == 0x02 or tag == 0x01:
        if depth >= MAX_DEPTH:
            raise ParseError(f"nesting deeper than {MAX_DEPTH} at offset {pos - 1}")
        if pos < end and buf[pos] < 0x80:
            count = buf[pos]
            pos += 1
        else:
            count, pos = read_length(buf, pos)
        if count > end - pos:
            raise Truncated(f"{count} elements announced at offset {pos}, only {end - pos} bytes left")
        items: list[object] = []
        append = items.append
        depth += 1
        for _ in range(count):
            item, pos = _decode(buf, pos, depth)
            append(item)
        return (Structure(items) if tag == 0x02 else Array(items)), pos
    if tag == 0x09 or tag == 0x0A or tag == 0x0C:
        if pos < end and buf[pos] < 0x80:
            n = buf[pos]
            pos += 1
        else:
            n, pos = read_length(buf, pos)
        if pos + n > end:
            raise Truncated(f"string of {n} bytes at offset {pos}, only {end - pos} left")
        raw = bytes(buf[pos : pos + n])
        if tag == 0x09:
            return raw, pos + n
        try:
            return raw.decode("ascii" if tag == 0x0A else "utf-8"), pos + n
        except UnicodeDecodeError:
            if tag == 0x0A:
                return raw.decode("latin-1"), pos + n
            raise ParseError(f"invalid UTF-8 string at offset {pos}") from None
    if tag == 0x00 or tag == 0xFF:
        return None, pos
    if tag == 0x03 or tag == 0x16 or tag == 0x0D:
        if pos >= end:
            raise Truncated(f"type 0x{tag:02X} needs 1 byte at offset {pos}")
        b = buf[pos]
        if tag == 0x03:
            return b != 0, pos + 1
        if tag == 0x16:
            return Enum(b), pos + 1
        return b, pos + 1
    if tag == 0x04:
        bits, pos = read_length(buf, pos)
        n = (bits + 7) >> 3
        if pos + n > end:
            raise Truncated(f"bit-string of {bits} bits at offset {pos}, only {end - pos} bytes left")
        return BitString(bytes(buf[pos : pos + n]), bits), pos + n
    if tag == 0x19 or tag == 0x1A or tag == 0x1B:
        size = 12 if tag == 0x19 else 5 if tag == 0x1A else 4
        if pos + size > end:
            raise Truncated(f"type 0x{tag:02X} needs {size} bytes at offset {pos}, {end - pos} left")
        raw = bytes(buf[pos : pos + size])
        if tag == 0x19:
            dt = parse_datetime(raw)
            return (dt if dt is not None else raw), pos + size
        return raw, pos + size
    raise ParseError(f"unsupported A-XDR type 0x{tag:02X} at offset {pos - 1}")
