"""DSMR / Fluvius / D0 telegram parser: telegram bytes -> Reading.

    1-0:1.8.1(000301.548*kWh)                     value with unit
    0-0:1.0.0(231102121548W)                      timestamp YYMMDDhhmmss + W (winter) / S (summer)
    1-0:1.6.0(231102114500W)(03.064*kW)           timestamped value (max demand, M-Bus channels)
    0-1:24.2.3(231102121002W)(00092.287*m3)       M-Bus channel value with its own time
    0-2:24.3.0(211122210000)(00)(60)(1)(0-2:24.2.1)(m3)
    (13368.864)                                   DSMR 2.2 gas: the value on the next line
    0-0:96.1.1(3153414733313030373231333236)      hex-encoded text
    1-0:99.97.0(1)(0-0:96.7.19)(...)(...*s)       logs: every group kept in Value.groups

Text is decoded as latin-1, so no byte sequence raises; unknown OBIS lines are kept.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from app.errors import ChecksumError, ParseError
from app.framing import Frame
from app.framing.dsmr import check_crc
from app.obis import named_fields, normalize
from app.records import Reading, Value, fixed_offset, make_value

# An OBIS reference may carry its fifth group as `*F` or `.F` (1-0:31.7.0.255, sent by some meters).
_LINE_RE = re.compile(r"^(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(?:[*.]\d{1,3})?)((?:\([^()\r\n]*\))+)\s*$")
_LINE_ITER_RE = re.compile(
    r"^(\d{1,3}-\d{1,3}:\d{1,3}\.\d{1,3}\.\d{1,3}(?:[*.]\d{1,3})?)((?:\([^()\r\n]*\))+)[ \t\r]*$", re.M
)
_GROUP_RE = re.compile(r"\(([^()]*)\)")
_TS_RE = re.compile(r"^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})([WSws]?)$")
# A number with its unit but no `*` (`001247.747kWh`, some Kamstrup and Kaifa meters).
_NUM_UNIT_RE = re.compile(r"^([-+]?\d+(?:\.\d+)?)\s?([A-Za-z][A-Za-z0-9/]{0,7})$")
_HEX_TEXT_RE = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
# C.D prefixes whose values are identifiers or text, never numbers (leading zeros matter).
_TEXT_CD = ("96.1.", "96.13.", "42.0.", "0.0.", "96.5.", "0.2.")
_TS_REFS = frozenset({"0-0:1.0.0"})
_METER_ID_REFS = ("0-0:96.1.1", "0-0:96.1.0", "0-0:42.0.0", "0-0:96.1.255", "1-0:0.0.0", "1-0:96.1.0")


_TS_CACHE: dict[tuple[str, ZoneInfo], datetime | None] = {}


def parse_timestamp(text: str, tz: ZoneInfo) -> datetime | None:
    """`YYMMDDhhmmssX` (X = W standard, S summer, absent = local) -> aware datetime, or None.

    Cached: a telegram's M-Bus and max-demand timestamps repeat for minutes."""
    key = (text, tz)
    try:
        return _TS_CACHE[key]
    except KeyError:
        pass
    if len(_TS_CACHE) >= 256:
        _TS_CACHE.clear()
    result = _TS_CACHE[key] = _parse_timestamp(text, tz)
    return result


def _parse_timestamp(text: str, tz: ZoneInfo) -> datetime | None:
    m = _TS_RE.match(text)
    if m is None:
        return None
    yy, mo, dd, hh, mi, ss, flag = m.groups()
    if (yy, mo, dd) == ("70", "01", "01"):
        return None  # the epoch an empty M-Bus slot reports (0-1:24.2.1(700101010000W)(00000000))
    flag = flag.upper()
    try:
        naive = datetime(2000 + int(yy), int(mo), int(dd), int(hh), int(mi), int(ss))
    except ValueError:
        return None
    if not flag:
        return fixed_offset(naive.replace(tzinfo=tz))
    for fold in (0, 1):
        local = naive.replace(tzinfo=tz, fold=fold)
        if bool(local.dst()) == (flag == "S"):
            return fixed_offset(local)
    # The flag contradicts the zone's rule at this local time: trust the flag.
    std = naive.replace(tzinfo=tz).utcoffset() or timedelta(0)
    dst = naive.replace(tzinfo=tz).dst() or timedelta(0)
    offset = std - dst + (timedelta(hours=1) if flag == "S" else timedelta(0))
    return naive.replace(tzinfo=timezone(offset))


def _number(text: str) -> float | int | None:
    """A plain decimal number (digits, optional sign and point), else None (kept as text)."""
    if not text.isascii() or len(text) > 40:  # no meter sends 40 digits; int() refuses > 4300
        return None
    if text.isdigit():
        return int(text)
    body = text[1:] if text[:1] in ("-", "+") else text
    whole, dot, frac = body.partition(".")
    if whole.isdigit() and (not dot or frac.isdigit()):
        return float(text) if dot else int(text)
    return None


def _num_unit(text: str) -> tuple[float | int, str] | None:
    """`001247.747kWh` -> (1247.747, "kWh"): a number and a unit written without `*`, else None."""
    m = _NUM_UNIT_RE.match(text)
    if m is None:
        return None
    num = _number(m.group(1))
    return None if num is None else (num, m.group(2))


def _numeric(text: str, unit: str | None) -> Value:
    """A value that should be a number: number and unit, or the text kept as sent."""
    num = _number(text)
    if num is None and unit is None:
        split = _num_unit(text)
        if split is not None:
            return make_value(*split)
    return make_value(text if num is None else num, unit)


@functools.lru_cache(maxsize=64)  # equipment ids repeat in every telegram
def _hex_text(raw: str) -> str | None:
    if not _HEX_TEXT_RE.match(raw):
        return None
    try:
        text = bytes.fromhex(raw).decode("ascii")
    except UnicodeDecodeError:
        return None
    return text.strip() if text.isprintable() else None


def _split(group: str) -> tuple[str, str | None]:
    text, star, unit = group.partition("*")
    return (text, unit) if star else (text, None)


_REF_CACHE: dict[str, tuple[str, str, bool]] = {}
# Per time zone: raw reference -> (bracketed content, reference, Value) of the last telegram. Most lines
# (ids, counters, texts, M-Bus values) repeat from one telegram to the next; their Values are reused.
_LAST_LINES: dict[ZoneInfo, dict[str, tuple[str, str, Value]]] = {}


def _ref(raw: str) -> tuple[str, str, bool]:
    """(normalized OBIS reference, its C.D.E part, whether a single value is a plain number),
    cached: the same references come in every telegram."""
    hit = _REF_CACHE.get(raw)
    if hit is None:
        ref = normalize(raw)
        cde = ref.split(":", 1)[1]
        hit = (ref, cde, ref not in _TS_REFS and not cde.startswith(_TEXT_CD))
        if len(_REF_CACHE) < 4096:
            _REF_CACHE[raw] = hit
    return hit


def _single(ref: str, group: str, tz: ZoneInfo) -> Value:
    """One bracketed group that is not a plain number: the telegram's timestamp, or an id/text."""
    text, star, unit = group.partition("*")
    if ref in _TS_REFS:
        return Value(text, unit or None, parse_timestamp(text, tz))
    return Value(text, unit if star else None, text=_hex_text(text))


def _parse_lines_slow(body: str, values: dict[str, Value], tz: ZoneInfo) -> None:
    """Line by line, for telegrams with continuation lines (the DSMR 2.2 gas value)."""
    pending_ref: str | None = None
    pending: list[tuple[str, str | None]] = []
    for raw_line in body.split("\n")[1:]:
        line = raw_line.rstrip("\r")
        if not line:
            continue
        if line[0] == "(" and pending_ref is not None:
            pending.extend(_split(g) for g in _GROUP_RE.findall(line))
            continue
        m = _LINE_RE.match(line)
        if m is None:
            continue  # not an OBIS line (noise); kept out rather than guessed
        if pending_ref is not None:
            values[pending_ref] = _value(pending_ref, pending, tz)
        pending_ref = _ref(m.group(1))[0]
        pending = [_split(g) for g in _GROUP_RE.findall(m.group(2))]
    if pending_ref is not None:
        values[pending_ref] = _value(pending_ref, pending, tz)


def _value(ref: str, groups: list[tuple[str, str | None]], tz: ZoneInfo) -> Value:
    """Interpret the bracketed groups of one OBIS line."""
    cde = ref.split(":", 1)[1]
    if len(groups) == 1:
        text, unit = groups[0]
        if ref in _TS_REFS:
            return Value(text, unit, parse_timestamp(text, tz))
        if cde.startswith(_TEXT_CD):
            return Value(text, unit, text=_hex_text(text))
        return _numeric(text, unit)
    if cde.startswith("24.3.") and len(groups) >= 7:  # DSMR 2.2 gas, value on the next line
        num = _number(groups[-1][0])
        return Value(num if num is not None else groups[-1][0], groups[5][0] or None,
                     parse_timestamp(groups[0][0], tz), tuple(groups))
    if len(groups) == 2:
        ts = parse_timestamp(groups[0][0], tz)
        if ts is not None or groups[0][0] == "":
            value, unit = _numeric(*groups[1])[:2]
            return Value(value, unit, ts, tuple(groups))
    first = _number(groups[0][0])
    return Value(first if first is not None else groups[0][0], groups[0][1], None, tuple(groups))


def parse_telegram(
    data: bytes, received: datetime, tz: ZoneInfo, seq: int = 0, crc_ok: bool | None = None
) -> Reading:
    """Parse one complete telegram ('/' .. '!' [CRC] CRLF).

    With `crc_ok` None the CRC is checked here (a mismatch raises ChecksumError); a framer that
    already checked it passes its verdict.
    """
    if crc_ok is None:
        crc_ok, calculated, got = check_crc(data)
        if crc_ok is False:
            raise ChecksumError("CRC16", calculated, got or "?")
    elif crc_ok is False:
        raise ChecksumError("CRC16", "?", "?")
    text = data.decode("latin-1")
    if not text.startswith("/"):
        raise ParseError("telegram does not start with '/'")
    header = text[1 : text.find("\n")].rstrip("\r") if "\n" in text else text[1:]
    end = text.rfind("\n!")
    body = text if end < 0 else text[: end + 1]
    values: dict[str, Value] = {}
    if "\n(" in body:
        _parse_lines_slow(body, values, tz)
    else:
        cache = _REF_CACHE
        last = _LAST_LINES.get(tz)
        if last is None:
            last = _LAST_LINES.setdefault(tz, {})
        for raw_ref, content in _LINE_ITER_RE.findall(body):
            prev = last.get(raw_ref)
            if prev is not None and prev[0] == content:  # unchanged since the last telegram
                values[prev[1]] = prev[2]
                continue
            ref, cde, plain = cache.get(raw_ref) or _ref(raw_ref)
            if content.find("(", 1) < 0:  # one group: the common case, kept inline (hot path)
                text, star, unit = content[1:-1].partition("*")
                if plain:
                    if len(text) < 40 and text.replace(".", "", 1).isdigit():  # the usual 000123.456
                        try:
                            num: float | int | None = float(text) if "." in text else int(text)
                        except ValueError:  # non-ASCII digits such as '³'
                            num = None
                        values[ref] = make_value(text if num is None else num, unit if star else None)
                    else:
                        values[ref] = _numeric(text, unit if star else None)
                else:
                    values[ref] = _single(ref, content[1:-1], tz)
            else:
                values[ref] = _value(ref, [_split(g) for g in _GROUP_RE.findall(content)], tz)
            if len(last) < 4096:
                last[raw_ref] = (content, ref, values[ref])
    if not values:
        raise ParseError(f"telegram {header!r} holds no OBIS lines")
    ts_value = values.get("0-0:1.0.0")
    meter_time = ts_value.timestamp if ts_value is not None else None
    fields, gas_time = named_fields(values)
    return Reading(
        seq=seq,
        protocol="dsmr",
        meter_id=_meter_id(values, header),
        header=header,
        meter_time=meter_time,
        received=received,
        values=values,
        fields=fields,
        gas_time=gas_time,
        crc_ok=crc_ok,
    )


def _meter_id(values: dict[str, Value], header: str) -> str:
    for ref in _METER_ID_REFS:
        v = values.get(ref)
        if v is not None and v.value not in ("", None):
            return v.text or str(v.value)
    return header


class DsmrDecoder:
    """Decoder for DSMR frames (Frame.kind == "dsmr")."""

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def decode(self, frame: Frame, received: datetime, seq: int = 0) -> Reading:
        """Decode one good telegram frame."""
        return parse_telegram(frame.data, received, self.tz, seq, frame.crc_ok)
