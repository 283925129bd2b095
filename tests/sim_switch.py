"""A simulated relay output with a device-side timer, shared by the device simulators (tests only)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class SimSwitch:
    """One relay output; `timer_s` flips it off that long after an ON (Shelly toggle_after, Tasmota PulseTime)."""

    def __init__(self, on_change: Callable[[bool, str], None] | None = None) -> None:
        self.lock = threading.RLock()
        self.output = False
        self.deadline: float | None = None  # monotonic time the timer switches it off
        self.expired = 0  # how often the timer switched it off
        self.ons = 0  # ON commands received
        self.offs = 0
        self.history: list[tuple[float, bool, str]] = []  # (monotonic, state, source)
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick_loop, daemon=True)
        self._thread.start()

    def set(self, on: bool, timer_s: float | None, source: str) -> bool:
        """Switch; returns the state before (`was_on`). A new command replaces any running timer."""
        with self.lock:
            self._tick()
            was = self.output
            self.output = on
            self.deadline = time.monotonic() + timer_s if on and timer_s else None
            if on:
                self.ons += 1
            else:
                self.offs += 1
            self._changed(was, source)
            return was

    def press(self) -> None:
        """Someone presses the button on the device: toggle, no timer."""
        with self.lock:
            self._tick()
            was = self.output
            self.output = not was
            self.deadline = None
            self._changed(was, "button")

    def state(self) -> bool:
        """The output now (timers applied)."""
        with self.lock:
            self._tick()
            return self.output

    def _changed(self, was: bool, source: str) -> None:
        self.history.append((time.monotonic(), self.output, source))
        if self.on_change is not None and was != self.output:
            self.on_change(self.output, source)

    def _tick(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.deadline = None
            was, self.output = self.output, False
            self.expired += 1
            self._changed(was, "timer")

    def _tick_loop(self) -> None:
        while not self._stop.wait(0.05):
            with self.lock:
                self._tick()

    def stop(self) -> None:
        """End the timer thread."""
        self._stop.set()
        self._thread.join(2)
