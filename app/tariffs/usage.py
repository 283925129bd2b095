"""The records cost is computed from: a quarter's energy per register, a month's peak."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime


@dataclass(frozen=True, slots=True)
class QuarterUse:
    """One local clock quarter of one meter: energy per tariff register, gas."""

    start: datetime  # aware: the start of a local clock quarter (:00/:15/:30/:45)
    import_kwh_t1: float
    import_kwh_t2: float
    export_kwh_t1: float
    export_kwh_t2: float
    gas_m3: float = 0.0


@dataclass(frozen=True, slots=True)
class MonthPeak:
    """A local month's highest quarter-hour average import (unfloored), as billed where known."""

    month: date  # the first day of the local month
    kw: float
    at: datetime | None = None
