"""GPIO relays through gpiozero: one OutputDevice per relay, created in its safe state.

`pin_factory=None` uses gpiozero's default (lgpio on Bookworm / Pi 5, or whatever
GPIOZERO_PIN_FACTORY names, e.g. `mock`); tests pass `gpiozero.pins.mock.MockFactory()`.
With `dry_run` no device is created and no pin is touched; states are only remembered.

Pin names are parsed here without gpiozero or hardware (`parse_pin`), the way gpiozero reads
them on the 40-pin header, so that config validation can tell that `BOARD11`, `gpio17`, `17`
and `GPIO17` are one line. gpiozero itself is imported only when a bank claims pins.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.errors import ConfigError

if TYPE_CHECKING:
    from gpiozero import OutputDevice

    from app.config import MqttConfig, RelayConfig
    from app.control.relays.net import NetRelay

log = logging.getLogger("app.control")

# The 40-pin header (J8 on every Pi since the B+, the Pi 5 included): physical pin -> BCM line.
HEADER_TO_BCM: dict[int, int] = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 27: 0, 28: 1, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19,
    36: 16, 37: 26, 38: 20, 40: 21,
}
_HEADER_OTHER: dict[int, str] = {
    **dict.fromkeys((1, 17), "3.3 V power"), **dict.fromkeys((2, 4), "5 V power"),
    **dict.fromkeys((6, 9, 14, 20, 25, 30, 34, 39), "ground"),
}
# wiringPi numbers gpiozero also accepts (WPIn), same header.
_WPI_TO_HEADER: dict[int, int] = {
    8: 3, 9: 5, 7: 7, 15: 8, 16: 10, 0: 11, 1: 12, 2: 13, 3: 15, 4: 16, 5: 18, 12: 19, 13: 21,
    6: 22, 14: 23, 10: 24, 11: 26, 30: 27, 31: 28, 21: 29, 22: 31, 26: 32, 23: 33, 24: 35,
    27: 36, 25: 37, 28: 38, 29: 40,
}
BCM_LINES = range(28)  # GPIO0..GPIO27 are on the header of every 40-pin Pi
PIN_FORMS = "GPIO17, BCM17, 17, BOARD11, J8:11 or WPI0 (GPIO0-GPIO27; BOARD/J8 = physical pin 1-40)"
_PIN_RE = re.compile(r"^(gpio|bcm|board|j8:|wpi|)\s*(0|[1-9]\d*)$", re.I)
# gpiozero's default factories in the order it tries them: name -> module that must import.
_FACTORY_MODULES: dict[str, str] = {"lgpio": "lgpio", "rpigpio": "RPi.GPIO", "pigpio": "pigpio"}
INSTALL_HINT = ("install a GPIO library for gpiozero: `sudo apt install python3-lgpio` (make the venv with "
                "--system-site-packages) or `pip install lgpio` in the venv; or set [control] dry_run = yes "
                "to run without touching pins")


def parse_pin(text: str) -> int:
    """A gpiozero pin name (any case) -> its BCM line number; ValueError saying what is valid."""
    spec = text.strip()
    m = _PIN_RE.match(spec)
    if m is None:
        loose = re.match(r"^(?:pin|p|phys|physical)\s*(\d+)$", spec, re.I)
        if loose is not None:
            raise ValueError(f"not a pin name: write BOARD{loose.group(1)} for physical pin "
                             f"{loose.group(1)} (valid: {PIN_FORMS})")
        raise ValueError(f"not a pin name (valid: {PIN_FORMS})")
    kind, number = m.group(1).lower(), int(m.group(2))
    if kind in ("board", "j8:"):
        if number in HEADER_TO_BCM:
            return HEADER_TO_BCM[number]
        if number in _HEADER_OTHER:
            raise ValueError(f"physical pin {number} is {_HEADER_OTHER[number]}, not a GPIO (valid: {PIN_FORMS})")
        raise ValueError(f"the header has physical pins 1-40 only (valid: {PIN_FORMS})")
    if kind == "wpi":
        if number not in _WPI_TO_HEADER:
            raise ValueError(f"no wiringPi pin {number} (valid: {PIN_FORMS})")
        return HEADER_TO_BCM[_WPI_TO_HEADER[number]]
    if number not in BCM_LINES:
        raise ValueError(f"no GPIO line {number} on the header (valid: {PIN_FORMS})")
    return number


def pin_name(text: str) -> str:
    """The canonical gpiozero name of a pin spec: `BOARD11` -> `GPIO17`."""
    return f"GPIO{parse_pin(text)}"


def gpio_library_problem(
    env: dict[str, str] | None = None,
    importer: Callable[[str], Any] = importlib.import_module,
    gpiomem: str = "/dev/gpiomem",
) -> str | None:
    """Why gpiozero could not load a pin factory here (None when it can); no pin is touched."""
    env = dict(os.environ) if env is None else env
    try:
        importer("gpiozero")
    except ImportError:
        return "gpiozero is not installed: `pip install -r requirements.txt` in the venv"
    wanted = env.get("GPIOZERO_PIN_FACTORY", "").strip().lower()
    if wanted in ("mock", "native"):
        return None
    candidates = {wanted: _FACTORY_MODULES[wanted]} if wanted in _FACTORY_MODULES else _FACTORY_MODULES
    if wanted and wanted not in _FACTORY_MODULES:
        return (f"GPIOZERO_PIN_FACTORY={wanted!r} is not a pin factory gpiozero knows "
                "(lgpio, rpigpio, pigpio, native, mock)")
    for module in candidates.values():
        try:
            importer(module)
            return None
        except (ImportError, RuntimeError):  # RPi.GPIO raises RuntimeError off a Pi
            continue
    if not wanted and os.path.exists(gpiomem):  # gpiozero's last resort: its native factory (Pi 4 and older)
        return None
    names = ", ".join(candidates.values())
    return f"no GPIO library could be loaded ({names}): {INSTALL_HINT}"


def check_pins(relays: tuple[RelayConfig, ...]) -> None:
    """Every relay's pin names a header GPIO, and no two relays share a line (any alias)."""
    seen: dict[int, RelayConfig] = {}
    for r in relays:
        if r.device is not None:
            continue
        section = f"relay:{r.name}"
        try:
            line = parse_pin(r.pin)
        except ValueError as exc:
            raise ConfigError(f"[{section}] pin = {r.pin!r}: {exc}", section, "pin") from None
        other = seen.get(line)
        if other is not None:
            raise ConfigError(
                f"[{section}] pin = {r.pin!r}: the same line (GPIO{line}) as [relay:{other.name}] "
                f"pin = {other.pin!r}; give each relay its own pin", section, "pin")
        seen[line] = r


NET_CLOSE_S = 0.5  # on shutdown: network relays send OFF within this; their dead-man timers cover the rest


class RelayBank:
    """The relays of one appliance; `set` drives a pin or commands a network relay's thread,
    `close` leaves every relay safe."""

    def __init__(
        self, relays: tuple[RelayConfig, ...], pin_factory: Any = None, dry_run: bool = False,
        mqtt: MqttConfig | None = None, log_interval_s: float = 60.0, network: bool = True,
    ) -> None:
        """Claim every pin with `initial_value` = its safe state (none when `dry_run`); start one
        worker thread per network relay (`mqtt`: the broker of Tasmota relays over MQTT; with
        `network` False, e.g. a replay, no device is contacted and their states are only remembered).

        A bad or doubled pin, or no usable GPIO library, is a ConfigError (exit 2, no restart loop)."""
        check_pins(relays)
        self.dry_run = dry_run
        self._configs = {r.name: r for r in relays}
        self._states = {r.name: r.safe_state for r in relays}
        self._devices: dict[str, OutputDevice] = {}
        self._net: dict[str, NetRelay] = {}
        self._closed = False
        if dry_run or not relays:
            return
        try:
            if network:
                self._start_net(relays, mqtt, log_interval_s)
        except BaseException:
            self.close()
            raise
        gpio = tuple(r for r in relays if r.device is None)
        if not gpio:
            return
        from gpiozero import OutputDevice

        try:
            for r in gpio:
                self._devices[r.name] = OutputDevice(
                    pin_name(r.pin),
                    active_high=r.active_high,
                    initial_value=r.safe_state,
                    pin_factory=pin_factory,
                )
        except ImportError as exc:  # gpiozero's BadPinFactory, or the GPIOZERO_PIN_FACTORY library missing
            self.close()
            first = gpio[0]
            raise ConfigError(f"[relay:{first.name}] pin = {first.pin!r}: gpiozero could not load a pin factory "
                              f"({exc}): {INSTALL_HINT}", f"relay:{first.name}", "pin") from None
        except BaseException:
            self.close()
            raise

    def _start_net(self, relays: tuple[RelayConfig, ...], mqtt: MqttConfig | None, log_interval_s: float) -> None:
        from app.control.relays.net import DeviceError, NetRelay, build_driver

        for r in relays:
            if r.device is None:
                continue
            try:
                driver = build_driver(r.device, mqtt)
            except (DeviceError, ValueError) as exc:
                raise ConfigError(f"[relay:{r.name}] type = {r.device.kind!r}: {exc}", f"relay:{r.name}",
                                  "type") from None
            self._net[r.name] = NetRelay(r.name, r.device, driver, log_interval_s)

    @property
    def states(self) -> dict[str, bool]:
        """Logical state per relay (True = on), in config order."""
        return dict(self._states)

    def devices(self) -> dict[str, dict[str, Any]]:
        """Network relays as read back: type, state (on/off/unknown), commanded, reachable, mismatches (the device
        found not as commanded on read-back, then switched back) and the last one's time, failures, dropped."""
        out: dict[str, dict[str, Any]] = {}
        for name, r in self._net.items():
            out[name] = {"type": r.device.kind, "state": r.state, "commanded": "on" if r.wanted else "off",
                         "reachable": r.reachable, "mismatches": r.mismatches,
                         "last_mismatch": r.mismatch_at.isoformat(timespec="seconds") if r.mismatch_at else None,
                         "failures": r.failures, "dropped": r.dropped, "error": r.last_error}
        return out

    def device_changes(self) -> int:
        """A number that moves whenever a network relay's read-back state, reachability or mismatches change."""
        return sum(r.changes for r in self._net.values())

    @property
    def closed(self) -> bool:
        """Whether `close` has run."""
        return self._closed

    def set(self, name: str, state: bool) -> None:
        """Switch relay `name` on (True) or off; ignored after close."""
        if name not in self._states:
            raise KeyError(f"unknown relay {name!r}")
        if self._closed:
            return
        self._states[name] = state
        net = self._net.get(name)
        if net is not None:
            net.want(state)
        dev = self._devices.get(name)
        if dev is not None:
            if state:
                dev.on()
            else:
                dev.off()

    def safe(self) -> None:
        """Every relay to its safe state."""
        for name, cfg in self._configs.items():
            self.set(name, cfg.safe_state)

    def close(self, net_timeout_s: float = NET_CLOSE_S) -> None:
        """Every pin to its safe state, then release it; network relays OFF within `net_timeout_s`
        (their dead-man timers cover what could not be sent); safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for name, cfg in self._configs.items():
            self._states[name] = cfg.safe_state
        for net in self._net.values():  # all at once: each thread sends its OFF in parallel
            net.request_close()
        if self._net:
            import time

            deadline = time.monotonic() + net_timeout_s
            for net in self._net.values():
                net.close(max(0.01, deadline - time.monotonic()))
        if not self._devices:
            return
        from gpiozero import GPIOZeroError

        for name, cfg in self._configs.items():
            dev = self._devices.get(name)
            if dev is None:
                continue
            try:
                if cfg.safe_state:
                    dev.on()
                else:
                    dev.off()
            except (GPIOZeroError, OSError) as exc:
                log.error("relay %s: could not drive pin %s to its safe state: %s", name, cfg.pin, exc)
            finally:
                dev.close()
