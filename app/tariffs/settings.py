"""[tariff] and [tariff:NAME]: prices, fixed fees, the capacity tariff and gas."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.config import Section


@dataclass(frozen=True)
class TariffConfig:
    """One tariff ([tariff] has name "", [tariff:NAME] its NAME)."""

    name: str = ""
    currency: str = "EUR"
    import_price_t1: float = 0.0
    import_price_t2: float = 0.0
    export_price_t1: float = 0.0
    export_price_t2: float = 0.0
    prices_file: str = ""
    fixed_per_year: float = 0.0
    fixed_per_month: float = 0.0
    fixed_per_day: float = 0.0
    capacity_price: float = 0.0
    capacity_floor_kw: float = 2.5
    gas_price: float = 0.0


def parse_tariff(sec: Section, name: str) -> TariffConfig:
    """Build one tariff section (filled in by the tariffs work)."""
    return TariffConfig(name=name)
