"""Daily minimum run time: late enough to finish by the deadline, or in the cheapest register / price slot."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

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


# ---------------------------------------------------------------- over a restart ([control] state_file)


def _feed(ctl: object, start: datetime, end: datetime, export_kw: Callable[[datetime], float] | float,
          mono0: float) -> list[tuple[str, bool, str]]:
    """Readings every 10 s; the switches they made as (local HH:MM, state, reason)."""
    from app.control.controller import Controller
    from app.records import Reading

    assert isinstance(ctl, Controller)
    out = []
    t, i = start, 0
    while t < end:
        r = Reading(i, "dsmr", "T", "/T", t, t, {}, {"actual_total_consumption": 0.3,
                                                     "actual_total_injection": export_kw(t) if callable(export_kw)
                                                     else export_kw})
        out += [(e.at.astimezone(TZ).strftime("%H:%M"), e.state, e.reason)
                for e in ctl.on_reading(r, mono0 + i * 10.0) if e.kind == "auto"]
        t += timedelta(seconds=10)
        i += 1
    return out


@pytest.mark.parametrize("clean_stop", [True, False])
def test_the_run_time_today_survives_a_restart_and_the_deadline_is_met_with_what_is_left(
        tmp_path: Path, clean_stop: bool, caplog: pytest.LogCaptureFixture) -> None:
    """Noon surplus runs the boiler ~1 h; the appliance restarts at 14:00 (stopped cleanly, or killed: then the last
    save, at most a minute old, counts); the evening run is the 1 h left, not 2 h."""
    from gpiozero.pins.mock import MockFactory

    from app.control.controller import Controller

    state = tmp_path / "control-state.json"
    relays = (replace(boiler(), pin="GPIO17"),)
    ctl = Controller(ControlConfig(settle=0.0, stale_after=30.0), relays, MockFactory(), TZ, state_file=str(state))
    ctl.start(0.0)
    noon = _feed(ctl, DAY.replace(hour=11, minute=59), DAY.replace(hour=12, minute=30), 3.0, 0.0)
    mid = json.loads(state.read_text())["daily"]["boiler"]["run_s"]  # saved while running, once a minute
    assert 1700.0 <= mid <= 1800.0
    noon += _feed(ctl, DAY.replace(hour=12, minute=30), DAY.replace(hour=13, minute=1),
                  lambda t: 3.0 if t < DAY.replace(hour=13) else 0.0, 1e4)  # surplus until 13:00
    assert [(hhmm, on) for hhmm, on, _ in noon] == [("12:00", True), ("13:00", False)]
    if clean_stop:
        ctl.close()
    else:
        ctl.bank.close()  # killed: nothing saved at the end (the pins are let go only so the test can go on)
    saved = json.loads(state.read_text())["daily"]["boiler"]
    assert saved["day"] == "2026-01-13" and 3540.0 <= saved["run_s"] <= 3600.0
    caplog.set_level("INFO", logger="app.control")
    again = Controller(ControlConfig(settle=0.0, stale_after=30.0), relays, MockFactory(), TZ, state_file=str(state))
    again.start(1e6)
    try:
        assert "run time so far restored" in caplog.text
        evening = _feed(again, DAY.replace(hour=14), DAY.replace(hour=21, minute=30), 0.0, 1e6)
    finally:
        again.close()
    assert evening == [("20:00", True, "daily minimum: 1 h left before 21:00"),
                       ("21:00", False, "export 0 W not > 1500 W")]  # not 19:00 with 2 h left
    assert json.loads(state.read_text())["daily"]["boiler"]["run_s"] >= 7200.0


def test_a_state_file_from_another_day_or_broken_counts_for_nothing(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from gpiozero.pins.mock import MockFactory

    from app.control.controller import Controller

    state = tmp_path / "control-state.json"
    relays = (replace(boiler(), pin="GPIO17"),)
    for text in ('{"daily": {"boiler": {"day": "2026-01-12", "run_s": 7000}}}', "{not json", ""):
        state.write_text(text)
        ctl = Controller(ControlConfig(settle=0.0, stale_after=30.0), relays, MockFactory(), TZ,
                         state_file=str(state))
        ctl.start(0.0)
        try:
            switches = _feed(ctl, DAY.replace(hour=18, minute=59), DAY.replace(hour=19, minute=1), 0.0, 0.0)
        finally:
            ctl.close()
        assert switches == [("19:00", True, "daily minimum: 2 h left before 21:00")], text
    assert "min_daily run times start from zero today" in caplog.text
    missing = tmp_path / "no-such-dir" / "state.json"  # cannot be written: logged, control goes on
    ctl = Controller(ControlConfig(settle=0.0, stale_after=30.0), relays, MockFactory(), TZ, state_file=str(missing))
    ctl.start(0.0)
    try:
        assert _feed(ctl, DAY.replace(hour=18, minute=59), DAY.replace(hour=19, minute=1), 0.0, 0.0)
    finally:
        ctl.close()
    assert "min_daily run times not saved to [control] state_file" in caplog.text
