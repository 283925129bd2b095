"""Network relays: one worker thread per device behind a bounded queue, with the dead-man timer.

    relay = NetRelay("boiler", cfg.device, driver)  # starts its thread; nothing is sent yet
    relay.want(True)       # never blocks: the thread sends ON with the device-side timeout
    relay.state            # "on" | "off" | "unknown" (read back every `refresh`)
    relay.close(0.5)       # OFF if it can be sent in time; the dead-man timer covers the rest

Rules of the thread:
- an ON always carries the device-side timeout (`deadman`) and is re-sent every deadman / 3, so a
  dead Pi, a dead appliance or a lost network leaves the load OFF within `deadman`;
- every `refresh` the real state is read back. A mismatch (someone pressed the button, the app of
  the plug, a device reboot) is logged and counted, and **the commanded state wins**: it is sent
  again at once. To keep a load on or off by hand, use the relay's override (MQTT or web: ON / OFF);
- an unreachable device is "unknown", retried with backoff (1 s doubling up to `refresh`, never
  longer than a third of the dead-man time), counted; the post-processor never waits for it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from app.logutil import RateLimited

if TYPE_CHECKING:
    from app.config import MqttConfig
    from app.control.relays.settings import DeviceConfig

log = logging.getLogger("app.control")
QUEUE_SIZE = 8
BACKOFF_MIN_S = 1.0


class DeviceError(Exception):
    """A device could not be reached or answered nonsense (message without credentials)."""


class Driver(Protocol):
    """One switch on one device; calls block for at most the device's timeout."""

    def send(self, on: bool, deadman_s: float) -> bool | None:
        """Switch on (with a device-side OFF after `deadman_s`) or off; DeviceError on failure. Returns the
        output's state just before, where the device tells it (None: not known)."""

    def read(self) -> bool:
        """The device's real output state; DeviceError on failure."""

    def close(self) -> None:
        """Release connections."""


class NetRelay:
    """A network relay's worker thread: commands in through a bounded queue, state read back."""

    def __init__(self, name: str, device: DeviceConfig, driver: Driver, log_interval_s: float = 60.0) -> None:
        self.name = name
        self.device = device
        self.driver = driver
        self.q: queue.Queue[bool | None] = queue.Queue(QUEUE_SIZE)
        self.wanted = False  # the last commanded state (what the rules want)
        self.sent: bool | None = None  # the last state the device confirmed, None: never / unknown
        self.actual: bool | None = None  # the last state read back, None: unknown
        self.mismatches = 0
        self.failures = 0  # requests that failed (unreachable, timeout, bad reply)
        self.dropped = 0  # commands dropped from a full queue (only the newest matters)
        self.refreshes = 0  # ONs re-sent to push the dead-man timer out
        self.last_error = ""
        self.reachable: bool | None = None
        self._was: bool | None = None  # the device's state just before the last send, where it said so
        self.mismatch_at: datetime | None = None  # wall clock of the last mismatch seen on read-back
        self.changes = 0  # bumped whenever state, reachability or the mismatch count changes (for views)
        self._limited = RateLimited(log, log_interval_s)
        self._closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"relay-{name}", daemon=True)
        self.thread.start()

    @property
    def state(self) -> str:
        """The device's real state as last read back: on, off or unknown."""
        return "unknown" if self.actual is None or not self.reachable else ("on" if self.actual else "off")

    def want(self, on: bool) -> None:
        """Command a state; never blocks (a full queue drops its oldest command, counted)."""
        self.wanted = on
        while True:
            try:
                self.q.put_nowait(on)
                return
            except queue.Full:
                try:
                    self.q.get_nowait()
                    self.dropped += 1
                except queue.Empty:
                    pass

    def request_close(self) -> None:
        """Ask the thread to send OFF and end (returns at once)."""
        self.wanted = False
        self._closing.set()
        try:
            self.q.put_nowait(None)
        except queue.Full:
            pass

    def close(self, timeout_s: float) -> bool:
        """Send OFF if it can be done within `timeout_s`; True when the device confirmed it.

        Whatever could not be sent in time is covered by the dead-man timer of the last ON."""
        self.request_close()
        self.thread.join(timeout_s)
        done = not self.thread.is_alive() and self.sent is False
        if not done:
            log.warning("relay %s: OFF not confirmed by %s within %.1f s; its dead-man timer switches it off "
                        "within %g s", self.name, self.device.where, timeout_s, self.device.deadman)
        return done

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # the top of this thread: log, leave the dead-man timer to switch it off
            log.exception("relay %s: worker failed; the device's dead-man timer switches it off", self.name)
        finally:
            try:
                self.driver.close()
            except Exception:  # a failing close must not hide the reason above
                log.exception("relay %s: closing the driver failed", self.name)

    def _loop(self) -> None:
        dev = self.device
        keep_s = dev.deadman / 3.0  # ON re-sent this often: two refreshes may fail before it runs out
        backoff_s = BACKOFF_MIN_S
        dirty = False  # a command is waiting to be sent
        target: bool | None = None  # the newest command this thread took (None: none yet)
        next_send = float("inf")  # when the ON's dead-man timer needs pushing out
        next_read = time.monotonic()
        retry_at = 0.0
        while True:
            now = time.monotonic()
            wake = min(next_read, next_send, retry_at if dirty else float("inf"))
            try:
                cmd = self.q.get(timeout=max(0.0, wake - now))
                if cmd is None:
                    break
                dirty = dirty or cmd != self.sent or cmd != self.actual
                target = cmd  # the newest command is the one to keep
                if self.q.qsize():
                    continue  # take them all: only the last counts
                retry_at = 0.0
            except queue.Empty:
                pass
            if self._closing.is_set():
                break
            now = time.monotonic()
            if target is not None and ((dirty and now >= retry_at) or (self.sent and now >= next_send)):
                refresh = not dirty
                before = self.actual
                if self._send(target):
                    if refresh and before == target and self._was is not None and self._was != target:
                        self._mismatch(target, self._was, "was")  # toggled since the last read-back: undone now
                    dirty, backoff_s = False, BACKOFF_MIN_S
                    next_send = now + keep_s if target else float("inf")
                    self.refreshes += refresh
                    next_read = min(next_read, now + dev.refresh)
                else:
                    dirty = True
                    retry_at = now + backoff_s
                    next_send = retry_at if target else float("inf")
                    backoff_s = min(backoff_s * 2, max(BACKOFF_MIN_S, min(dev.refresh, keep_s)))
                continue
            if now >= next_read:
                next_read = now + dev.refresh
                if self._read() is not None and target is not None and self.actual != target and not dirty:
                    self._mismatch(target, self.actual)
                    dirty, retry_at = True, 0.0
        self._final_off()

    def _mismatch(self, target: bool, found: bool | None, seen: str = "is") -> None:
        self.mismatches += 1
        self.mismatch_at = datetime.now(UTC)
        self.changes += 1
        log.warning("relay %s: the device %s %s but this appliance switched it %s (a button, its app, or a device "
                    "restart); switching it %s again (the rules win: use the override to keep it %s by hand)",
                    self.name, seen, _word(found), _word(target), _word(target), _word(found))

    def _final_off(self) -> None:
        """Shutdown: OFF with one attempt (the caller waits a bounded time)."""
        if self.sent is False and self.actual is False:
            return
        if self._send(False):
            log.info("relay %s: off at %s (shutdown)", self.name, self.device.where)

    def _send(self, on: bool) -> bool:
        self._was = None
        try:
            self._was = self.driver.send(on, self.device.deadman)
        except DeviceError as exc:
            self._failed(exc)
            self.sent = None
            return False
        self.sent = on
        self._actual(on)
        self._reached()
        return True

    def _read(self) -> bool | None:
        try:
            state = self.driver.read()
        except DeviceError as exc:
            self._failed(exc)
            return None
        self._actual(state)
        self._reached()
        return state

    def _actual(self, state: bool) -> None:
        if state != self.actual:
            self.changes += 1
        self.actual = state

    def _failed(self, exc: DeviceError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        if self.reachable is not False:
            log.warning("relay %s: %s unreachable (%s); state unknown, retrying with backoff%s", self.name,
                        self.device.where, exc, "; its dead-man timer switches it off if this lasts"
                        if self.wanted else "")
        else:
            self._limited.warning(self.name, "relay %s: %s still unreachable (%s, %d failures)", self.name,
                                  self.device.where, exc, self.failures)
        if self.reachable is not False:
            self.changes += 1
        self.reachable = False

    def _reached(self) -> None:
        if self.reachable is False:
            log.info("relay %s: %s reachable again (%d failed requests)", self.name, self.device.where,
                     self.failures)
        if self.reachable is not True:
            self.changes += 1
        self.reachable = True
        self.last_error = ""


def _word(state: bool | None) -> str:
    return "unknown" if state is None else "on" if state else "off"


def build_driver(device: DeviceConfig, mqtt: MqttConfig | None = None) -> Driver:
    """The driver for one device; its client library is imported here, only when used."""
    if device.kind == "shelly":
        from app.control.relays.shelly import ShellyDriver

        return ShellyDriver(device)
    if device.kind == "tasmota":
        if device.mqtt_topic:
            from app.control.relays.tasmota import TasmotaMqttDriver

            if mqtt is None:
                raise ValueError("a Tasmota relay over MQTT needs the [mqtt] broker settings")
            return TasmotaMqttDriver(device, mqtt)
        from app.control.relays.tasmota import TasmotaHttpDriver

        return TasmotaHttpDriver(device)
    if device.kind == "tapo":
        from app.control.relays.tapo import TapoDriver

        return TapoDriver(device)
    raise ValueError(f"unknown relay type {device.kind!r}")
