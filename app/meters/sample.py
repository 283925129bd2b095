"""What every meter kind hands back: a `Sample` of plain quantities, turned into a `Reading` here.

    Sample(power_w=-2150.0, import_kwh=1234.5, export_kwh=321.0, voltage_v=231.2, current_a=9.3)
      -> Reading(meter="pv", role="solar", fields={actual_total_consumption: 0.0,
                 actual_total_injection: 2.15, total_consumption: 1234.5, ...})

`power_w` is signed: positive is import (drawn from the grid through this meter), negative export.
A meter wired the other way round (a PV inverter's production counted as import) sets `invert`.
Power factor and frequency have no named field: they travel in `values` under their OBIS codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.errors import SmartmeterError
from app.records import Reading, Value, make_value


class MeterError(SmartmeterError):
    """One poll of a meter failed (no answer, an exception response, a bad value); the message is the reason."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One poll's quantities in base units; None where the meter did not give it."""

    power_w: float | None = None
    import_kwh: float | None = None
    export_kwh: float | None = None
    voltage_v: float | None = None
    current_a: float | None = None
    power_factor: float | None = None
    frequency_hz: float | None = None
    meter_time: datetime | None = None


QUANTITIES = ("power_w", "import_kwh", "export_kwh", "voltage_v", "current_a", "power_factor", "frequency_hz")
_OBIS = {  # quantity -> (OBIS code, unit) in `values`
    "power_w": ("1-0:16.7.0", "kW"),
    "import_kwh": ("1-0:1.8.0", "kWh"),
    "export_kwh": ("1-0:2.8.0", "kWh"),
    "voltage_v": ("1-0:32.7.0", "V"),
    "current_a": ("1-0:31.7.0", "A"),
    "power_factor": ("1-0:13.7.0", None),
    "frequency_hz": ("1-0:14.7.0", "Hz"),
}


def to_reading(sample: Sample, meter: str, role: str, protocol: str, seq: int, received: datetime,
               invert: bool = False, header: str = "") -> Reading:
    """The Reading every sink and the controller understand (named fields in kW, kWh, V, A)."""
    fields: dict[str, float] = {}
    values: dict[str, Value] = {}
    power = sample.power_w
    if power is not None:
        if invert:
            power = -power
        fields["actual_total_consumption"] = max(power, 0.0) / 1000.0
        fields["actual_total_injection"] = max(-power, 0.0) / 1000.0
        values["1-0:16.7.0"] = make_value(power / 1000.0, "kW")
    imp, exp = sample.import_kwh, sample.export_kwh
    if invert:
        imp, exp = exp, imp
    if imp is not None:
        fields["total_consumption"] = imp
    if exp is not None:
        fields["total_injection"] = exp
    if sample.voltage_v is not None:
        fields["l1_voltage"] = sample.voltage_v
    if sample.current_a is not None:
        fields["l1_current"] = sample.current_a
    quantities = {"import_kwh": imp, "export_kwh": exp, "voltage_v": sample.voltage_v,
                  "current_a": sample.current_a, "power_factor": sample.power_factor,
                  "frequency_hz": sample.frequency_hz}
    for name, v in quantities.items():
        if v is not None:
            code, unit = _OBIS[name]
            values[code] = make_value(v, unit)
    return Reading(seq=seq, protocol=protocol, meter_id=meter, header=header, meter_time=sample.meter_time,
                   received=received, values=values, fields=fields, meter=meter, role=role)
