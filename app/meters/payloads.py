"""Payloads of HTTP and MQTT meters -> quantities in base units (pure; shared by both kinds).

    2500                                        a plain number: the topic's own quantity, in its unit
    {"power_kw": 25.5, "voltage": 230.2}        the WAGO guide's names (and the alternates below)
    {"power": 2500, "unit": "W"}                a unit key beside a single power or energy value
    {"power": {"value": 2.5, "unit": "kW"}}     a value with its own unit
    {"state": "2500", "attributes": {"unit_of_measurement": "W"}}     Home Assistant's state object
    {"id": 0, "total_act_power": 2500.1, ...}   Shelly Gen2+ status/em:0 (W); emdata:0 totals in Wh

Keys are looked for at the top and in nested objects (the first found, breadth first), or at a JSON path
per quantity (`data.meters[0].power`). Quantities: power_w (signed, import positive), import_kwh,
export_kwh, voltage_v, current_a, power_factor, frequency_hz.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

QUANTITIES = ("power_w", "import_kwh", "export_kwh", "voltage_v", "current_a", "power_factor", "frequency_hz")
POWER_UNITS = {"w": 1.0, "kw": 1000.0, "mw": 1_000_000.0}
ENERGY_UNITS = {"wh": 0.001, "kwh": 1.0, "mwh": 1000.0}
# quantity -> (key, fixed factor to the base unit, or None: the configured/sent unit applies)
KEYS: dict[str, tuple[tuple[str, float | None], ...]] = {
    "power_w": (("power_kw", 1000.0), ("power_w", 1.0), ("power", None), ("activePower", None),
                ("active_power", None), ("total_act_power", 1.0), ("act_power", 1.0), ("apower", 1.0)),
    "import_kwh": (("total_kwh", 1.0), ("energy_kwh", 1.0), ("energy", None), ("totalEnergy", None),
                   ("total_energy", None), ("total_act", 0.001), ("total_act_energy", 0.001)),
    "export_kwh": (("export_kwh", 1.0), ("total_export_kwh", 1.0), ("energy_export", None),
                   ("totalEnergyExported", None), ("total_act_ret", 0.001), ("total_act_ret_energy", 0.001)),
    "voltage_v": (("voltage", 1.0), ("voltage_v", 1.0), ("a_voltage", 1.0)),
    "current_a": (("current", 1.0), ("current_a", 1.0), ("total_current", 1.0)),
    "power_factor": (("power_factor", 1.0), ("powerFactor", 1.0), ("pf", 1.0)),
    "frequency_hz": (("frequency", 1.0), ("frequency_hz", 1.0), ("freq", 1.0)),
}
_UNIT_KEYS = ("unit", "unit_of_measurement", "uom")
_PATH_RE = re.compile(r"^[A-Za-z_$][\w$-]*(?:\[\d+\])*(?:\.[A-Za-z_$][\w$-]*(?:\[\d+\])*)*$")
_MAX_DEPTH = 4


class PayloadError(ValueError):
    """A payload that gives no usable value; the message says why (never the whole payload)."""


def check_path(path: str) -> str:
    """A JSON path such as `data.meters[0].power` (ValueError otherwise)."""
    if not _PATH_RE.match(path):
        raise ValueError("expected a JSON path such as data.power or meters[0].power_kw")
    return path


def at_path(doc: Any, path: str) -> Any:
    """The value at `path` in `doc`, or None when any step is missing."""
    cur = doc
    for part in path.split("."):
        name, *idx = part.split("[")
        if not isinstance(cur, dict) or name not in cur:
            return None
        cur = cur[name]
        for i in idx:
            n = int(i.rstrip("]"))
            if not isinstance(cur, list) or n >= len(cur):
                return None
            cur = cur[n]
    return cur


def number(value: Any) -> float | None:
    """A finite number from a JSON value (numbers and numeric strings; None for unavailable/unknown)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value.strip().replace(",", ".") if value.count(",") == 1 and "." not in value else value)
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def scale_for(quantity: str, unit: str | None, power_unit: str = "W", energy_unit: str = "kWh") -> float:
    """The factor to the base unit for `quantity` given a sent unit (or the configured one)."""
    if quantity == "power_w":
        u = (unit or power_unit).strip().lower()
        if u not in POWER_UNITS:
            raise PayloadError(f"unknown power unit {unit!r} (W, kW, MW)")
        return POWER_UNITS[u]
    if quantity in ("import_kwh", "export_kwh"):
        u = (unit or energy_unit).strip().lower()
        if u not in ENERGY_UNITS:
            raise PayloadError(f"unknown energy unit {unit!r} (Wh, kWh, MWh)")
        return ENERGY_UNITS[u]
    return 1.0


def _value_and_unit(raw: Any, sibling_unit: str | None) -> tuple[float | None, str | None]:
    if isinstance(raw, dict):
        inner = raw.get("value", raw.get("state"))
        unit = next((raw[k] for k in _UNIT_KEYS if isinstance(raw.get(k), str)), None)
        attrs = raw.get("attributes")
        if unit is None and isinstance(attrs, dict) and isinstance(attrs.get("unit_of_measurement"), str):
            unit = attrs["unit_of_measurement"]
        return number(inner), unit
    return number(raw), sibling_unit


def _objects(doc: Any) -> list[dict[str, Any]]:
    """`doc` and its nested objects, breadth first (bounded depth)."""
    out: list[dict[str, Any]] = []
    level = [doc]
    for _ in range(_MAX_DEPTH):
        nxt: list[Any] = []
        for node in level:
            if isinstance(node, dict):
                out.append(node)
                nxt.extend(v for v in node.values() if isinstance(v, (dict, list)))
            elif isinstance(node, list):
                nxt.extend(v for v in node[:16] if isinstance(v, (dict, list)))
        level = nxt
        if not level:
            break
    return out


def from_json(doc: Any, power_unit: str = "W", energy_unit: str = "kWh", paths: dict[str, str] | None = None,
              only: str | None = None) -> dict[str, float]:
    """Quantities in a JSON document: at the configured paths, else under the known keys.

    `only`: the one quantity a topic carries (an MQTT topic_voltage); a Home Assistant state object or a
    `{"value": .., "unit": ..}` object is taken as that quantity."""
    found: dict[str, float] = {}
    paths = paths or {}
    for quantity, path in paths.items():
        v, unit = _value_and_unit(at_path(doc, path), None)
        if v is not None:
            _put(found, quantity, v * scale_for(quantity, unit, power_unit, energy_unit))
    if only is not None and isinstance(doc, dict) and only not in found and ("state" in doc or "value" in doc):
        v, unit = _value_and_unit(doc, None)
        if v is not None:
            _put(found, only, v * scale_for(only, unit, power_unit, energy_unit))
    objects = _objects(doc)
    for quantity, keys in KEYS.items():
        if quantity in found or quantity in paths:
            continue
        for obj in objects:
            sibling = next((obj[k] for k in _UNIT_KEYS if isinstance(obj.get(k), str)), None)
            hit = False
            for key, factor in keys:
                if key not in obj:
                    continue
                v, unit = _value_and_unit(obj[key], sibling if factor is None else None)
                if v is None:
                    continue
                if factor is None:
                    try:
                        factor = scale_for(quantity, unit, power_unit, energy_unit)
                    except PayloadError:
                        if unit is sibling:  # a unit key that belongs to another value
                            factor = scale_for(quantity, None, power_unit, energy_unit)
                        else:
                            raise
                hit = _put(found, quantity, v * factor)
                break
            if hit:
                break
    return found


def _put(found: dict[str, float], quantity: str, value: float) -> bool:
    """Keep a value only when it is still finite after scaling (1e305 kW is not a power)."""
    if math.isfinite(value):
        found[quantity] = value
        return True
    return False


def _finite(quantity: str, value: float) -> dict[str, float]:
    if not math.isfinite(value):
        raise PayloadError(f"{quantity} out of range after scaling")
    return {quantity: value}


def parse(payload: bytes, only: str | None = None, power_unit: str = "W", energy_unit: str = "kWh",
          paths: dict[str, str] | None = None) -> dict[str, float]:
    """One payload -> quantities; a plain number is `only`'s. PayloadError when nothing usable is in it."""
    found = _parse(payload, only, power_unit, energy_unit, paths)
    for quantity, v in found.items():
        if not math.isfinite(v):  # 1.8e305 kW is a number, but not after the unit's factor
            raise PayloadError(f"{quantity} out of range after unit conversion")
    return found


def _parse(payload: bytes, only: str | None, power_unit: str, energy_unit: str,
           paths: dict[str, str] | None) -> dict[str, float]:
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise PayloadError("not UTF-8 text") from None
    if not text:
        raise PayloadError("empty payload")
    plain = number(text)
    if plain is not None and text[0] not in "[{":
        if only is None:
            raise PayloadError("a plain number, but no quantity to give it to")
        return _finite(only, plain * scale_for(only, None, power_unit, energy_unit))
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        raise PayloadError(f"neither a number nor JSON ({len(text)} characters)") from None
    if not isinstance(doc, (dict, list)):
        v = number(doc)
        if v is None or only is None:
            raise PayloadError("a JSON value that is not a number" if v is None else
                               "a plain number, but no quantity to give it to")
        return _finite(only, v * scale_for(only, None, power_unit, energy_unit))
    found = from_json(doc, power_unit, energy_unit, paths, only)
    if not found:
        raise PayloadError("no known quantity in it (power_kw, power, activePower, total_kwh, energy, "
                           "totalEnergy, voltage, current, power_factor; or set a JSON path)")
    return found


def status(payload: bytes) -> bool | None:
    """An online/offline status payload -> True/False, None when it says neither."""
    text = payload.decode("utf-8", "replace").strip()
    low = text.lower().strip('"')
    if low in ("online", "true", "1", "on", "connected", "ok", "up"):
        return True
    if low in ("offline", "false", "0", "off", "disconnected", "lost", "down"):
        return False
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(doc, dict):
        for key in ("online", "connected", "status", "state"):
            v = doc.get(key)
            if isinstance(v, bool):
                return v
            if isinstance(v, str):
                return status(v.encode())
    return None
