"""The quantities relay conditions compare, taken from one Reading, in base units (W, A, V).

    import       actual_total_consumption (1-0:1.7.0) in W
    export       actual_total_injection   (1-0:2.7.0) in W
    net          import - export in W (export taken as 0 on meters that send none)
    import_lN    actual_lN_consumption in W      export_lN   actual_lN_injection in W
    current_lN   lN_current in A                 voltage_lN  lN_voltage in V
    demand       current_average_demand (1-0:1.4.0) in W
    <field>      every named field of app.obis.FIELDS by name; kW fields in W, the rest as is

A quantity the reading does not carry is absent from the dict (its conditions are false).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from app.obis import FIELD_UNITS
from app.records import Reading

_KW_FIELDS = frozenset(name for name, unit in FIELD_UNITS.items() if unit == "kW")
_ALIASES: dict[str, str] = {
    "import": "actual_total_consumption",
    "export": "actual_total_injection",
    "demand": "current_average_demand",
}
for _n in (1, 2, 3):
    _ALIASES |= {
        f"import_l{_n}": f"actual_l{_n}_consumption",
        f"export_l{_n}": f"actual_l{_n}_injection",
        f"current_l{_n}": f"l{_n}_current",
        f"voltage_l{_n}": f"l{_n}_voltage",
    }


def quantities(reading: Reading, names: Iterable[str] | None = None) -> dict[str, float]:
    """The quantities `names` (default: every one a condition may name) this reading carries, in base units."""
    if names is not None:
        return {name: v for name in names if (v := _one(reading.fields, name)) is not None}
    out: dict[str, float] = {}
    for name, value in reading.fields.items():
        out[name] = float(value) * 1000.0 if name in _KW_FIELDS else float(value)
    for alias, name in _ALIASES.items():
        if name in out:
            out[alias] = out[name]
    if "import" in out:
        out["net"] = out["import"] - out.get("export", 0.0)
    elif "export" in out:
        out["net"] = -out["export"]
    return out


def _one(fields: Mapping[str, float], name: str) -> float | None:
    """One quantity from the named fields, or None when the reading does not carry it."""
    if name == "net":
        imp, exp = fields.get("actual_total_consumption"), fields.get("actual_total_injection")
        if imp is None and exp is None:
            return None
        return ((imp or 0.0) - (exp or 0.0)) * 1000.0
    field = _ALIASES.get(name, name)
    value = fields.get(field)
    if value is None:
        return None
    return float(value) * 1000.0 if field in _KW_FIELDS else float(value)
