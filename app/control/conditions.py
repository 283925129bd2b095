"""Relay conditions: `<quantity> <op> <number> [unit] [for <duration>]`.

    export > 1500 W for 60 s
    import >= 4.5 kW for 10 s
    current_l1 > 20 A
    mean(export, 2 min) > 1500 W for 30 s
    available > 3.7 kW for 2 min        (several meters: building, solar, available)
    pv.power < -500 W                   (one meter's own: <meter>.power|import|export|voltage|current)

Thresholds are kept in the quantity's base unit (W for power, A, V; a named field's own unit
otherwise) and `unit` remembers how the user wrote it, so log lines read like the config.
Durations are parsed here (not in app.config, which imports this module).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from app.control.quantities import COMBINED, METER_QUANTITIES
from app.obis import FIELD_UNITS

OPS: tuple[str, ...] = (">=", "<=", ">", "<")
PHASES = ("l1", "l2", "l3")

# quantity -> base unit; derived quantities first, then every named field (power fields in W).
_DERIVED: dict[str, str] = {"import": "W", "export": "W", "net": "W", "demand": "W"}
for _p in PHASES:
    _DERIVED |= {f"import_{_p}": "W", f"export_{_p}": "W", f"current_{_p}": "A", f"voltage_{_p}": "V"}
QUANTITY_UNITS: dict[str, str] = _DERIVED | COMBINED | {
    name: ("W" if unit == "kW" else unit) for name, unit in FIELD_UNITS.items()
}


def unit_of(quantity: str) -> str | None:
    """The base unit of a quantity (`pv.power` -> W), None when there is no such quantity."""
    if "." in quantity:
        return METER_QUANTITIES.get(quantity.split(".", 1)[1])
    return QUANTITY_UNITS.get(quantity)

# unit as written -> (base unit, factor to the base unit)
_UNITS: dict[str, tuple[str, float]] = {
    "w": ("W", 1.0),
    "kw": ("W", 1000.0),
    "a": ("A", 1.0),
    "v": ("V", 1.0),
    "kwh": ("kWh", 1.0),
    "wh": ("kWh", 0.001),
    "m3": ("m3", 1.0),
}
_UNIT_SPELLING = {"w": "W", "kw": "kW", "a": "A", "v": "V", "kwh": "kWh", "wh": "Wh", "m3": "m3"}

_DURATION_RE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|min|mins|minutes?|h|hr|hrs|hours?)?\s*$", re.I
)
_DURATION_FACTORS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
}
_MEAN_RE = re.compile(r"^mean\s*\(\s*([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)\s*,\s*([^)]*)\)\s*", re.I)
_QUANTITY_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)\s*")
_OP_RE = re.compile(r"^(>=|<=|==|=<|=>|!=|<>|>|<|=)\s*")
_NUMBER_RE = re.compile(r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*")
_UNIT_RE = re.compile(r"^([A-Za-z][A-Za-z0-9]*)\s*")
_FOR_RE = re.compile(r"^for\b\s*(.*)$", re.I)


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; threshold in the quantity's base unit (W, A, V)."""

    text: str
    quantity: str
    op: str
    threshold: float
    duration_s: float = 0.0
    mean_window_s: float | None = None
    unit: str = ""  # the unit as written (or the base unit for a bare number), for log lines
    duration_text: str = ""  # the duration as written, for log lines
    mean_text: str = ""  # the mean window as written, for log lines

    @property
    def base_unit(self) -> str:
        """The quantity's base unit (W, A, V, kWh, m3)."""
        unit = unit_of(self.quantity)
        assert unit is not None
        return unit

    @property
    def label(self) -> str:
        """`export` or `mean(export, 2 min)`."""
        if self.mean_window_s is None:
            return self.quantity
        return f"mean({self.quantity}, {self.mean_text})"

    def test(self, value: float) -> bool:
        """Whether `value` (base unit) satisfies the comparison."""
        if self.op == ">":
            return value > self.threshold
        if self.op == "<":
            return value < self.threshold
        if self.op == ">=":
            return value >= self.threshold
        return value <= self.threshold

    def describe(self, value: float | None, negated: bool = False) -> str:
        """`export 2500 W > 1500 W for 60 s` with `value` shown in the threshold's unit."""
        factor = _factor(self.unit)
        thr = _fmt(self.threshold / factor)
        shown = "n/a" if value is None else f"{_fmt(value / factor)} {self.unit}".rstrip()
        op = f"not {self.op}" if negated else self.op
        tail = f" for {self.duration_text}" if self.duration_s > 0 and not negated else ""
        return f"{self.label} {shown} {op} {thr} {self.unit}".rstrip() + tail


def _factor(unit: str) -> float:
    return _UNITS[unit.lower()][1] if unit.lower() in _UNITS else 1.0


def _fmt(x: float) -> str:
    """Whole numbers (and anything from 1000 up) without decimals, others with up to 3 decimals."""
    if abs(x - round(x)) < 1e-9 or abs(x) >= 1000:
        return f"{x:.0f}"
    return f"{x:.3f}".rstrip("0").rstrip(".")


def parse_duration_s(text: str) -> float:
    """`30 s`, `5 min`, `1 h` or a bare number of seconds -> seconds; ValueError otherwise."""
    m = _DURATION_RE.match(text)
    if m is None and _DURATION_RE.match(text.replace(",", ".", 1)):
        raise ValueError(f"decimal comma in duration {text.strip()!r}: write {text.strip().replace(',', '.', 1)!r}")
    if m is None:
        raise ValueError(f"bad duration {text.strip()!r} (expected e.g. '30 s', '5 min' or '1 h')")
    return float(m.group(1)) * _DURATION_FACTORS[(m.group(2) or "s").lower()]


def _known() -> str:
    return (
        "import, export, net, import_l1..3, export_l1..3, current_l1..3, voltage_l1..3, demand, "
        "building, solar, available, <meter>.power|import|export|voltage|current or a named field"
    )


def parse_condition(text: str) -> Condition:
    """Parse a condition; raise ValueError saying what is wrong."""
    src = text.strip()
    if not src:
        raise ValueError("empty condition (expected e.g. 'export > 1500 W for 60 s')")
    rest = src
    mean_window_s: float | None = None
    mean_text = ""
    m = _MEAN_RE.match(rest)
    if m is not None:
        quantity = m.group(1).lower()
        mean_text = " ".join(m.group(2).split())
        if not mean_text:
            raise ValueError("mean() needs a window, e.g. 'mean(export, 2 min)'")
        mean_window_s = parse_duration_s(mean_text)
        if mean_window_s <= 0:
            raise ValueError("the mean() window must be longer than 0 s")
        rest = rest[m.end() :]
    elif rest.lower().startswith("mean"):
        raise ValueError("expected 'mean(<quantity>, <duration>)', e.g. 'mean(export, 2 min)'")
    else:
        m = _QUANTITY_RE.match(rest)
        if m is None:
            raise ValueError(f"expected a quantity at the start ({_known()})")
        quantity = m.group(1).lower()
        rest = rest[m.end() :]
    unit_q = unit_of(quantity)
    if unit_q is None:
        raise ValueError(f"unknown quantity {quantity!r} (use {_known()})")
    base = unit_q

    m = _OP_RE.match(rest)
    if m is None:
        raise ValueError(f"expected an operator (> < >= <=) after {quantity!r}")
    op = {"=<": "<=", "=>": ">="}.get(m.group(1), m.group(1))
    if op not in OPS:
        raise ValueError(f"operator {m.group(1)!r} is not allowed (use > < >= <=)")
    rest = rest[m.end() :]

    m = _NUMBER_RE.match(rest)
    if m is None:
        raise ValueError(f"expected a number after {op!r}")
    number = float(m.group(1))
    rest = rest[m.end() :]
    comma = re.match(r"^,\s*(\d+)", rest)
    if comma is not None:
        written = f"{m.group(1).strip()}.{comma.group(1)}"
        raise ValueError(f"decimal comma in {m.group(1).strip()},{comma.group(1)}: write {written} "
                         "(a dot; thresholds use the decimal point whatever [csv] decimal says)")

    unit = base
    m = _UNIT_RE.match(rest)
    if m is not None and m.group(1).lower() != "for":
        written = m.group(1)
        spec = _UNITS.get(written.lower())
        if spec is None:
            raise ValueError(f"unknown unit {written!r} (use W, kW, A or V)")
        if spec[0] != base:
            raise ValueError(f"unit {written!r} does not fit {quantity!r}, which is in {base}")
        unit = _UNIT_SPELLING[written.lower()]
        number *= spec[1]
        rest = rest[m.end() :]

    duration_s = 0.0
    duration_text = ""
    if rest:
        m = _FOR_RE.match(rest)
        if m is None:
            raise ValueError(f"unexpected {rest!r} (expected 'for <duration>' or nothing)")
        duration_text = " ".join(m.group(1).split())
        if not duration_text:
            raise ValueError("'for' needs a duration, e.g. 'for 60 s'")
        duration_s = parse_duration_s(duration_text)
    return Condition(
        text=src,
        quantity=quantity,
        op=op,
        threshold=number,
        duration_s=duration_s,
        mean_window_s=mean_window_s,
        unit=unit,
        duration_text=duration_text,
        mean_text=mean_text,
    )


@dataclass(slots=True)
class MeanWindow:
    """`mean(quantity, window)`: the plain mean of the readings' values in the last `window_s` of meter time.

    None until the history since the start (or the last `reset`) covers the whole window; readings without
    the quantity add nothing (the mean is over the samples there are)."""

    window_s: float
    samples: deque[tuple[datetime, float]] = field(default_factory=deque)
    since: datetime | None = None  # first reading since start or the last reset

    def reset(self) -> None:
        """Forget every sample (a gap in meter time, a clock that went back)."""
        self.samples.clear()
        self.since = None

    def update(self, t: datetime, value: float | None) -> float | None:
        """Add this reading's value; the mean once the history covers the window, else None."""
        if self.since is None:
            self.since = t
        if value is not None:
            self.samples.append((t, value))
        limit = t - timedelta(seconds=self.window_s)
        while self.samples and self.samples[0][0] <= limit:
            self.samples.popleft()
        if not self.samples or (t - self.since).total_seconds() < self.window_s:
            return None
        return sum(v for _, v in self.samples) / len(self.samples)
