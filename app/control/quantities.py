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

from collections.abc import Callable, Iterable, Mapping

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


# ---------------------------------------------------------------- several meters
#
#     <meter>.power    that meter's import - export in W      <meter>.import / <meter>.export   in W
#     <meter>.voltage  its (L1) voltage in V                   <meter>.current                    its (L1) current in A
#     building         sum of the grid and building meters' power (import - export; a grid meter's is the net)
#     solar            sum of the solar meters' production in W (|power|: however the meter is wired)
#     available        [site] grid_capacity + solar - building
#
# A meter that is offline takes away its own quantities and every sum it is part of (absent: a condition
# on them is false, and the relays naming them go to their safe state: see `depends_on`).

METER_QUANTITIES: dict[str, str] = {"power": "W", "import": "W", "export": "W", "voltage": "V", "current": "A"}
COMBINED: dict[str, str] = {"building": "W", "solar": "W", "available": "W"}
_CONSUMERS = ("grid", "building")


def meter_quantities(reading: Reading) -> dict[str, float]:
    """One meter's own quantities (the `<meter>.` ones) from its reading."""
    f = reading.fields
    out: dict[str, float] = {}
    imp, exp = f.get("actual_total_consumption"), f.get("actual_total_injection")
    if imp is not None:
        out["import"] = float(imp) * 1000.0
    if exp is not None:
        out["export"] = float(exp) * 1000.0
    if imp is not None or exp is not None:
        out["power"] = out.get("import", 0.0) - out.get("export", 0.0)
    if (v := f.get("l1_voltage")) is not None:
        out["voltage"] = float(v)
    if (a := f.get("l1_current")) is not None:
        out["current"] = float(a)
    return out


def combined(roles: Mapping[str, str], latest: Mapping[str, Mapping[str, float]],
             grid_capacity_w: float | None) -> dict[str, float]:
    """The `<meter>.` quantities of every meter in `latest` (the online ones) and the sums over `roles`
    (every configured meter: name -> role); a sum is absent while one of its meters is missing."""
    out: dict[str, float] = {}
    for name, q in latest.items():
        for k, v in q.items():
            out[f"{name}.{k}"] = v
    building = _sum(roles, latest, _CONSUMERS, lambda p: p)
    solar = _sum(roles, latest, ("solar",), abs)
    if building is not None:
        out["building"] = building
    if solar is not None:
        out["solar"] = solar
    if grid_capacity_w is not None and building is not None and solar is not None:
        out["available"] = grid_capacity_w + solar - building
    return out


def _sum(roles: Mapping[str, str], latest: Mapping[str, Mapping[str, float]], which: tuple[str, ...],
         f: Callable[[float], float]) -> float | None:
    total = 0.0
    for name, role in roles.items():
        if role not in which:
            continue
        power = latest.get(name, {}).get("power")
        if power is None:
            return None
        total += f(power)
    return total


def depends_on(quantity: str, roles: Mapping[str, str], main: str) -> frozenset[str]:
    """The meters a quantity needs (`main`: the [meter] meter's name, which plain quantities mean)."""
    if "." in quantity:
        return frozenset({quantity.split(".", 1)[0]})
    if quantity == "building":
        return frozenset(n for n, r in roles.items() if r in _CONSUMERS)
    if quantity == "solar":
        return frozenset(n for n, r in roles.items() if r == "solar")
    if quantity == "available":
        return frozenset(n for n, r in roles.items() if r in (*_CONSUMERS, "solar"))
    return frozenset({main})
