"""Peak shaving as tables: a worked Belgian evening, the forecast, month peaks, shed/restore rules, config."""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime, timedelta

import pytest

from app.config import ControlConfig, RelayConfig, loads
from app.control.capacity import CapacityConfig, PeakShaver
from app.control.conditions import parse_condition
from app.control.policy import Policy
from app.errors import ConfigError
from tests.house import TZ, House

START = datetime(2026, 1, 13, 17, 0, tzinfo=TZ)  # a Tuesday in January, after sunset
CAP = CapacityConfig(enabled=True, target=2.5, follow_peak=True, margin=0.2, restore_after=60.0)


def relay(name: str, priority: int, **kw: object) -> RelayConfig:
    return RelayConfig(name=name, pin="", priority=priority, on_when=parse_condition("import >= 0 W"),
                       sheddable=True, **kw)  # type: ignore[arg-type]


EVENING_RELAYS = (
    relay("heat_pump", 1, min_on=600.0, min_off=300.0),  # compressor protection: min_off is never broken
    relay("boiler", 2, min_off=600.0),
    relay("ev", 3, min_off=120.0),  # shed first: the highest priority number
)
EVENING_LOADS = {"heat_pump": 1.2, "boiler": 2.4, "ev": 2.3}


def evening_base(t: datetime) -> float:
    """0.35 kW of base load, an oven cycling on its thermostat from 18:30 and a kettle + hob at 19:00."""
    local = t.astimezone(TZ)
    h = local.hour + local.minute / 60
    kw = 0.35
    if 18.5 <= h < 19.25 and local.minute % 10 < 6:
        kw += 2.5
    if 19.0 <= h < 19.1:
        kw += 2.0
    return kw


def run_evening() -> House:
    pol = Policy(ControlConfig(settle=15.0, stale_after=30.0), EVENING_RELAYS, TZ, capacity=CAP)
    house = House(pol, EVENING_LOADS, evening_base, START)
    while house.t < START + timedelta(hours=4):
        house.advance(1.0)
    return house


# The worked evening (1 reading a second, target 2.5 kW, margin 0.2 kW -> shed above 2.30 kW, fits below 2.10):
# the EV starts, is shed at once and learns its load (2.3 kW); it returns only when it fits for the rest of
# the quarter, i.e. in each quarter's last ~5-10 min (never the last 2). The heat pump (1.2 kW) runs all
# along until the oven; then it is shed (before its min_on: it is sheddable) and returns after its min_off.
# At 19:00 oven + kettle + hob alone (4.85 kW) break the target: no sheddable load can save that quarter,
# its 2.98 kW becomes the month's peak, and with follow_peak the cap is 2.98 kW from then on.
EVENING = [
    ("17:02:01", "ev", "on", "import 350 W >= 0 W"),
    ("17:02:16", "ev", "off", "shed: quarter forecast 2.34 kW > 2.30 kW"),
    ("17:04:16", "ev", "on", "restore: quarter forecast 0.39 kW < 2.10 kW for 119 s"),
    ("17:05:01", "heat_pump", "on", "import 2650 W >= 0 W"),
    ("17:05:16", "ev", "off", "shed: quarter forecast 2.83 kW > 2.30 kW"),
    ("17:08:45", "ev", "on", "restore: quarter forecast 1.34 kW < 2.10 kW for 208 s"),
    ("17:15:00", "ev", "off", "shed: quarter forecast 3.85 kW > 2.30 kW"),
    ("17:25:07", "ev", "on", "restore: quarter forecast 1.55 kW < 2.10 kW for 606 s"),
    ("17:30:00", "ev", "off", "shed: quarter forecast 3.85 kW > 2.30 kW"),
]
EVENING_OVEN = [
    ("18:30:00", "ev", "off", "shed: quarter forecast 6.35 kW > 2.30 kW"),
    ("18:30:15", "heat_pump", "off", "shed: quarter forecast 4.05 kW > 2.30 kW"),
    ("18:37:00", "heat_pump", "on", "restore: quarter forecast 1.37 kW < 2.10 kW for 60 s"),
    ("18:40:00", "heat_pump", "off", "shed: quarter forecast 2.84 kW > 2.30 kW"),
    ("18:47:00", "heat_pump", "on", "restore: quarter forecast 0.52 kW < 2.10 kW for 60 s"),
    ("18:50:00", "heat_pump", "off", "shed: quarter forecast 3.22 kW > 2.30 kW"),
    ("18:57:00", "heat_pump", "on", "restore: quarter forecast 1.76 kW < 2.10 kW for 60 s"),
    ("19:00:00", "heat_pump", "off", "shed: quarter forecast 6.05 kW > 2.30 kW"),
    ("19:16:00", "heat_pump", "on", "restore: quarter forecast 0.35 kW < 2.58 kW for 60 s"),
    ("19:21:27", "ev", "on", "restore: quarter forecast 1.47 kW < 2.58 kW for 387 s"),
    ("19:30:00", "ev", "off", "shed: quarter forecast 3.85 kW > 2.78 kW"),
]


def _table(house: House, since: str, n: int) -> list[tuple[str, str, str, str]]:
    rows = [(e.at.astimezone(TZ).strftime("%H:%M:%S"), e.name, "on" if e.state else "off", e.reason)
            for e in house.events if e.kind == "auto"]
    return [r for r in rows if r[0] >= since][:n]


def test_a_belgian_evening_switch_by_switch() -> None:
    house = run_evening()
    assert _table(house, "17:00:00", len(EVENING)) == EVENING
    assert _table(house, "18:30:00", len(EVENING_OVEN)) == EVENING_OVEN


def test_a_belgian_evening_keeps_every_quarter_under_the_target_that_sheddable_load_can_save() -> None:
    house = run_evening()
    avgs = house.averages_kw()
    assert len(avgs) == 16
    spike = START.replace(hour=19, minute=0)
    for q, kw in avgs.items():
        if q < spike:
            assert kw <= CAP.target, (q, kw)
    assert avgs[spike] == pytest.approx(2.983, abs=0.001)  # oven + kettle + hob: no shedding can help
    for kw in avgs.values():  # later quarters use up to the followed peak, never above it
        assert kw <= avgs[spike] + 1e-9
    assert house.policy.shaver is not None
    assert house.policy.shaver.month_peak_kw == pytest.approx(max(avgs.values()), abs=0.001)
    # without peak shaving the same evening peaks at 0.35 + 1.2 + 2.4 + 2.3 + 2.5 + 2.0 kW-ish quarters
    pol = Policy(ControlConfig(settle=15.0, stale_after=30.0), EVENING_RELAYS, TZ)
    free = House(pol, EVENING_LOADS, evening_base, START)
    while free.t < START + timedelta(hours=4):
        free.advance(1.0)
    assert max(free.averages_kw().values()) > 8.0


def test_the_forecast_from_counters_and_a_start_in_mid_quarter() -> None:
    sh = PeakShaver(CapacityConfig(True, 2.5, False, 0.2, 60.0), TZ)
    t0 = START + timedelta(minutes=5)  # 17:05: 5 min into the quarter, at 3 kW so far (assumed)
    fc = sh.update(t0, 100.0, 3.0)
    assert fc.so_far_kwh == pytest.approx(0.25)
    assert fc.forecast_kw == pytest.approx(3.0)
    fc = sh.update(t0 + timedelta(minutes=5), 100.1, 0.6)  # 0.35 kWh so far, 0.6 kW for 5 min more
    assert fc.so_far_kwh == pytest.approx(0.35)
    assert fc.forecast_kw == pytest.approx((0.35 + 0.05) * 4)
    assert not fc.over and fc.shed_reason() == "shed: quarter forecast 1.60 kW > 2.30 kW"
    fc = sh.update(START + timedelta(minutes=15, seconds=3), 100.2, 0.6)  # a new quarter, 3 s in
    assert fc.so_far_kwh == pytest.approx(0.6 * 3 / 3600)
    assert sh.month_peak_kw == pytest.approx((0.35 + 0.05) * 4)  # the closed quarter's average


def test_the_month_peak_is_seeded_followed_and_reset_at_the_local_month_start() -> None:
    sh = PeakShaver(CAP, TZ)
    sh.seed(date(2026, 1, 1), 3.4)
    fc = sh.update(datetime(2026, 1, 31, 23, 50, tzinfo=TZ), 10.0, 1.0)
    assert fc.cap_kw == 3.4 and fc.limit_kw == pytest.approx(3.2)
    fc = sh.update(datetime(2026, 1, 31, 23, 55, tzinfo=TZ), 10.1, 1.0, meter_peak_kw=3.9)
    assert fc.cap_kw == 3.9
    fc = sh.update(datetime(2026, 2, 1, 0, 0, 1, tzinfo=TZ), 10.2, 1.0)  # local month start (23:00 UTC)
    assert fc.cap_kw == 2.5 and sh.month_peak_kw == 0.0
    no_follow = PeakShaver(CapacityConfig(True, 2.5, False, 0.2, 60.0), TZ)
    no_follow.seed(date(2026, 1, 1), 3.4)
    assert no_follow.update(datetime(2026, 1, 31, 12, 0, tzinfo=TZ), 1.0, 1.0).cap_kw == 2.5


def test_a_shed_never_breaks_min_off_and_min_on_holds_only_relays_that_are_not_sheddable() -> None:
    never = RelayConfig(name="pool", pin="", priority=9, on_when=parse_condition("import >= 0 W"), min_on=3600.0)
    pol = Policy(ControlConfig(settle=0.0, stale_after=30.0), (never, relay("hp", 1, min_off=400.0)), TZ,
                 capacity=CAP)
    house = House(pol, {"pool": 1.5, "hp": 1.5}, lambda t: 0.3, START)
    for _ in range(900):
        house.advance(1.0)
    sheds = [e for e in house.events if e.reason.startswith("shed")]
    assert sheds and all(e.name == "hp" for e in sheds)  # pool: not sheddable
    on_times = {e.at for e in house.events if e.name == "hp" and e.state}
    offs = [e.at for e in house.events if e.name == "hp" and not e.state and e.kind == "auto"]
    for off in offs:
        back = [t for t in on_times if t > off]
        if back:
            assert (min(back) - off).total_seconds() >= 400.0


def test_no_restore_in_the_last_two_minutes_of_a_quarter() -> None:
    pol = Policy(ControlConfig(settle=0.0, stale_after=30.0), (relay("ev", 1),), TZ,
                 capacity=CapacityConfig(True, 2.5, False, 0.2, 10.0))
    house = House(pol, {"ev": 2.5}, lambda t: 0.2, START)
    for _ in range(3600):
        house.advance(1.0)
    restores = [e for e in house.events if e.reason.startswith("restore")]
    assert restores
    for e in restores:
        local = e.at.astimezone(TZ)
        assert (local.minute % 15) * 60 + local.second < 13 * 60, e


def test_config_keys_and_errors() -> None:
    cfg = loads("[capacity]\nenabled = yes\ntarget = 2300 W\nfollow_peak = no\nmargin = 0.1 kW\n"
                "restore_after = 2 min\n[relay:ev]\npin = GPIO5\non_when = import >= 0 W\nsheddable = yes\n"
                "min_daily = 90 min by 7:00\n")
    assert cfg.capacity == CapacityConfig(True, 2.3, False, 0.1, 120.0)
    assert cfg.relays[0].sheddable is True
    assert str(cfg.relays[0].min_daily) == "1 h 30 min by 07:00"
    assert loads("").capacity.enabled is False
    for text, needle in [("[capacity]\ntarget = lots\n", "[capacity] target = 'lots'"),
                         ("[capacity]\nmargin = 2 kW\n", "[capacity] margin = '2 kW'"),
                         ("[capacity]\ntarge = 2\n", "did you mean target?"),
                         ("[relay:x]\npin = GPIO5\non_when = import > 0 W\nsheddable = maybe\n",
                          "[relay:x] sheddable = 'maybe'"),
                         ("[relay:x]\npin = GPIO5\non_when = import > 0 W\nmin_daily = 2 h\n",
                          "[relay:x] min_daily = '2 h'"),
                         ("[relay:x]\npin = GPIO5\non_when = import > 0 W\nmin_daily = 9 h by 06:00\n",
                          "does not fit")]:
        with pytest.raises(ConfigError, match=None) as err:
            loads(text)
        assert needle in str(err.value)


def test_the_controller_logs_a_shed_with_its_forecast_and_shows_it_as_the_relay_reason(
        caplog: pytest.LogCaptureFixture) -> None:
    from gpiozero.pins.mock import MockFactory

    from app.control.controller import Controller
    from app.records import Reading

    factory = MockFactory()
    ctl = Controller(ControlConfig(settle=0.0, stale_after=60.0), (replace(relay("ev", 3), pin="GPIO22"),),
                     pin_factory=factory, tz=TZ, capacity=CAP)
    try:
        ctl.start(0.0)
        caplog.set_level("INFO", logger="app.control")
        kwh = 10.0
        for i in range(40):
            t = START + timedelta(seconds=i)
            kw = 0.4 + (2.4 if ctl.states["ev"] else 0.0)
            ctl.on_reading(Reading(i, "dsmr", "T", "/T", t, t.astimezone(TZ), {},
                                   {"total_consumption": kwh, "actual_total_consumption": kw}), float(i))
            kwh += kw / 3600
        view = ctl.view()["ev"]
        assert view.state is False
        assert view.reason == "shed: quarter forecast 2.80 kW > 2.30 kW"
        assert "relay ev -> off (shed: quarter forecast 2.80 kW > 2.30 kW) at meter time 2026-01-13T17:00:01" \
            in caplog.text
        assert factory.pin(22).state is False
    finally:
        ctl.close()


def test_a_persistent_disagreement_with_the_meters_own_average_is_logged_counted_and_the_meter_wins(
        caplog: pytest.LogCaptureFixture) -> None:
    from gpiozero.pins.mock import MockFactory

    from app.control.capacity import DISAGREE_S
    from app.control.controller import Controller
    from app.records import Reading

    ctl = Controller(ControlConfig(settle=0.0, stale_after=60.0), (replace(relay("ev", 3), pin="GPIO22"),),
                     pin_factory=MockFactory(), tz=TZ, capacity=CAP)
    caplog.set_level("INFO", logger="app.control")
    try:
        ctl.start(0.0)
        kwh, so_far = 10.0, 0.0
        for i in range(240):  # 17:00:00 .. 17:03:59, 0.4 kW; the meter says 1 kW more from 17:01:00 on
            t = START + timedelta(seconds=i)
            demand = so_far / 0.25 + (1.0 if i >= 60 else 0.0)
            ctl.on_reading(Reading(i, "dsmr", "T", "/T", t, t.astimezone(TZ), {},
                                   {"total_consumption": kwh, "actual_total_consumption": 0.4,
                                    "current_average_demand": round(demand, 3)}), float(i))
            fc = ctl.policy.forecast
            assert fc is not None
            if i < 60 + DISAGREE_S:  # agreeing (the meter's figure), then a disagreement not yet persistent
                assert fc.source == ("meter" if i < 60 else "counters"), i
                assert fc.forecast_kw == pytest.approx(0.4, abs=0.01)
            else:  # persistent: the billed figure wins
                assert fc.source == "meter" and fc.forecast_kw == pytest.approx(1.4, abs=0.01)
            kwh += 0.4 / 3600
            so_far += 0.4 / 3600
        assert ctl.demand_disagreements == 1
        warnings = [r.getMessage() for r in caplog.records if "1-0:1.4.0" in r.getMessage()]
        assert len(warnings) == 1, warnings  # once per episode, rate-limited
        assert "disagreed by more than 0.107 kW for 60 s" in warnings[0] and "using the meter's" in warnings[0]
    finally:
        ctl.close()
