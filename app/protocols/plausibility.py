"""Plausibility gate for decoded readings of every meter kind (pure: readings in, verdicts out).

A reading is implausible when
- it carries no value at all;
- a voltage, current or power lies outside physical bounds: voltage 0..5 V (a dead or unmeasured
  phase) or 80..300 V, current up to max_power / 230 V either way, power 0..max_power;
- a cumulative counter (energy, gas) goes backwards, or an energy counter rises faster than
  max_power allows over the time since the last accepted reading (+ 10 Wh of rounding);
- active power exceeds the apparent power V x I of the phases, or the apparent power is above
  2.3 kVA at a power factor below 0.2 (a house draws no such reactive load);
- the meter's clock steps back more than 10 s, or jumps ahead: for a meter keeping real time, its
  clock offset (meter time - receive time) rises more than 10 s above the highest offset seen
  (readings that arrive late, in a batch or after a stall, only lower the offset, so they never
  count as a jump); for a sped-up source (a simulator: pace measured over 5 s or more), more than
  10 s + 1 s of receive time at its pace + 10 % beyond what its pace allows since the last reading;
  a replay checks meter time only;
- the meter id changes, a named field of the last accepted reading is missing, or a DLMS push's
  OBIS list differs.

The relational checks compare with the last accepted reading. When 3 readings in a row fail them
but agree with each other (a meter replaced, a counter reset, a clock set), the newest becomes
the new reference: a real change is believed after 3 readings, a corrupted frame never.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.obis import ENERGY_FIELDS, FIELD_UNITS
from app.records import Reading

DEFAULT_MAX_POWER_W = 3 * 63 * 230.0  # a 3 x 63 A connection at 230 V: 43.47 kW
MAX_VOLTAGE_V = 300.0
MIN_VOLTAGE_V = 80.0  # a live phase; up to DEAD_PHASE_V an absent or unmeasured one (IT grids)
DEAD_PHASE_V = 5.0
DEAD_PHASE_MAX_A = 0.5
NOMINAL_VOLTAGE_V = 230.0
ENERGY_SLACK_KWH = 0.010
CLOCK_JUMP_S = 10.0
SPED_UP_PACE = 1.5  # a meter clock running this much faster than real time is a simulated source
PACE_WINDOW_S = 5.0  # receive time over which the meter clock's pace is measured before it is checked
MIN_POWER_FACTOR = 0.2  # below this, only up to MIN_PF_ABOVE_KVA of apparent power is believed
MIN_PF_ABOVE_KVA = 2.3
REBASELINE_AFTER = 3
_POWER = frozenset(name for name, unit in FIELD_UNITS.items() if unit == "kW")
_VOLTAGE = frozenset(name for name, unit in FIELD_UNITS.items() if unit == "V")
_CURRENT = frozenset(name for name, unit in FIELD_UNITS.items() if unit == "A")


def bounds_problem(fields: dict[str, float], max_power_w: float, apparent: bool = True) -> str:
    """Why a reading's instantaneous values are physically impossible ('' when they are not)."""
    max_kw = max_power_w / 1000.0
    max_a = max_power_w / NOMINAL_VOLTAGE_V
    for name, value in fields.items():
        if value != value:  # NaN
            return f"{name} is not a number"
        if name in _POWER and not 0.0 <= value <= max_kw:
            return f"{name} = {value:g} kW outside 0..{max_kw:g} kW (max_power)"
        if name in _VOLTAGE and not (0.0 <= value <= DEAD_PHASE_V or MIN_VOLTAGE_V <= value <= MAX_VOLTAGE_V):
            return f"{name} = {value:g} V: neither a dead phase nor {MIN_VOLTAGE_V:g}..{MAX_VOLTAGE_V:g} V"
        if name in _CURRENT and not -max_a <= value <= max_a:  # some meters sign the current by direction
            return f"{name} = {value:g} A outside -{max_a:g}..{max_a:g} A"
        if name in ENERGY_FIELDS and value < 0.0:
            return f"{name} = {value:g} is negative"
    return apparent_problem(fields) if apparent else ""


_PHASES = (("l1_voltage", "l1_current"), ("l2_voltage", "l2_current"), ("l3_voltage", "l3_current"))


def apparent_problem(fields: dict[str, float]) -> str:
    """Active power above the apparent power V x I of the phases (when the reading has both) is impossible."""
    phases = [(fields[v], fields[i]) for v, i in _PHASES if v in fields and i in fields]
    if not phases:
        return ""
    if any(v <= DEAD_PHASE_V and abs(i) > DEAD_PHASE_MAX_A for v, i in phases):
        return ""  # a phase with current but no voltage: IT grid metering (Aron), V x I says nothing
    apparent_kva = sum(v * abs(i) for v, i in phases) / 1000.0
    for name in ("actual_total_consumption", "actual_total_injection"):
        active = fields.get(name)
        if active is not None and active > apparent_kva * 1.1 + 0.1:  # + 10 % and 100 W of rounding
            return f"{name} = {active:g} kW exceeds V x I = {apparent_kva:g} kVA"
    if "actual_total_consumption" in fields or "actual_total_injection" in fields:
        active = fields.get("actual_total_consumption", 0.0) + fields.get("actual_total_injection", 0.0)
        if apparent_kva > max(MIN_PF_ABOVE_KVA, active / MIN_POWER_FACTOR):
            return (f"V x I = {apparent_kva:g} kVA with {active:g} kW active: "
                    f"power factor below {MIN_POWER_FACTOR:g}")
    return ""


@dataclass(frozen=True, slots=True)
class _Ref:
    """What a later reading is compared with."""

    meter_id: str
    meter_time: datetime | None
    received: datetime
    counters: dict[str, float]
    names: frozenset[str]  # the named fields it has
    refs: frozenset[str] | None  # a DLMS push's OBIS references (a meter pushes the same list each time)


def _ref(reading: Reading) -> _Ref:
    counters = {k: v for k, v in reading.fields.items() if k in ENERGY_FIELDS}
    refs = frozenset(reading.values) if reading.protocol == "dlms" else None
    return _Ref(reading.meter_id, reading.meter_time, reading.received, counters, frozenset(reading.fields), refs)


def relation_problem(ref: _Ref, new: _Ref, max_power_w: float, pace: float | None = 1.0,
                     offset_max_s: float | None = None) -> str:
    """Why `new` cannot follow `ref` ('' when it can).

    `pace` is how fast the meter clock has been running against the receive clock (1 for a real meter,
    more for a simulated or sped-up source); None while unknown, or for a replay: then only meter time counts.
    `offset_max_s` is the highest meter-minus-receive offset of the accepted readings (real-time meters).
    """
    if ref.meter_id and new.meter_id and new.meter_id != ref.meter_id:
        return f"meter id changed from {ref.meter_id!r} to {new.meter_id!r}"
    missing = ref.names - new.names
    if missing:
        return f"{', '.join(sorted(missing))} missing (in the previous reading)"
    if ref.refs is not None and new.refs is not None and new.refs != ref.refs:
        odd = sorted(new.refs ^ ref.refs)[:3]
        return f"OBIS list differs from the previous push ({', '.join(odd)})"
    if ref.meter_time is not None and new.meter_time is None:
        return "the meter's date-time is missing (in the previous reading)"
    wall_s = (new.received - ref.received).total_seconds()
    if ref.meter_time is not None and new.meter_time is not None:
        meter_s = (new.meter_time - ref.meter_time).total_seconds()
        if meter_s < -CLOCK_JUMP_S:
            return f"meter clock jumped {meter_s:+.0f} s in {wall_s:.0f} s"
        if pace is not None and pace < SPED_UP_PACE:
            if offset_max_s is not None:
                ahead_s = (new.meter_time - new.received).total_seconds() - offset_max_s
                if ahead_s > CLOCK_JUMP_S:
                    return f"meter clock jumped {ahead_s:+.0f} s ahead of the receive clock"
        elif pace is not None:
            expected_s = (max(wall_s, 0.0) + 1.0) * pace  # + 1 s: readings that arrive together
            if meter_s - expected_s > CLOCK_JUMP_S + 0.1 * expected_s:
                return f"meter clock jumped {meter_s:+.0f} s in {wall_s:.0f} s"
        elapsed_s = max(meter_s, 0.0)
    else:
        elapsed_s = max(wall_s, 0.0)
    max_kwh = max_power_w / 1000.0 * elapsed_s / 3600.0 + ENERGY_SLACK_KWH
    for name, value in new.counters.items():
        old = ref.counters.get(name)
        if old is None:
            continue
        if value < old - 1e-9:
            return f"{name} went backwards from {old:g} to {value:g}"
        if name != "total_gas_consumption" and value - old > max_kwh:
            return f"{name} rose {value - old:g} kWh in {elapsed_s:.0f} s (more than max_power allows)"
    return ""


class PlausibilityGate:
    """Judges each reading against physics and the last accepted reading; `check` returns why not."""

    def __init__(self, max_power_w: float = DEFAULT_MAX_POWER_W, check_clock: bool = True,
                 check_apparent: bool = True) -> None:
        """`check_apparent`: compare power with V x I (off where V and I are one phase's of a 3-phase total)."""
        self.max_power_w = max_power_w
        self.check_clock = check_clock
        self.check_apparent = check_apparent
        self.rebaselined = 0
        self._ref: _Ref | None = None
        self._candidate: _Ref | None = None
        self._run = 0
        self._first: _Ref | None = None  # the first accepted reading since the reference was (re)set
        self._accepted = 0
        self._offset_max_s: float | None = None  # highest meter - receive time of the accepted readings

    def pace(self) -> float | None:
        """Meter seconds per receive second over the accepted readings (at least 1); None while unknown."""
        first, last = self._first, self._ref
        if not self.check_clock or first is None or last is None or self._accepted < 3:
            return None
        if first.meter_time is None or last.meter_time is None:
            return None
        wall_s = (last.received - first.received).total_seconds()
        if wall_s < PACE_WINDOW_S:
            return None
        return max(1.0, (last.meter_time - first.meter_time).total_seconds() / wall_s)

    def _accept(self, new: _Ref, restart: bool) -> None:
        if restart or self._first is None:
            self._first, self._accepted, self._offset_max_s = new, 0, None
        self._ref, self._candidate, self._run = new, None, 0
        self._accepted += 1
        if new.meter_time is not None:
            offset_s = (new.meter_time - new.received).total_seconds()
            if self._offset_max_s is None or offset_s > self._offset_max_s:
                self._offset_max_s = offset_s

    def check(self, reading: Reading) -> str:
        """'' when the reading is plausible (it becomes the reference), else the reason it is not."""
        if not reading.values:
            return "reading carries no value"
        why = bounds_problem(reading.fields, self.max_power_w, self.check_apparent)
        if why:
            return why
        new = _ref(reading)
        if self._ref is None:
            self._accept(new, restart=True)
            return ""
        pace = self.pace()
        why = relation_problem(self._ref, new, self.max_power_w, pace, self._offset_max_s)
        if not why:
            self._accept(new, restart=False)
            return ""
        if self._candidate is not None and not relation_problem(self._candidate, new, self.max_power_w, pace,
                                                                self._offset_max_s):
            self._run += 1
        else:
            self._run = 1
        self._candidate = new
        if self._run >= REBASELINE_AFTER:
            self._accept(new, restart=True)
            self.rebaselined += 1
            return ""
        return why
