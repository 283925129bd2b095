"""GPIO relays through gpiozero: one OutputDevice per relay, created in its safe state.

`pin_factory=None` uses gpiozero's default (lgpio on Bookworm / Pi 5, or whatever
GPIOZERO_PIN_FACTORY names, e.g. `mock`); tests pass `gpiozero.pins.mock.MockFactory()`.
With `dry_run` no device is created and no pin is touched; states are only remembered.
"""

from __future__ import annotations

import logging
from typing import Any

from gpiozero import GPIOZeroError, OutputDevice

from app.config import RelayConfig

log = logging.getLogger("app.control")


class RelayBank:
    """The relays of one appliance; `set` drives a pin, `close` leaves every pin safe."""

    def __init__(
        self, relays: tuple[RelayConfig, ...], pin_factory: Any = None, dry_run: bool = False
    ) -> None:
        """Claim every pin with `initial_value` = its safe state (none when `dry_run`)."""
        self.dry_run = dry_run
        self._configs = {r.name: r for r in relays}
        self._states = {r.name: r.safe_state for r in relays}
        self._devices: dict[str, OutputDevice] = {}
        self._closed = False
        if dry_run:
            return
        try:
            for r in relays:
                self._devices[r.name] = OutputDevice(
                    r.pin,
                    active_high=r.active_high,
                    initial_value=r.safe_state,
                    pin_factory=pin_factory,
                )
        except BaseException:
            self.close()
            raise

    @property
    def states(self) -> dict[str, bool]:
        """Logical state per relay (True = on), in config order."""
        return dict(self._states)

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

    def close(self) -> None:
        """Every pin to its safe state, then release it; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        for name, cfg in self._configs.items():
            self._states[name] = cfg.safe_state
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
