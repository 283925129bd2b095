"""Relays on gpiozero's MockFactory, and the Controller that drives them."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from gpiozero import Device, GPIOZeroError, OutputDevice
from gpiozero.pins.mock import MockFactory
from hypothesis import given
from hypothesis import strategies as st

from app.config import ControlConfig, RelayConfig, loads
from app.control import relays
from app.control.conditions import parse_condition
from app.control.controller import Controller, SwitchEvent
from app.control.relays import RelayBank
from app.errors import ConfigError
from app.records import Reading

BASE = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)


def cfg(name: str, pin: str, active_high: bool = True, safe: bool = False, **kw: object) -> RelayConfig:
    """A relay switched on by export > 1500 W and off by export < 200 W."""
    return RelayConfig(
        name=name,
        pin=pin,
        active_high=active_high,
        safe_state=safe,
        on_when=parse_condition("export > 1500 W"),
        off_when=parse_condition("export < 200 W"),
        **kw,  # type: ignore[arg-type]
    )


def reading(t_s: float, export_w: float, crc_ok: bool | None = None) -> Reading:
    t = BASE + timedelta(seconds=t_s)
    return Reading(
        int(t_s), "dsmr", "T", "/T", t, t, {}, {"actual_total_injection": export_w / 1000}, crc_ok=crc_ok
    )


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory()
    yield f
    f.reset()


RELAYS = (
    cfg("boiler", "GPIO17"),  # active high, safe off -> pin low
    cfg("pump", "GPIO27", active_high=False),  # active low board, safe off -> pin high
    cfg("heater", "GPIO22", safe=True),  # safe on, active high -> pin high
    cfg("fan", "GPIO23", active_high=False, safe=True),  # safe on, active low -> pin low
)
SAFE_LEVELS = {"GPIO17": False, "GPIO27": True, "GPIO22": True, "GPIO23": False}


def levels(f: MockFactory) -> dict[str, bool]:
    return {pin: bool(f.pin(pin).state) for pin in SAFE_LEVELS}


def test_pins_start_in_safe_state_without_a_glitch(factory: MockFactory) -> None:
    bank = RelayBank(RELAYS, pin_factory=factory)
    assert levels(factory) == SAFE_LEVELS
    for pin, level in SAFE_LEVELS.items():
        # the pin was never driven to the unsafe level, not even for an instant
        assert {bool(s.state) for s in factory.pin(pin).states[1:]} <= {level}
    assert bank.states == {"boiler": False, "pump": False, "heater": True, "fan": True}
    bank.close()


def test_active_high_handling(factory: MockFactory) -> None:
    bank = RelayBank(RELAYS, pin_factory=factory)
    for name in ("boiler", "pump"):
        bank.set(name, True)
    for name in ("heater", "fan"):
        bank.set(name, False)
    assert levels(factory) == {pin: not level for pin, level in SAFE_LEVELS.items()}
    assert bank.states == {"boiler": True, "pump": True, "heater": False, "fan": False}
    bank.close()


def test_close_is_idempotent_and_leaves_pins_safe(factory: MockFactory) -> None:
    bank = RelayBank(RELAYS, pin_factory=factory)
    bank.set("boiler", True)
    bank.set("pump", True)
    bank.set("heater", False)
    bank.close()
    assert levels(factory) == SAFE_LEVELS
    assert bank.closed
    bank.close()
    bank.set("boiler", True)  # ignored once closed
    assert levels(factory) == SAFE_LEVELS
    assert bank.states["boiler"] is False
    # the pins were released: a new process (here a new bank) can claim them again
    RelayBank(RELAYS, pin_factory=factory).close()


def test_dry_run_leaves_pins_alone(factory: MockFactory) -> None:
    bank = RelayBank(RELAYS, pin_factory=factory, dry_run=True)
    bank.set("boiler", True)
    assert bank.states["boiler"] is True
    assert all(len(factory.pin(pin).states) <= 1 for pin in SAFE_LEVELS)
    assert all(factory.pin(pin).function == "input" for pin in SAFE_LEVELS)
    bank.close()


def test_a_failing_pin_releases_the_others(factory: MockFactory) -> None:
    busy = OutputDevice("GPIO27", pin_factory=factory)  # another program holds the line
    bad = (cfg("boiler", "GPIO17"), cfg("pump", "GPIO27"))
    with pytest.raises(GPIOZeroError, match="GPIO27"):
        RelayBank(bad, pin_factory=factory)
    busy.close()
    RelayBank((cfg("boiler", "GPIO17"),), pin_factory=factory).close()


@pytest.mark.parametrize("pin", ["GPIO99", "pin11", "NOTAPIN", "BOARD1", "GPIO999"])
def test_a_bad_pin_is_a_config_error_before_any_pin_is_claimed(factory: MockFactory, pin: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[relay:bogus\] pin = '{pin}': .*valid: GPIO17, BCM17"):
        RelayBank((cfg("boiler", "GPIO17"), cfg("bogus", pin)), pin_factory=factory)
    assert factory.pin("GPIO17").function == "input"  # nothing was claimed


def test_aliases_of_one_line_are_a_config_error(factory: MockFactory) -> None:
    with pytest.raises(ConfigError, match=r"\[relay:pump\] pin = 'BOARD11': the same line \(GPIO17\) as "
                                          r"\[relay:boiler\] pin = 'GPIO17'"):
        RelayBank((cfg("boiler", "GPIO17"), cfg("pump", "BOARD11")), pin_factory=factory)


def test_any_alias_drives_its_line(factory: MockFactory) -> None:
    bank = RelayBank((cfg("boiler", "board11"), cfg("pump", "j8:13"), cfg("fan", "bcm22")), pin_factory=factory)
    bank.set("boiler", True)
    bank.set("pump", True)
    assert factory.pin("GPIO17").state and factory.pin("GPIO27").state and not factory.pin("GPIO22").state
    bank.close()


def test_a_missing_gpio_library_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Device, "pin_factory", None)
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "lgpio")
    monkeypatch.setitem(sys.modules, "lgpio", None)  # import lgpio -> ImportError, as without python3-lgpio
    with pytest.raises(ConfigError, match=r"\[relay:boiler\] pin = 'GPIO17': .*python3-lgpio.*pip install lgpio"):
        RelayBank((cfg("boiler", "GPIO17"),))
    assert relays.gpio_library_problem() is not None


def test_gpio_library_problem_without_touching_a_pin() -> None:
    def importer(present: set[str]) -> Callable[[str], object]:
        def imp(name: str) -> object:
            if name not in present:
                raise ImportError(name)
            return object()

        return imp

    none = importer({"gpiozero"})
    assert "python3-lgpio" in str(relays.gpio_library_problem({}, none, gpiomem="/nonexistent"))
    assert relays.gpio_library_problem({}, importer({"gpiozero", "lgpio"}), "/nonexistent") is None
    assert relays.gpio_library_problem({}, importer({"gpiozero", "RPi.GPIO"}), "/nonexistent") is None
    assert relays.gpio_library_problem({}, none, gpiomem="/dev/null") is None  # gpiozero's native fallback
    assert relays.gpio_library_problem({"GPIOZERO_PIN_FACTORY": "mock"}, none, "/nonexistent") is None
    assert "lgpio" in str(relays.gpio_library_problem({"GPIOZERO_PIN_FACTORY": "lgpio"},
                                                      importer({"gpiozero", "RPi.GPIO"}), "/dev/null"))
    assert "not a pin factory" in str(relays.gpio_library_problem({"GPIOZERO_PIN_FACTORY": "bogus"}, none))
    assert "gpiozero is not installed" in str(relays.gpio_library_problem({}, importer(set())))


# Every spelling gpiozero itself accepts on the 40-pin header; the lower-case ones are ours.
def _gpiozero_names() -> dict[str, str]:
    board = MockFactory().board_info
    out: dict[str, str] = {}
    for header in board.headers.values():
        for pin in header.pins.values():
            if "gpio" in pin.interfaces:
                for name in pin.names:
                    out[str(name)] = board.to_gpio(name)
    return out


GPIOZERO_NAMES = _gpiozero_names()


def test_parse_pin_agrees_with_gpiozero_on_every_name() -> None:
    assert {"GPIO17", "BCM17", "17", "BOARD11", "J8:11", "WPI0"} <= set(GPIOZERO_NAMES)
    for name, gpio in GPIOZERO_NAMES.items():
        assert relays.pin_name(name) == gpio, name
        assert relays.pin_name(name.lower()) == gpio, name
        assert relays.pin_name(f" {name.upper()} ") == gpio, name


@given(st.text(alphabet="GPIOBCMARDJWgpiobcmard:8 0123456789", max_size=8))
def test_parse_pin_never_accepts_what_gpiozero_rejects(text: str) -> None:
    board = MockFactory().board_info
    try:
        line = relays.parse_pin(text)
    except ValueError as exc:
        assert "valid: GPIO17" in str(exc)
        with pytest.raises((GPIOZeroError, ValueError)):
            spelled = text.strip().upper().replace(" ", "")
            board.to_gpio(spelled)
        return
    spelled = text.strip().upper().replace(" ", "")
    assert board.to_gpio(spelled) == f"GPIO{line}"


def test_unknown_relay(factory: MockFactory) -> None:
    bank = RelayBank(RELAYS, pin_factory=factory)
    with pytest.raises(KeyError):
        bank.set("sauna", True)
    bank.close()


# ---------------------------------------------------------------- Controller


def controller(factory: MockFactory, **control: object) -> Controller:
    settings: dict[str, object] = {"settle": 0.0, "stale_after": 30.0} | control
    return Controller(ControlConfig(**settings), RELAYS[:2], pin_factory=factory)  # type: ignore[arg-type]


def test_controller_switches_pins_and_logs(factory: MockFactory, caplog: pytest.LogCaptureFixture) -> None:
    ctl = controller(factory)
    with caplog.at_level(logging.INFO, logger="app.control"):
        start = ctl.start(now_monotonic=0.0)
        events = ctl.on_reading(reading(0, 2500), now_monotonic=1.0)
        events += ctl.on_reading(reading(10, 2500), now_monotonic=11.0)
    assert [(e.name, e.kind) for e in start] == [("boiler", "start"), ("pump", "start")]
    assert [(e.name, e.state, e.at) for e in events] == [
        ("boiler", True, BASE),
        ("pump", True, BASE + timedelta(seconds=10)),
    ]
    assert ctl.states == {"boiler": True, "pump": True}
    assert factory.pin("GPIO17").state and not factory.pin("GPIO27").state
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert "relay boiler -> off (start: safe state)" in lines
    assert "relay boiler -> on (export 2500 W > 1500 W) at meter time 2024-06-03T10:00:00+00:00" in lines
    assert all(r.name == "app.control" for r in caplog.records)
    ctl.close()


def test_controller_stale_once_then_resumes(factory: MockFactory, caplog: pytest.LogCaptureFixture) -> None:
    ctl = controller(factory)
    ctl.start(now_monotonic=0.0)
    ctl.on_reading(reading(0, 2500), now_monotonic=100.0)
    assert ctl.states["boiler"]
    assert ctl.check_stale(129.0) == []
    with caplog.at_level(logging.INFO, logger="app.control"):
        events = ctl.check_stale(131.0)
    assert [(e.name, e.state, e.kind) for e in events] == [("boiler", False, "safe")]
    assert events[0].reason == "stale: no valid reading for 31 s, stale_after is 30 s"
    assert any(
        "relay boiler -> off (stale: no valid reading for 31 s" in r.getMessage() for r in caplog.records
    )
    assert not factory.pin("GPIO17").state
    assert ctl.check_stale(500.0) == []  # once
    events = ctl.on_reading(reading(10, 2500), now_monotonic=501.0)
    assert [(e.name, e.state) for e in events] == [("boiler", True)]
    ctl.close()


def test_controller_stale_before_any_reading(factory: MockFactory) -> None:
    ctl = controller(factory)
    ctl.start(now_monotonic=0.0)
    assert ctl.check_stale(31.0) == []  # already safe: nothing to switch
    assert ctl.states == {"boiler": False, "pump": False}
    ctl.close()


def test_controller_ignores_bad_crc(factory: MockFactory) -> None:
    ctl = controller(factory)
    ctl.start(now_monotonic=0.0)
    assert ctl.on_reading(reading(0, 2500, crc_ok=False), now_monotonic=1.0) == []
    assert ctl.check_stale(31.0) == []
    ctl.close()


def test_controller_override_and_safe_all(factory: MockFactory) -> None:
    ctl = controller(factory, stale_after=3600.0)
    ctl.start(now_monotonic=0.0)
    ctl.on_reading(reading(0, 0), now_monotonic=1.0)
    events = ctl.override("pump", "ON").events
    assert [(e.name, e.state, e.kind, e.reason) for e in events] == [
        ("pump", True, "override", "manual override ON")
    ]
    assert not factory.pin("GPIO27").state  # active low: on = low
    with pytest.raises(ValueError, match="unknown relay 'sauna'"):
        ctl.override("sauna", "ON")
    with pytest.raises(ValueError, match="unknown mode"):
        ctl.override("pump", "MAYBE")
    assert ctl.on_reading(reading(10, 0), now_monotonic=11.0) == []  # held on against off_when
    events = ctl.safe_all("shutdown (SIGTERM)")
    assert [(e.name, e.state, e.reason) for e in events] == [("pump", False, "shutdown (SIGTERM)")]
    assert factory.pin("GPIO27").state
    ctl.close()
    ctl.close()
    assert ctl.on_reading(reading(20, 5000), now_monotonic=21.0) == []
    assert ctl.safe_all("again") == []


def test_controller_dry_run(factory: MockFactory, caplog: pytest.LogCaptureFixture) -> None:
    ctl = controller(factory, dry_run=True)
    with caplog.at_level(logging.INFO, logger="app.control"):
        ctl.start(now_monotonic=0.0)
        events = ctl.on_reading(reading(0, 2500), now_monotonic=1.0)
    assert [(e.name, e.state) for e in events] == [("boiler", True)]
    assert ctl.states["boiler"] is True
    assert factory.pin("GPIO17").function == "input"  # never claimed
    assert any(m.startswith("relay boiler -> on (export 2500 W > 1500 W) at meter time ") and m.endswith("[dry run]")
               for m in [r.getMessage() for r in caplog.records])
    ctl.close()


def test_controller_from_config_file(factory: MockFactory) -> None:
    config = loads(
        "[control]\nsettle = 15 s\nstale_after = 30 s\n"
        "[relay:boiler]\npin = GPIO17\nactive_high = yes\nsafe_state = off\npriority = 1\n"
        "on_when = export > 1500 W for 60 s\noff_when = export < 200 W for 30 s\n"
        "min_on = 5 min\nmin_off = 2 min\nmax_switches = 6 per h\nhours = 10:00-16:00\n"
    )
    ctl = Controller(config.control, config.relays, pin_factory=factory)
    ctl.start(now_monotonic=0.0)
    events: list[SwitchEvent] = []
    for t in range(0, 400, 10):
        events += ctl.on_reading(reading(t, 2500), now_monotonic=float(t))
    assert [(e.name, e.state, (e.at - BASE).seconds) for e in events] == [("boiler", True, 120)]
    ctl.close()
    assert not factory.pin("GPIO17").state
