"""OBIS codes and the one table of named fields and units.

OBIS references are written `A-B:C.D.E`, with `*F` appended only when F is not 255
(`1-0:1.8.0.255`, `1-0:1.8.0*255` and six raw bytes all become `1-0:1.8.0`).
Every exporter and the relay controller use the names in `FIELDS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from app.records import Value

_OBIS_RE = re.compile(r"^(\d+)-(\d+):(\d+)\.(\d+)\.(\d+)(?:[.*](\d+))?$")


def normalize(ref: str) -> str:
    """Canonical `A-B:C.D.E[*F]` form of an OBIS reference; unparseable input is returned as is."""
    m = _OBIS_RE.match(ref)
    if m is None:
        return ref
    a, b, c, d, e, f = m.groups()
    base = f"{int(a)}-{int(b)}:{int(c)}.{int(d)}.{int(e)}"
    if f is None or int(f) == 255:
        return base
    return f"{base}*{int(f)}"


def from_bytes(code: bytes) -> str:
    """OBIS reference from the six bytes of a COSEM logical name."""
    a, b, c, d, e, f = code
    base = f"{a}-{b}:{c}.{d}.{e}"
    return base if f == 255 else f"{base}*{f}"


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """A named field: the OBIS C.D.E it comes from (electricity, A=1) and its base unit."""

    name: str
    cde: str
    unit: str
    description: str


# The DSMR/Fluvius table this project was specified with, plus the tariff-less totals that
# DLMS meters send. Power in kW, energy in kWh (W and Wh are converted at this boundary).
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("total_consumption_day", "1.8.1", "kWh", "imported energy, tariff 1"),
    FieldSpec("total_consumption_night", "1.8.2", "kWh", "imported energy, tariff 2"),
    FieldSpec("total_injection_day", "2.8.1", "kWh", "exported energy, tariff 1"),
    FieldSpec("total_injection_night", "2.8.2", "kWh", "exported energy, tariff 2"),
    FieldSpec("total_consumption", "1.8.0", "kWh", "imported energy, all tariffs"),
    FieldSpec("total_injection", "2.8.0", "kWh", "exported energy, all tariffs"),
    FieldSpec("actual_total_consumption", "1.7.0", "kW", "import power"),
    FieldSpec("actual_total_injection", "2.7.0", "kW", "export power"),
    FieldSpec("actual_l1_consumption", "21.7.0", "kW", "import power L1"),
    FieldSpec("actual_l2_consumption", "41.7.0", "kW", "import power L2"),
    FieldSpec("actual_l3_consumption", "61.7.0", "kW", "import power L3"),
    FieldSpec("actual_l1_injection", "22.7.0", "kW", "export power L1"),
    FieldSpec("actual_l2_injection", "42.7.0", "kW", "export power L2"),
    FieldSpec("actual_l3_injection", "62.7.0", "kW", "export power L3"),
    FieldSpec("l1_voltage", "32.7.0", "V", "voltage L1"),
    FieldSpec("l2_voltage", "52.7.0", "V", "voltage L2"),
    FieldSpec("l3_voltage", "72.7.0", "V", "voltage L3"),
    FieldSpec("l1_current", "31.7.0", "A", "current L1"),
    FieldSpec("l2_current", "51.7.0", "A", "current L2"),
    FieldSpec("l3_current", "71.7.0", "A", "current L3"),
    FieldSpec("current_average_demand", "1.4.0", "kW", "current quarter-hour average demand"),
    FieldSpec("maximum_demand_month", "1.6.0", "kW", "maximum quarter-hour demand this month"),
)
GAS_FIELD = FieldSpec("total_gas_consumption", "24.2.1", "m3", "gas meter reading")
WATER_FIELD = FieldSpec("total_water_consumption", "24.2.1", "m3", "water meter reading")
HEAT_FIELD = FieldSpec("total_heat_consumption", "24.2.1", "GJ", "heat meter reading")
# M-Bus channel fields, in order of preference where a channel sends no device type (0-n:24.1.0).
MBUS_FIELDS: tuple[FieldSpec, ...] = (GAS_FIELD, WATER_FIELD, HEAT_FIELD)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS) + tuple(f.name for f in MBUS_FIELDS)
FIELD_UNITS: dict[str, str] = {f.name: f.unit for f in FIELDS} | {f.name: f.unit for f in MBUS_FIELDS}
ENERGY_FIELDS = frozenset(f.name for f in FIELDS if f.unit == "kWh") | {f.name for f in MBUS_FIELDS}
_BY_CDE: dict[str, FieldSpec] = {f.cde: f for f in FIELDS}
_SCALE = {("W", "kW"): 0.001, ("Wh", "kWh"): 0.001, ("kW", "W"): 1000.0, ("kWh", "Wh"): 1000.0,
          ("MWh", "kWh"): 1000.0, ("kWh", "GJ"): 0.0036, ("MWh", "GJ"): 3.6, ("MJ", "GJ"): 0.001,
          ("Wh", "GJ"): 3.6e-6, ("dm3", "m3"): 0.001, ("l", "m3"): 0.001}
_ELECTRICITY_RE = re.compile(r"^1-\d+:(\d+\.\d+\.\d+)$")
_MBUS_VALUE_RE = re.compile(r"^0-(\d+):24\.(?:2\.[13]|3\.0)$")
GAS_DEVICE_TYPE = 3
# M-Bus device types (EN 13757-3): 3 gas; 6 warm water, 7 water; 4 heat (outlet), 12 heat (inlet),
# 13 heat/cooling. Any other type (electricity sub-meter, cooling, ...) gets no named field.
MBUS_DEVICE_TYPES: dict[int, FieldSpec] = {3: GAS_FIELD, 6: WATER_FIELD, 7: WATER_FIELD, 4: HEAT_FIELD,
                                           12: HEAT_FIELD, 13: HEAT_FIELD}
_UNIT_FIELD = {"m3": GAS_FIELD, "gj": HEAT_FIELD, "mj": HEAT_FIELD}  # a channel without device type
# Years a meter writes into an empty M-Bus slot: 1970 (the epoch, "700101...", read as 2070 by the
# DSMR YY rule) and DSMR's "632525252525" filler (which is no date at all).
_PLACEHOLDER_YEARS = frozenset({1970, 2070})


def convert(value: float, unit: str | None, to_unit: str) -> float | None:
    """`value` in `unit` expressed in `to_unit`; None when the units do not match."""
    if unit is None or unit == to_unit or unit.lower() == to_unit.lower():
        return float(value)
    factor = _SCALE.get((unit, to_unit))
    return None if factor is None else value * factor


_KIND_CACHE: dict[str, FieldSpec | str | None] = {}


def _kind(ref: str) -> FieldSpec | str | None:
    """What an OBIS reference is to the named fields: a FieldSpec, an M-Bus channel value
    ("0-n:" prefix, for gas), or None. Cached: the same references come in every reading."""
    try:
        return _KIND_CACHE[ref]
    except KeyError:
        pass
    kind: FieldSpec | str | None = None
    m = _ELECTRICITY_RE.match(ref)
    if m is not None:
        kind = _BY_CDE.get(m.group(1))
    else:
        m = _MBUS_VALUE_RE.match(ref)
        if m is not None:
            kind = f"0-{m.group(1)}:"
    if len(_KIND_CACHE) < 4096:
        _KIND_CACHE[ref] = kind
    return kind


def named_fields(values: Mapping[str, Value]) -> tuple[dict[str, float], datetime | None]:
    """The named fields present in `values` (base units) and the gas reading's own timestamp."""
    fields: dict[str, float] = {}
    channels: list[tuple[str, Value]] = []
    for ref, val in values.items():
        kind = _kind(ref)
        if kind is None:
            continue
        v = val.value
        if isinstance(v, str) or v is None:
            continue
        if isinstance(kind, FieldSpec):
            if kind.name not in fields:
                unit = val.unit
                if unit is None or unit == kind.unit:
                    fields[kind.name] = float(v)
                else:
                    converted = convert(v, unit, kind.unit)
                    if converted is not None:
                        fields[kind.name] = converted
        else:
            channels.append((kind, val))
    if "total_consumption" not in fields and "total_consumption_day" in fields:
        fields["total_consumption"] = fields["total_consumption_day"] + fields.get(
            "total_consumption_night", 0.0
        )
    if "total_injection" not in fields and "total_injection_day" in fields:
        fields["total_injection"] = fields["total_injection_day"] + fields.get(
            "total_injection_night", 0.0
        )
    gas_time = None
    if channels:
        for name, (value, at) in _mbus(values, channels).items():
            fields[name] = value
            if name == GAS_FIELD.name:
                gas_time = at
    return fields, gas_time


def mbus_readings(values: Mapping[str, Value]) -> dict[str, tuple[float, datetime | None]]:
    """Gas, water and heat from the M-Bus channels: field name -> (value in the field's unit, its own time)."""
    channels = [(k, v) for ref, v in values.items() if isinstance(k := _kind(ref), str)]
    return _mbus(values, channels) if channels else {}


def _mbus(values: Mapping[str, Value], channels: list[tuple[str, Value]]
          ) -> dict[str, tuple[float, datetime | None]]:
    """One reading per M-Bus field, from the first channel holding a real reading of that kind.

    A channel's kind is its device type (0-n:24.1.0); without one, its unit (m3 gas, GJ heat).
    An empty slot (value 0 with no date, a 1970/2070 date or no unit) counts as absent."""
    out: dict[str, tuple[float, datetime | None]] = {}
    for prefix, val in channels:
        v = val.value
        if isinstance(v, str) or v is None:
            continue
        at = val.timestamp
        if at is not None and at.year in _PLACEHOLDER_YEARS:
            at = None
        if v == 0 and (at is None or val.unit is None):
            continue  # an empty slot, not a meter reading 0
        dtype = values.get(prefix + "24.1.0")
        spec: FieldSpec | None
        if dtype is not None:
            spec = MBUS_DEVICE_TYPES.get(_as_int(dtype.value) or -1)
        else:
            spec = _UNIT_FIELD.get((val.unit or "").lower())
        if spec is None or spec.name in out:
            continue
        number = convert(float(v), val.unit, spec.unit)
        if number is None:
            continue
        out[spec.name] = (number, at)
    return out


def _as_int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
