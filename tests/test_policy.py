"""Relay policy as a table: readings (meter time, powers) and actions -> the switches they cause.

Each step is either a reading `(t_s, {quantity: value})` with power in W, or an action:
"stale" (no valid reading by wall clock), "shutdown", or ("override", relay, mode).
Expected events are `(when, relay, "on"|"off")`, `when` being the reading's t_s or the action.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.config import ControlConfig, RelayConfig, parse_hours, parse_max_switches
from app.control.conditions import parse_condition
from app.control.policy import Policy, SwitchEvent
from app.records import Reading

TZ = ZoneInfo("Europe/Brussels")
BASE = datetime(2024, 6, 3, 12, 0, tzinfo=TZ)  # a Monday noon, meter local time
WALL = datetime(2030, 1, 1, tzinfo=UTC)  # the wall-clock time given to actions

# quantity -> named field in kW/A/V, so readings are built the way the parsers build them
_FIELD = {
    "import": ("actual_total_consumption", 0.001),
    "export": ("actual_total_injection", 0.001),
    "voltage_l1": ("l1_voltage", 1.0),
    "voltage_l2": ("l2_voltage", 1.0),
    "current_l1": ("l1_current", 1.0),
}


def reading(t_s: float, values: dict[str, float], base: datetime = BASE, meter_time: bool = True) -> Reading:
    """A Reading at BASE + t_s with `values` (export/import in W) turned into named fields."""
    fields = {_FIELD[k][0]: v * _FIELD[k][1] for k, v in values.items()}
    t = base + timedelta(seconds=t_s)
    return Reading(
        seq=int(t_s),
        protocol="dsmr",
        meter_id="TEST",
        header="/TEST",
        meter_time=t if meter_time else None,
        received=t.astimezone(UTC),
        values={},
        fields=fields,
    )


def relay(
    name: str,
    on: str = "export > 1500 W",
    off: str | None = "export < 200 W",
    *,
    priority: int = 1,
    min_on: float = 0.0,
    min_off: float = 0.0,
    safe: bool = False,
    hours: str = "",
    max_switches: str = "",
) -> RelayConfig:
    """A RelayConfig built the way app.config builds one."""
    return RelayConfig(
        name=name,
        pin=f"GPIO{abs(hash(name)) % 20 + 2}",
        safe_state=safe,
        priority=priority,
        on_when=parse_condition(on),
        off_when=None if off is None else parse_condition(off),
        min_on=min_on,
        min_off=min_off,
        max_switches=parse_max_switches(max_switches),
        hours=parse_hours(hours),
    )


Step = tuple[float, dict[str, float]] | str | tuple[str, str, str]


def series(t0: float, t1: float, values: dict[str, float], every: float = 10.0) -> list[Step]:
    """Readings from t0 to t1 inclusive, every `every` seconds, all with the same values."""
    out: list[Step] = []
    t = t0
    while t <= t1:
        out.append((t, dict(values)))
        t += every
    return out


def run(policy: Policy, steps: list[Step]) -> list[tuple[Any, SwitchEvent]]:
    """Feed the steps; the events, each with its reading's t_s or its action's label."""
    out: list[tuple[Any, SwitchEvent]] = []
    for step in steps:
        if step == "stale":
            evs = policy.force_safe(WALL, "stale: no valid reading for 31 s")
            label: Any = "stale"
        elif step == "shutdown":
            evs = policy.force_safe(WALL, "shutdown")
            label = "shutdown"
        elif isinstance(step, tuple) and len(step) == 3:
            _, name, mode = step
            evs = policy.override(name, mode, WALL)
            label = f"override {mode}"
        else:
            assert isinstance(step, tuple) and len(step) == 2
            t_s = float(step[0])
            evs = policy.step(reading(t_s, step[1]))
            label = int(t_s) if t_s == int(t_s) else t_s
            for ev in evs:
                assert ev.at == BASE + timedelta(seconds=t_s)
        out += [(label, ev) for ev in evs]
    return out


@dataclass
class Case:
    """One row of the table."""

    id: str
    relays: list[RelayConfig]
    steps: list[Step]
    expected: list[tuple[Any, str, str]]
    settle: float = 0.0
    stale_after: float = 30.0
    reasons: list[str] = field(default_factory=list)


E2 = {"export": 2000.0}
E0 = {"export": 0.0}
E1 = {"export": 1000.0}  # between the thresholds: neither condition true

CASES = [
    Case(
        "hysteresis and delays",
        [relay("boiler", "export > 1500 W for 60 s", "export < 200 W for 30 s")],
        series(0, 60, E2) + series(70, 200, E1) + series(210, 260, E0),
        [(60, "boiler", "on"), (240, "boiler", "off")],
        reasons=["export 2000 W > 1500 W for 60 s", "export 0 W < 200 W for 30 s"],
    ),
    Case(
        "a dip restarts the on delay",
        [relay("boiler", "export > 1500 W for 60 s", "export < 200 W for 30 s")],
        [*series(0, 20, E2), (30, E1), *series(40, 120, E2)],
        [(100, "boiler", "on")],
    ),
    Case(
        "between the thresholds nothing switches (hysteresis band)",
        [relay("boiler", "export > 1500 W", "export < 200 W")],
        series(0, 0, E2) + series(10, 100, E1) + series(110, 110, E0),
        [(0, "boiler", "on"), (110, "boiler", "off")],
    ),
    Case(
        "min_on holds the relay on",
        [relay("boiler", min_on=120)],
        series(0, 0, E2) + series(10, 150, E0),
        [(0, "boiler", "on"), (120, "boiler", "off")],
    ),
    Case(
        "min_off holds the relay off",
        [relay("boiler", min_off=60)],
        [*series(0, 60, E2), (70, E0), *series(80, 200, E2)],
        [(60, "boiler", "on"), (70, "boiler", "off"), (130, "boiler", "on")],
    ),
    Case(
        "the start counts as a switch at the first reading for min_off",
        [relay("boiler", min_off=60)],
        series(100, 200, E2),
        [(160, "boiler", "on")],
    ),
    Case(
        "the start does not count for settle",
        [relay("boiler")],
        series(0, 20, E2),
        [(0, "boiler", "on")],
        settle=300,
    ),
    Case(
        "settle spaces switches of different relays",
        [relay("a"), relay("b")],
        series(0, 60, {"export": 5000.0}),
        [(0, "a", "on"), (30, "b", "on")],
        settle=30,
    ),
    Case(
        "settle applies to the same relay too",
        [relay("boiler")],
        series(0, 0, E2) + series(5, 25, E0, every=5),
        [(0, "boiler", "on"), (20, "boiler", "off")],
        settle=20,
    ),
    Case(
        "one switch per reading, lowest priority number first, ties by config order",
        [relay("a", priority=2), relay("b", priority=1), relay("c", priority=1)],
        series(0, 50, {"export": 5000.0}),
        [(0, "b", "on"), (10, "c", "on"), (20, "a", "on")],
    ),
    Case(
        "shedding: highest priority number off first, ties by config order, lowest last",
        [
            relay("a", "export > 1500 W", "import > 1000 W", priority=1),
            relay("b", "export > 1500 W", "import > 1000 W", priority=2),
            relay("c", "export > 1500 W", "import > 1000 W", priority=2),
        ],
        series(0, 20, {"export": 5000.0}) + series(30, 60, {"import": 2000.0}),
        [
            (0, "a", "on"),
            (10, "b", "on"),
            (20, "c", "on"),
            (30, "b", "off"),
            (40, "c", "off"),
            (50, "a", "off"),
        ],
    ),
    Case(
        "shedding stops when import drops",
        [
            relay("a", "export > 1500 W", "import > 1000 W", priority=1),
            relay("b", "export > 1500 W", "import > 1000 W", priority=5),
        ],
        [*series(0, 10, {"export": 5000.0}), (20, {"import": 2000.0}), (30, {"import": 500.0})],
        [(0, "a", "on"), (10, "b", "on"), (20, "b", "off")],
    ),
    Case(
        "off before on on the same reading",
        [
            relay("a", "export > 1500 W", "voltage_l1 > 250 V", priority=1),
            relay("b", "voltage_l2 > 250 V", "voltage_l2 < 240 V", priority=2),
        ],
        [
            (0, E2),
            (10, {"voltage_l1": 260.0, "voltage_l2": 260.0}),
            (20, {"voltage_l1": 260.0, "voltage_l2": 260.0}),
        ],
        [(0, "a", "on"), (10, "a", "off"), (20, "b", "on")],
    ),
    Case(
        "min_on keeps a relay from being shed; the next one goes",
        [
            relay("a", "export > 1500 W", "import > 1000 W", priority=9, min_on=600),
            relay("b", "export > 1500 W", "import > 1000 W", priority=1),
        ],
        series(0, 10, {"export": 5000.0}) + series(20, 30, {"import": 2000.0}),
        [(0, "b", "on"), (10, "a", "on"), (20, "b", "off")],
    ),
    Case(
        "hours: on only inside the window, off when it closes",
        [relay("boiler", hours="12:01-12:03")],
        series(0, 240, E2),
        [(60, "boiler", "on"), (180, "boiler", "off")],
        reasons=["export 2000 W > 1500 W", "outside hours 12:01-12:03"],
    ),
    Case(
        "hours: a window that wraps past midnight",
        [relay("boiler", hours="12:02-11:00")],
        series(0, 200, E2),
        [(120, "boiler", "on")],
    ),
    Case(
        "hours: leaving the window still waits for min_on",
        [relay("boiler", hours="11:00-12:01", min_on=120)],
        series(0, 200, E2),
        [(0, "boiler", "on"), (120, "boiler", "off")],
    ),
    Case(
        "a gap longer than stale_after puts relays safe and ends every run",
        [relay("boiler", "export > 1500 W for 60 s", "export < 200 W for 30 s")],
        series(0, 60, E2) + series(100, 200, E2),
        [(60, "boiler", "on"), (100, "boiler", "off"), (160, "boiler", "on")],
        reasons=[
            "export 2000 W > 1500 W for 60 s",
            "gap: no reading for 40 s of meter time, stale_after is 30 s",
            "export 2000 W > 1500 W for 60 s",
        ],
    ),
    Case(
        "a gap ends a run that had not switched yet",
        [relay("boiler", "export > 1500 W for 60 s")],
        series(0, 20, E2) + series(60, 140, E2),
        [(120, "boiler", "on")],
    ),
    Case(
        "a gap of exactly stale_after is not a gap",
        [relay("boiler", "export > 1500 W for 60 s")],
        series(0, 20, E2) + series(50, 80, E2),
        [(60, "boiler", "on")],
    ),
    Case(
        "stale: safe state at once whatever min_on says; min_off restarts at the next reading",
        [relay("boiler", min_on=600, min_off=30)],
        [*series(0, 30, E2), "stale", *series(50, 100, E2)],
        [(30, "boiler", "on"), ("stale", "boiler", "off"), (80, "boiler", "on")],
        reasons=["export 2000 W > 1500 W", "stale: no valid reading for 31 s", "export 2000 W > 1500 W"],
    ),
    Case(
        "stale twice is one switch",
        [relay("boiler")],
        [*series(0, 0, E2), "stale", "stale"],
        [(0, "boiler", "on"), ("stale", "boiler", "off")],
    ),
    Case(
        "shutdown: every relay to its own safe state at once",
        [relay("a", min_on=600), relay("b", "export > 1500 W", "export > 1000 W", safe=True, min_on=0)],
        [*series(0, 10, E2), "shutdown"],
        [(0, "b", "off"), (10, "a", "on"), ("shutdown", "a", "off"), ("shutdown", "b", "on")],
    ),
    Case(
        "override ON switches at once, holds against the rules, AUTO hands back",
        [relay("boiler", min_on=60)],
        [
            *series(0, 0, E0),
            ("override", "boiler", "ON"),
            *series(10, 100, E0),
            ("override", "boiler", "AUTO"),
            *series(110, 120, E0),
        ],
        [("override ON", "boiler", "on"), (110, "boiler", "off")],
    ),
    Case(
        "override OFF holds a relay off while its on_when is held",
        [relay("boiler")],
        [
            *series(0, 0, E2),
            ("override", "boiler", "OFF"),
            *series(10, 50, E2),
            ("override", "boiler", "AUTO"),
            *series(60, 70, E2),
        ],
        [(0, "boiler", "on"), ("override OFF", "boiler", "off"), (60, "boiler", "on")],
    ),
    Case(
        "an override counts for settle and min_off",
        [relay("a", min_off=40), relay("b")],
        [
            *series(0, 0, E0),
            ("override", "a", "ON"),
            ("override", "a", "OFF"),
            ("override", "a", "AUTO"),
            *series(10, 60, E2),
        ],
        [("override ON", "a", "on"), ("override OFF", "a", "off"), (20, "b", "on"), (40, "a", "on")],
        settle=20,
    ),
    Case(
        "an override is overruled by stale data and comes back with valid readings",
        [relay("boiler")],
        [*series(0, 0, E0), ("override", "boiler", "ON"), "stale", *series(10, 20, E0)],
        [("override ON", "boiler", "on"), ("stale", "boiler", "off"), (10, "boiler", "on")],
    ),
    Case(
        "an override to the current state switches nothing",
        [relay("boiler")],
        [*series(0, 0, E0), ("override", "boiler", "OFF"), *series(10, 20, E2)],
        [],
    ),
    Case(
        "mean(): one cloud does not reset the timer",
        [relay("boiler", "mean(export, 60 s) > 1500 W", "mean(export, 60 s) < 200 W")],
        [*series(0, 20, E2), (30, E0), *series(40, 100, E2)],
        [(60, "boiler", "on")],
        reasons=["mean(export, 60 s) 1667 W > 1500 W"],
    ),
    Case(
        "the same cloud resets an instant-value timer",
        [relay("boiler", "export > 1500 W for 60 s", "export < 200 W for 60 s")],
        [*series(0, 20, E2), (30, E0), *series(40, 100, E2)],
        [(100, "boiler", "on")],
    ),
    Case(
        "mean(): waits until the readings cover the window, then follows the mean",
        [relay("boiler", "mean(export, 60 s) > 1500 W", "mean(export, 60 s) < 1000 W")],
        series(0, 70, E2) + series(80, 140, E0),
        [(60, "boiler", "on"), (110, "boiler", "off")],  # at 100 the mean is exactly 1000 W
    ),
    Case(
        "max_switches caps switch-ons in the trailing window",
        [relay("boiler", max_switches="2 per 2 min")],
        [(t, E2 if t % 20 == 0 else E0) for t in range(0, 140, 10)],
        [
            (0, "boiler", "on"),
            (10, "boiler", "off"),
            (20, "boiler", "on"),
            (30, "boiler", "off"),
            (120, "boiler", "on"),
            (130, "boiler", "off"),
        ],
    ),
    Case(
        "no off_when: off as soon as on_when is false",
        [relay("boiler", "export > 1500 W", None)],
        [(0, E2), (10, E2), (20, E1)],
        [(0, "boiler", "on"), (20, "boiler", "off")],
        reasons=["export 2000 W > 1500 W", "export 1000 W not > 1500 W"],
    ),
    Case(
        "a missing quantity is not true",
        [relay("boiler", "export > 1500 W for 20 s")],
        [(0, E2), (10, {"import": 100.0}), (20, E2), (30, E2), (40, E2)],
        [(40, "boiler", "on")],
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_table(case: Case) -> None:
    policy = Policy(ControlConfig(settle=case.settle, stale_after=case.stale_after), tuple(case.relays), TZ)
    start = policy.start(WALL)
    assert [(e.name, e.state, e.kind) for e in start] == [
        (r.name, r.safe_state, "start") for r in case.relays
    ]
    events = run(policy, case.steps)
    assert [(label, e.name, "on" if e.state else "off") for label, e in events] == case.expected
    if case.reasons:
        assert [e.reason for _, e in events] == case.reasons


def test_reason_text_and_log_line() -> None:
    policy = Policy(ControlConfig(settle=0), (relay("boiler", "export > 1500 W for 60 s"),), TZ)
    policy.start(WALL)
    events = policy.feed([reading(t, {"export": 2500.0}) for t in range(0, 70, 10)])
    assert [str(e) for e in events] == ["relay boiler -> on (export 2500 W > 1500 W for 60 s)"]
    assert events[0].kind == "auto"


def test_hours_use_meter_local_time_when_only_receive_time_is_known() -> None:
    relays = (relay("boiler", hours="12:01-12:03"),)
    policy = Policy(ControlConfig(settle=0), relays, TZ)
    events = policy.feed([reading(t, E2, meter_time=False) for t in range(0, 200, 10)])
    assert [(e.at.astimezone(TZ).strftime("%H:%M:%S"), e.state) for e in events] == [
        ("12:01:00", True),
        ("12:03:00", False),
    ]


def test_hours_window_across_midnight_local() -> None:
    relays = (relay("pump", hours="23:00-01:00"),)
    policy = Policy(ControlConfig(settle=0, stale_after=120), relays, TZ)
    base = datetime(2024, 6, 3, 22, 58, tzinfo=TZ)
    events = policy.feed([reading(t, E2, base=base) for t in range(0, 3 * 3600, 60)])
    assert [(e.at.strftime("%d %H:%M"), e.state) for e in events] == [("03 23:00", True), ("04 01:00", False)]


def test_meter_clock_going_back_keeps_elapsed_times() -> None:
    policy = Policy(ControlConfig(settle=0), (relay("boiler", min_on=60),), TZ)
    events = policy.feed([reading(0, E2), reading(10, E0), reading(-3600 + 20, E0), reading(-3600 + 70, E0)])
    assert [(e.state, e.at - BASE) for e in events] == [
        (True, timedelta(0)),
        (False, timedelta(seconds=-3600 + 70)),
    ]


def test_override_errors() -> None:
    policy = Policy(ControlConfig(), (relay("boiler"),), TZ)
    with pytest.raises(ValueError, match="unknown relay 'heater'"):
        policy.override("heater", "ON", WALL)
    with pytest.raises(ValueError, match="unknown mode 'BLINK'"):
        policy.override("boiler", "blink", WALL)
    assert policy.override("boiler", " on ", WALL)[0].state is True
    assert policy.modes == {"boiler": "ON"}


def test_override_before_first_reading_counts_at_that_reading() -> None:
    policy = Policy(ControlConfig(settle=30), (relay("a", min_on=50), relay("b")), TZ)
    policy.start(WALL)
    assert [e.state for e in policy.override("a", "ON", WALL)] == [True]
    policy.override("a", "AUTO", WALL)
    events = policy.feed(
        [reading(t, E0) for t in range(100, 201, 10)] + [reading(t, E2) for t in range(210, 261, 10)]
    )
    # a may go off at 150 (min_on from the first reading at 100); settle from 100 too
    assert [(e.name, e.state, (e.at - BASE).seconds) for e in events] == [
        ("a", False, 150),
        ("a", True, 210),
        ("b", True, 240),
    ]


def test_policy_has_no_wall_clock_or_io() -> None:
    import app.control.policy as mod

    source = Path(mod.__file__).read_text(encoding="utf-8")
    for banned in ("import time", "gpiozero", "datetime.now", "time.time", "monotonic"):
        assert banned not in source


def test_logs_nothing_itself(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        Policy(ControlConfig(), (relay("boiler"),), TZ).feed([reading(0, E2)])
    assert caplog.records == []
