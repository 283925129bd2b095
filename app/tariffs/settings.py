"""[tariff] and [tariff:NAME]: prices, fixed fees, the capacity tariff and gas."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from app.errors import ConfigError

if TYPE_CHECKING:
    from app.config import Section
    from app.tariffs.prices import PriceTable

_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_KW_RE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(kw|w)?\s*$", re.I)


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
    # the prices file, loaded and checked at config load (see `with_prices`); None without a file
    prices: PriceTable | None = field(default=None, repr=False, compare=False)

    @property
    def section(self) -> str:
        """The INI section this tariff came from."""
        return f"tariff:{self.name}" if self.name else "tariff"

    @property
    def priced(self) -> bool:
        """True when the tariff sets any price or fee (an absent [tariff] prices nothing)."""
        return bool(self.prices_file) or any(
            getattr(self, k) for k in ("import_price_t1", "import_price_t2", "export_price_t1", "export_price_t2",
                                       "fixed_per_year", "fixed_per_month", "fixed_per_day", "capacity_price",
                                       "gas_price"))


def parse_kw(text: str) -> float:
    """`2.5 kW`, `2500 W` or a bare number of kW -> kW."""
    m = _KW_RE.match(text)
    if m is None:
        raise ValueError("expected a power such as '2.5 kW' or '2500 W'")
    v = float(m.group(1))
    return v / 1000.0 if (m.group(2) or "kw").lower() == "w" else v


def _price(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise ValueError("expected a number (a price per unit, e.g. 0.32)") from None
    if not math.isfinite(v):
        raise ValueError("expected a finite number")
    return v


def _fee(s: str) -> float:
    v = _price(s)
    if v < 0:
        raise ValueError("must not be negative")
    return v


def _currency(s: str) -> str:
    if not _CURRENCY_RE.match(s):
        raise ValueError("expected a three-letter currency code such as EUR")
    return s.upper()


def _pair(sec: Section, both: str, t1: str, t2: str) -> tuple[float, float]:
    """`both` sets t1 and t2 at once; giving `both` and either register key is an error."""
    v1 = sec.get(t1, None, _price)
    v2 = sec.get(t2, None, _price)
    vb = sec.get(both, None, _price)
    if vb is not None:
        other = t1 if v1 is not None else t2 if v2 is not None else ""
        if other:
            raise sec.error(both, sec.items[both].strip(),
                            f"sets both {t1} and {t2}; give either {both} or {t1}/{t2}, not both "
                            f"({other} = {sec.items[other].strip()})")
        return vb, vb
    return (v1 or 0.0), (v2 or 0.0)


def parse_tariff(sec: Section, name: str) -> TariffConfig:
    """Build one tariff section; the prices file is loaded later by `with_prices` (it needs [meter] timezone)."""
    if sec.name != "tariff" and not _NAME_RE.match(name):
        raise ConfigError(f"[{sec.name}]: tariff name {name!r} may only hold letters, digits, _ and -", sec.name)
    imp1, imp2 = _pair(sec, "import_price", "import_price_t1", "import_price_t2")
    exp1, exp2 = _pair(sec, "export_price", "export_price_t1", "export_price_t2")
    floor = sec.get("capacity_floor", 2.5, parse_kw)
    if floor < 0:
        raise sec.error("capacity_floor", sec.items["capacity_floor"].strip(), "must not be negative")
    return TariffConfig(
        name=name,
        currency=sec.get("currency", "EUR", _currency),
        import_price_t1=imp1,
        import_price_t2=imp2,
        export_price_t1=exp1,
        export_price_t2=exp2,
        prices_file=sec.text("prices_file", ""),
        fixed_per_year=sec.get("fixed_per_year", 0.0, _price),
        fixed_per_month=sec.get("fixed_per_month", 0.0, _price),
        fixed_per_day=sec.get("fixed_per_day", 0.0, _price),
        capacity_price=sec.get("capacity_price", 0.0, _fee),
        capacity_floor_kw=floor,
        gas_price=sec.get("gas_price", 0.0, _price),
    )


def with_prices(tariff: TariffConfig, timezone: str) -> TariffConfig:
    """The tariff with its prices file loaded (local times in it are in `timezone`); errors are ConfigErrors."""
    if not tariff.prices_file:
        return tariff
    from app.tariffs.prices import load_prices

    try:
        table = load_prices(tariff.prices_file, ZoneInfo(timezone), tariff.currency)
    except ConfigError as exc:
        raise ConfigError(f"[{tariff.section}] prices_file = {tariff.prices_file!r}: {exc}",
                          tariff.section, "prices_file") from None
    return replace(tariff, prices=table)


def resolve_tariffs(main: TariffConfig, named: Sequence[TariffConfig],
                    timezone: str) -> tuple[TariffConfig, tuple[TariffConfig, ...]]:
    """Check [tariff:NAME] names are unique and share one currency; load every prices file (once, at config load)."""
    seen: dict[str, str] = {}
    for t in named:
        key = t.name.lower()
        if key in seen:
            raise ConfigError(f"[tariff:{t.name}]: a tariff named {seen[key]!r} is already defined "
                              "(names must be unique, case-insensitively)", f"tariff:{t.name}")
        seen[key] = t.name
    ref = main if main.priced or not named else named[0]
    for t in named:
        if t.currency != ref.currency:
            raise ConfigError(f"[{t.section}] currency = {t.currency!r}: differs from [{ref.section}] currency = "
                              f"{ref.currency!r} (tariffs are compared with each other)", t.section, "currency")
    return with_prices(main, timezone), tuple(with_prices(t, timezone) for t in named)
