"""The only types that cross the process boundary: one small frozen record per reading.

A `Reading` is what every protocol (DSMR text, DLMS push) turns into and what control and
every sink consume. Units are fixed at the parse boundary: `fields` holds the named fields of
`app.obis.FIELDS` in their base units (kWh, kW, V, A, m3), `values` keeps every OBIS line as
the meter sent it (after the DLMS scaler), unknown ones included.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import repeat
from typing import Any, NamedTuple

Number = float | int
_OFFSETS: dict[timedelta, timezone] = {}


def fixed_offset(local: datetime) -> datetime:
    """The same instant with a fixed UTC offset, so that arithmetic is right across DST changes
    (two datetimes sharing one ZoneInfo subtract as wall times and ignore `fold`).

    One shared tzinfo object per offset also keeps pickles small (the pickler memoizes it)."""
    offset = local.utcoffset() or timedelta(0)
    tz = _OFFSETS.get(offset)
    if tz is None:
        tz = _OFFSETS.setdefault(offset, timezone(offset))
    return local.replace(tzinfo=tz, fold=0)


class Value(NamedTuple):
    """One OBIS object: its value (number or text), unit, and own timestamp if it has one.

    `groups` keeps every bracketed group of a multi-group line (1-0:99.97.0, 0-0:98.1.0, ...)
    as (text, unit) pairs; `text` is the decoded form of a hex-encoded text value.
    (A NamedTuple rather than a dataclass: a telegram makes dozens, and this is 4x cheaper.)
    """

    value: Number | str | None
    unit: str | None = None
    timestamp: datetime | None = None
    groups: tuple[tuple[str, str | None], ...] = ()
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    """One telegram or push, decoded.

    `meter_time` is the meter's own clock with a fixed UTC offset (see `fixed_offset`; None where
    the meter sends none), `received` the wall-clock receive time (UTC-aware). `seq` counts
    readings in the reader process so the consumer sees gaps.
    """

    seq: int
    protocol: str  # "dsmr" | "dlms"
    meter_id: str
    header: str
    meter_time: datetime | None
    received: datetime
    values: dict[str, Value]
    fields: dict[str, float]
    gas_time: datetime | None = None
    crc_ok: bool | None = None
    meter: str = ""  # the [meter:NAME] it came from; "" is the [meter] meter (P1/DLMS)
    role: str = ""  # that meter's role: grid | building | solar | zone ("" for the [meter] meter)

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle `values` as plain tuples: 2-3x cheaper across the queue than one NamedTuple each."""
        refs = tuple(self.values)
        packed = tuple(map(tuple, self.values.values()))  # plain tuples, converted in C
        return (_unpack_reading, (self.seq, self.protocol, self.meter_id, self.header, self.meter_time,
                                  self.received, refs, packed, self.fields, self.gas_time, self.crc_ok,
                                  *((self.meter, self.role) if self.meter else ())))

    @property
    def time(self) -> datetime:
        """Meter time where the meter sends one, else the receive time."""
        return self.meter_time if self.meter_time is not None else self.received

    @property
    def lag_s(self) -> float | None:
        """Receive time minus meter time in seconds (clock drift + transport delay)."""
        if self.meter_time is None:
            return None
        return (self.received - self.meter_time).total_seconds()


def _unpack_reading(seq: int, protocol: str, meter_id: str, header: str, meter_time: datetime | None,
                    received: datetime, refs: tuple[str, ...], packed: tuple[tuple[Any, ...], ...],
                    fields: dict[str, float], gas_time: datetime | None, crc_ok: bool | None,
                    meter: str = "", role: str = "") -> Reading:
    """The inverse of Reading.__reduce__ (the [meter] meter's readings pickle without meter and role)."""
    # tuple.__new__(Value, t) for each t, all in C: no Python-level __new__ per value
    values = dict(zip(refs, map(tuple.__new__, repeat(Value), packed), strict=True))
    return Reading(seq, protocol, meter_id, header, meter_time, received, values, fields, gas_time, crc_ok,
                   meter, role)


@dataclass(frozen=True, slots=True)
class ReaderStatus:
    """Reader counters, sent now and then so the post-processor can log and publish them."""

    frames_ok: int = 0
    frames_bad: int = 0
    crc_errors: int = 0
    parse_errors: int = 0
    decrypt_errors: int = 0
    dropped: int = 0
    lag_mean_s: float | None = None
    lag_max_s: float | None = None
    connected: bool = True
    protocol: str = ""
    header: str = ""
    reasons: dict[str, int] = field(default_factory=dict)
    implausible: int = 0  # decoded readings the plausibility gate rejected (also in frames_bad)
    skipped_bytes: int = 0  # bytes outside any frame of the framer in use (noise, other protocols)


@dataclass(frozen=True, slots=True)
class MeterState:
    """A [meter:NAME] reader's own view of its meter: `online` after a good poll, `error` with the
    reason after a failed one (sent on change; `offline` is decided by the post-processor)."""

    meter: str
    state: str  # "online" | "error"
    reason: str = ""


def make_value(value: Number | str | None, unit: str | None) -> Value:
    """Value(value, unit) for the parsers' hot path, about 3x cheaper than calling the class."""
    return tuple.__new__(Value, (value, unit, None, (), None))


# Queue marks from the reader: END after the last reading of a replay, STOPPED when it stopped on request.
END = None
STOPPED = "stopped"
