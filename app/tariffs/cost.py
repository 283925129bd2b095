"""Cost of energy use under one tariff: pure (quarters and month peaks in, money out).

This is the interface the store's query layer (--report, REST, MCP) calls; the tariffs work
fills in dynamic prices, the capacity tariff, projections and comparison behind it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime

from app.tariffs.settings import TariffConfig


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


@dataclass(frozen=True, slots=True)
class Cost:
    """Money for one period, by part; export is negative (income)."""

    total: float = 0.0
    import_: float = 0.0
    export: float = 0.0
    capacity: float = 0.0
    fixed: float = 0.0
    gas: float = 0.0

    def as_dict(self) -> dict[str, float]:
        """The JSON shape of `--report --json` and the API: total, import, export, capacity, fixed, gas."""
        return {"total": round(self.total, 4), "import": round(self.import_, 4), "export": round(self.export, 4),
                "capacity": round(self.capacity, 4), "fixed": round(self.fixed, 4), "gas": round(self.gas, 4)}


class Pricing:
    """One tariff ready to price periods (a prices file is loaded once, here)."""

    def __init__(self, tariff: TariffConfig) -> None:
        self.tariff = tariff

    @property
    def name(self) -> str:
        """The tariff's name ("" for [tariff])."""
        return self.tariff.name

    def cost(self, quarters: Iterable[QuarterUse], start: datetime, end: datetime,
             peaks: Sequence[MonthPeak] = ()) -> Cost:
        """Cost of the quarters in [start, end) (aware datetimes, local period bounds).

        Energy and gas at the tariff's prices; fixed fees and the capacity tariff are spread per
        local day of the period (to be completed by the tariffs work)."""
        t = self.tariff
        imp = exp = gas = 0.0
        for q in quarters:
            if start <= q.start < end:
                imp += q.import_kwh_t1 * t.import_price_t1 + q.import_kwh_t2 * t.import_price_t2
                exp -= q.export_kwh_t1 * t.export_price_t1 + q.export_kwh_t2 * t.export_price_t2
                gas += q.gas_m3 * t.gas_price
        return Cost(total=imp + exp + gas, import_=imp, export=exp, gas=gas)
