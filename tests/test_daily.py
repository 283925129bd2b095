"""Daily minimum run time: late enough to finish by the deadline, or in the cheapest register / price slot."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from app.config import ControlConfig, RelayConfig
from app.control.capacity import CapacityConfig
from app.control.conditions import parse_condition
from app.control.daily import DailyRun, MinDaily, parse_min_daily
from app.control.policy import Policy
from app.tariffs.prices import parse_prices
from app.tariffs.settings import TariffConfig
from tests.house import TZ, House

DAY = datetime(2026, 1, 13, 0, 0, 5, tzinfo=TZ)  # a dark Tuesday: the export rule never holds


def boiler(**kw: object) -> RelayConfig:
    return RelayConfig(name="boiler", pin="", on_when=parse_condition("export > 1500 W for 60 s"),
                       min_daily=parse_min_daily("2 h by 21:00"), **kw)  # type: ignore[arg-type]


def run_day(pol: Policy, register: int | None = None, hours: float = 24.0, step_s: float = 10.0) -> House:
    house = House(pol, {"boiler": 2.4}, lambda t: 0.3, DAY, register=register)
    while house.t < DAY + timedelta(hours=hours):
        if register is not None:
            local = house.t.astimezone(TZ)
            house.register = 2 if local.hour < 7 or local.hour >= 22 else 1
        house.advance(step_s)
    return house


def test_parse() -> None:
    assert parse_min_daily("2 h by 21:00") == MinDaily(7200.0, datetime(2000, 1, 1, 21).time())
    assert parse_min_daily("") is None
    for bad in ("2 h", "two hours by 21:00", "2 h by 25:00", "5 h by 03:00"):
        with pytest.raises(ValueError):
            parse_min_daily(bad)


def test_without_a_tariff_it_runs_as_late_as_possible_and_finishes_by_the_deadline() -> None:
    house = run_day(Policy(ControlConfig(settle=0.0, stale_after=30.0), (boiler(),), TZ))
    ons = [e for e in house.events if e.state and e.kind == "auto"]
    offs = [e for e in house.events if not e.state and e.kind == "auto"]
    assert ons[0].at.astimezone(TZ).strftime("%H:%M") == "19:00"
    assert ons[0].reason == "daily minimum: 2 h left before 21:00"
    assert offs[0].at.astimezone(TZ).strftime("%H:%M") == "21:00"
    assert len(ons) == 1


def test_a_reason_counts_what_is_left() -> None:
    run = DailyRun(MinDaily(7200.0, datetime(2000, 1, 1, 21).time()), TZ)
    t = DAY.replace(hour=18)
    run.update(t, False)
    run.update(t + timedelta(minutes=40), True)
    assert run.due(DAY.replace(hour=19, minute=40)) == "daily minimum: 1 h 20 min left before 21:00"
    assert run.due(DAY.replace(hour=18, minute=0)) is None
    assert run.due(DAY.replace(hour=21, minute=0)) is None  # past the deadline: the rule alone decides


def test_with_day_and_night_registers_it_runs_in_the_cheaper_night_register_after_midnight() -> None:
    tariff = TariffConfig(import_price_t1=0.32, import_price_t2=0.24)
    house = run_day(Policy(ControlConfig(settle=0.0, stale_after=30.0), (boiler(),), TZ, tariff=tariff), register=2)
    ons = [e for e in house.events if e.state and e.kind == "auto"]
    assert ons[0].at.astimezone(TZ).strftime("%H:%M") == "00:00"
    assert ons[0].reason == "daily minimum: 2 h left before 21:00 (tariff 2, the cheaper register)"
    off = next(e for e in house.events if not e.state and e.kind == "auto")
    assert off.at.astimezone(TZ).strftime("%H:%M") == "02:00"


def test_with_dynamic_prices_it_runs_in_the_cheapest_slots_before_the_deadline() -> None:
    lines = [f"2026-01-13 {h:02d}:00 ; {0.30 if h not in (3, 14) else 0.05:.2f}" for h in range(24)]
    table = parse_prices("\n".join(lines) + "\n2026-01-14 00:00 ; 0.30\n", TZ)
    tariff = TariffConfig(import_price_t1=0.3, import_price_t2=0.3, prices=table)
    house = run_day(Policy(ControlConfig(settle=0.0, stale_after=30.0), (boiler(),), TZ, tariff=tariff), hours=23.5)
    ons = [e.at.astimezone(TZ).strftime("%H:%M") for e in house.events if e.state and e.kind == "auto"]
    offs = [e.at.astimezone(TZ).strftime("%H:%M") for e in house.events if not e.state and e.kind == "auto"]
    assert ons == ["03:00", "14:00"] and offs == ["04:00", "15:00"]


def test_min_off_hours_and_peak_shaving_are_respected() -> None:
    cfg = boiler(min_off=1800.0, hours=(datetime(2000, 1, 1, 20).time(), datetime(2000, 1, 1, 23).time()),
                 sheddable=True)
    pol = Policy(ControlConfig(settle=0.0, stale_after=30.0), (cfg,), TZ,
                 capacity=CapacityConfig(True, 2.5, False, 0.2, 60.0))
    house = run_day(pol, hours=22.0)
    ons = [e for e in house.events if e.state and e.kind == "auto"]
    assert all(e.at.astimezone(TZ).hour >= 20 for e in ons)  # not before its hours
    assert any(e.reason.startswith("shed:") for e in house.events)  # 2.7 kW > 2.3 kW: shed even when due
    for q, kw in house.averages_kw().items():
        assert kw <= 2.5, q
