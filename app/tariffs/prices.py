"""Dynamic prices: a file of hourly or quarter-hour slots, checked line by line, looked up per quarter.

File format (UTF-8, one slot per line, `;` between fields; `,` or a tab also work when no `;` is used):

    # comment lines start with '#'; blank lines are ignored
    start ; import EUR/kWh ; export EUR/kWh          <- optional header (names currency and unit)
    2025-06-01T00:00:00+02:00 ; 0.2531 ; 0.0412      <- start time ; import price [; export price]
    2025-06-01 01:00 ; 0,2417 ; 0,0388               <- local time in [meter] timezone, decimal comma

A slot lasts until the next line's start: 15 min or 1 h, the same length within a local day (the day-ahead
market moved from hours to quarters on a day boundary). Times are ISO 8601 with an offset (or Z), or local
times in [meter] timezone; in the autumn DST hour a repeated local time is the second (later) hour. The header
may name the unit as CUR/kWh or CUR/MWh (ENTSO-E exports; divided by 1000); a value may carry its currency
(`0.25 EUR`, `€0.25`). A gap, a duplicate or out-of-order slot, a bad number, a mixed number of columns or
another currency than [tariff] currency is a ConfigError naming the file and line: never a silent zero price.
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, tzinfo
from itertools import pairwise
from pathlib import Path

from app.errors import ConfigError

QUARTER_S = 900
HOUR_S = 3600
_SYMBOLS = {"€": "EUR", "£": "GBP"}
_UNIT_RE = re.compile(r"(€|£|\b[A-Za-z]{2,4}\b)\s*/\s*(kwh|mwh)\b", re.I)
_VALUE_RE = re.compile(
    r"^(?:(?P<pre>[A-Z]{3}|€|£)\s*)?(?P<num>[-+]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:[eE][-+]?\d+)?)"
    r"\s*(?P<post>[A-Z]{3}|€|£)?$")
_CENTS = frozenset({"ct", "cent", "cents", "c"})


@dataclass(frozen=True, eq=False)
class PriceTable:
    """Contiguous price slots: starts (epoch s, ascending), the end of the last slot, prices per kWh."""

    path: str
    starts: tuple[int, ...]
    end_s: int
    import_prices: tuple[float, ...]
    export_prices: tuple[float, ...] | None  # None: the file has no export column

    def __post_init__(self) -> None:
        if not self.starts:
            raise ValueError("a price table needs at least one slot")

    def __str__(self) -> str:
        first = datetime.fromtimestamp(self.starts[0], UTC)
        last = datetime.fromtimestamp(self.end_s, UTC)
        return (f"{self.path}: {len(self.starts)} slots {first:%Y-%m-%dT%H:%MZ}..{last:%Y-%m-%dT%H:%MZ}"
                f"{' with export prices' if self.export_prices is not None else ''}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PriceTable):
            return NotImplemented
        return (self.starts, self.end_s, self.import_prices, self.export_prices) == (
            other.starts, other.end_s, other.import_prices, other.export_prices)

    __hash__ = None  # type: ignore[assignment]

    @property
    def start_s(self) -> int:
        """The start of the first slot (epoch seconds)."""
        return self.starts[0]

    def slot(self, epoch_s: float) -> int:
        """Index of the slot holding this instant, or -1 outside the file."""
        if epoch_s < self.starts[0] or epoch_s >= self.end_s:
            return -1
        return bisect_right(self.starts, epoch_s) - 1

    def import_price(self, when: datetime) -> float | None:
        """The import price per kWh at an aware instant (None outside the file)."""
        i = self.slot(when.timestamp())
        return None if i < 0 else self.import_prices[i]

    def export_price(self, when: datetime) -> float | None:
        """The export price per kWh at an aware instant (None outside the file or without an export column)."""
        i = self.slot(when.timestamp())
        return None if i < 0 or self.export_prices is None else self.export_prices[i]


def load_prices(path: str | Path, tz: tzinfo, currency: str = "EUR") -> PriceTable:
    """Read and check a prices file; every problem is a ConfigError naming the file and line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    return parse_prices(text, tz, currency, str(p))


def parse_prices(text: str, tz: tzinfo, currency: str = "EUR", name: str = "<prices>") -> PriceTable:
    """Parse the text of a prices file (see the module docstring)."""
    delim = ""
    scale = 1.0
    ncols = 0
    header_seen = False
    rows: list[tuple[int, int, float, float | None]] = []  # (line, start epoch s, import, export)
    prev_s: int | None = None
    lineno = 0
    try:
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            if not delim:
                delim = ";" if ";" in line else "\t" if "\t" in line else ","
            fields = [f.strip() for f in line.split(delim)]
            while len(fields) > 2 and not fields[-1]:
                fields.pop()
            when = _parse_time(fields[0])
            if when is None:
                if rows or header_seen or any(_VALUE_RE.match(f) for f in fields[1:]):
                    raise ValueError(f"{fields[0]!r} is not a time (expected e.g. 2025-06-01T00:00:00+02:00 "
                                     "or 2025-06-01 00:00 in local time)")
                header_seen = True
                scale = _header_unit(fields[1:], currency)
                continue
            if len(fields) not in (2, 3):
                raise ValueError(f"expected 'start time {delim} import price [{delim} export price]', "
                                 f"got {len(fields)} fields")
            if ncols and len(fields) != ncols:
                raise ValueError(f"{len(fields)} fields where the lines before have {ncols} "
                                 "(give an export price on every line or on none)")
            ncols = len(fields)
            if when.second or when.microsecond or when.minute % 15:
                raise ValueError(f"{fields[0]!r} is not the start of a quarter-hour or hour slot")
            start_s = _resolve(when, tz, prev_s)
            imp = _number(fields[1], currency) * scale
            exp = _number(fields[2], currency) * scale if ncols == 3 else None
            rows.append((lineno, start_s, imp, exp))
            prev_s = start_s
    except ValueError as exc:
        raise ConfigError(f"{name} line {lineno}: {exc}") from None
    if not rows:
        raise ConfigError(f"{name}: no prices (expected lines 'start time ; import price [; export price]')")
    return _build(rows, tz, name, ncols == 3)


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _resolve(when: datetime, tz: tzinfo, prev_s: int | None) -> int:
    """Epoch seconds of a slot start; naive times are local in `tz` (the repeated autumn hour: the later one)."""
    if when.tzinfo is not None:
        return int(when.timestamp())
    e_s = int(when.replace(tzinfo=tz).timestamp())
    if datetime.fromtimestamp(e_s, tz).replace(tzinfo=None) != when:
        raise ValueError(f"local time {when:%Y-%m-%d %H:%M} does not exist in {tz} (the clocks skip it)")
    if prev_s is not None and prev_s >= e_s:  # the second pass of a repeated hour, or a real duplicate
        l_s = int(when.replace(tzinfo=tz, fold=1).timestamp())
        if l_s > prev_s:
            return l_s
    return e_s


def _number(text: str, currency: str) -> float:
    try:
        v = float(text)  # the usual case
    except ValueError:
        m = _VALUE_RE.match(text)
        if m is None:
            raise ValueError(f"{text!r} is not a number") from None
        for cur in (m.group("pre"), m.group("post")):
            if cur and _SYMBOLS.get(cur, cur) != currency:
                raise ValueError(f"price {text!r} is in {_SYMBOLS.get(cur, cur)}, [tariff] currency is {currency}"
                                 ) from None
        v = float(m.group("num").replace(",", "."))
    if not math.isfinite(v):
        raise ValueError(f"{text!r} is not a finite number")
    return v


def _header_unit(fields: Sequence[str], currency: str) -> float:
    """The factor from the header's price unit to currency per kWh (1 without a unit)."""
    scale = 1.0
    for f in fields:
        m = _UNIT_RE.search(f)
        if m is None:
            continue
        cur, unit = m.group(1), m.group(2).lower()
        per = 0.001 if unit == "mwh" else 1.0
        if cur.lower() in _CENTS:
            scale = per * 0.01
        elif _SYMBOLS.get(cur, cur.upper()) != currency:
            raise ValueError(f"prices in {_SYMBOLS.get(cur, cur.upper())}/{m.group(2)}, [tariff] currency is "
                             f"{currency}")
        else:
            scale = per
    return scale


def _build(rows: list[tuple[int, int, float, float | None]], tz: tzinfo, name: str, with_export: bool) -> PriceTable:
    """Check order, duplicates, slot lengths and gaps; the last slot is as long as the ones before it."""

    def fail(lineno: int, why: str) -> ConfigError:
        return ConfigError(f"{name} line {lineno}: {why}")

    first_line: dict[int, int] = {}
    for lineno, s, _i, _e in rows:
        if s in first_line:
            raise fail(lineno, f"duplicate slot {_show(s, tz)}, also on line {first_line[s]}")
        first_line[s] = lineno
    for (l0, s0, _i0, _e0), (l1, s1, _i1, _e1) in pairwise(rows):
        if s1 < s0:
            raise fail(l1, f"slot {_show(s1, tz)} comes before the one on line {l0} (keep the file in time order)")
    local = [datetime.fromtimestamp(r[1], tz) for r in rows]
    days = [t.date() for t in local]
    lengths = [b[1] - a[1] for a, b in pairwise(rows)]
    day_len: dict[date, int] = {}  # the slot length of each local day: its shortest valid one
    for day, length in zip(days, lengths, strict=False):
        if length in (QUARTER_S, HOUR_S):
            day_len[day] = min(day_len.get(day, length), length)
    for idx, length in enumerate(lengths):
        slot = day_len.get(days[idx], QUARTER_S if length < HOUR_S else HOUR_S)
        if length == slot:
            continue
        lineno, s = rows[idx][0], rows[idx][1]
        nxt_line = rows[idx + 1][0]
        if length < slot:
            raise fail(nxt_line, f"slot {_show(s + length, tz)} starts {length // 60} min after the one on "
                                 f"line {lineno} (slots are 15 min or 1 h)")
        raise fail(nxt_line, f"gap: no price from {_show(s + slot, tz)} to {_show(s + length, tz)} "
                             f"(after line {lineno})")
    last_len = day_len.get(days[-1]) or (lengths[-1] if lengths else HOUR_S if local[-1].minute == 0 else QUARTER_S)
    for (lineno, s, _i, _e), t, day in zip(rows, local, days, strict=True):
        if t.minute and day_len.get(day, last_len) == HOUR_S:
            raise fail(lineno, f"hourly slot {_show(s, tz)} does not start on the hour")
    return PriceTable(
        path=name,
        starts=tuple(r[1] for r in rows),
        end_s=rows[-1][1] + last_len,
        import_prices=tuple(r[2] for r in rows),
        export_prices=tuple(r[3] for r in rows) if with_export else None,  # type: ignore[misc]
    )


def _show(epoch_s: int, tz: tzinfo) -> str:
    return datetime.fromtimestamp(epoch_s, tz).isoformat(timespec="minutes")


def format_prices(table: PriceTable, tz: tzinfo, currency: str = "EUR") -> str:
    """A prices file for `table` (ISO times with offsets in `tz`); `parse_prices` reads it back to the same table."""
    header = f"start;import {currency}/kWh" + (f";export {currency}/kWh" if table.export_prices is not None else "")
    lines = ["# written by smartmeter", header]
    for i, s in enumerate(table.starts):
        row = f"{datetime.fromtimestamp(s, tz).isoformat()};{table.import_prices[i]!r}"
        if table.export_prices is not None:
            row += f";{table.export_prices[i]!r}"
        lines.append(row)
    return "\n".join(lines) + "\n"
