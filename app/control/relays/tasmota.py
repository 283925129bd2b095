"""Tasmota relays over HTTP (`/cm?cmnd=`) or over the [mqtt] broker; `PulseTime` is the dead-man timer.

    GET /cm?cmnd=PulseTime1%20220   -> {"PulseTime1": {"Set": 220, "Remaining": 0}}
    GET /cm?cmnd=Power1%20ON        -> {"POWER": "ON"}  (a one-relay device) or {"POWER1": "ON"}
    GET /cm?cmnd=Power1             -> the same: the state, unchanged
    MQTT: cmnd/<topic>/PulseTime1 = 220, cmnd/<topic>/POWER1 = ON | OFF | "" (query);
          the device answers on stat/<topic>/RESULT and stat/<topic>/POWER[1]

PulseTime switches the relay off again after the set time, counted from every ON it receives
(so re-sending ON pushes it out): 1-111 are tenths of a second, 112-64900 are seconds + 100.
A device password (WebPassword) goes in the query as user/password (never logged).
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from app.control.relays.http import JsonHttp
from app.control.relays.net import DeviceError
from app.control.relays.settings import DeviceConfig

if TYPE_CHECKING:
    from app.config import MqttConfig


def pulse_time(seconds: float) -> int:
    """Seconds -> Tasmota's PulseTime value (1-111: 0.1 s steps; 112-64900: seconds + 100)."""
    if seconds <= 11.1:
        return max(1, round(seconds * 10))
    return min(64900, round(seconds) + 100)


def pulse_seconds(value: int) -> float:
    """Tasmota's PulseTime value -> seconds (0: no timer)."""
    return value / 10 if value <= 111 else float(value - 100)


def power_state(reply: Any, channel: int) -> bool:
    """ON/OFF out of a reply such as {"POWER1": "ON"} (a one-relay device says "POWER")."""
    if isinstance(reply, dict):
        for key in (f"POWER{channel}", "POWER" if channel == 1 else ""):
            value = reply.get(key) if key else None
            if isinstance(value, str) and value.upper() in ("ON", "OFF"):
                return value.upper() == "ON"
    raise DeviceError(f"unexpected reply (no POWER{channel}): {str(reply)[:80]}")


class TasmotaHttpDriver:
    """One relay of a Tasmota device over its HTTP command endpoint."""

    def __init__(self, device: DeviceConfig) -> None:
        self.device = device
        self.http = JsonHttp(device.host, timeout_s=device.timeout)
        self._pulse: int | None = None  # the PulseTime the device confirmed

    def _cmnd(self, command: str) -> Any:
        params = {"cmnd": command}
        if self.device.password:
            params = {"user": self.device.username or "admin", "password": self.device.password, **params}
        return self.http.get("/cm", params)

    def send(self, on: bool, deadman_s: float) -> bool | None:
        """PulseTime (when it differs) then Power ON, or Power OFF (the state before is not known)."""
        ch = self.device.channel
        if on:
            want = pulse_time(deadman_s)
            if self._pulse != want:
                reply = self._cmnd(f"PulseTime{ch} {want}")
                got = reply.get(f"PulseTime{ch}") if isinstance(reply, dict) else None
                if not isinstance(got, dict) or got.get("Set") != want:
                    raise DeviceError(f"PulseTime{ch} not accepted: {str(reply)[:80]}")
                self._pulse = want
        if power_state(self._cmnd(f"Power{ch} {'ON' if on else 'OFF'}"), ch) != on:
            raise DeviceError(f"Power{ch} {'ON' if on else 'OFF'} not applied")
        return None

    def read(self) -> bool:
        """Power<n> without an argument: the state."""
        return power_state(self._cmnd(f"Power{self.device.channel}"), self.device.channel)

    def close(self) -> None:
        """Nothing held open."""


class TasmotaMqttDriver:
    """One relay of a Tasmota device over the [mqtt] broker (its own client, in the relay's thread)."""

    def __init__(self, device: DeviceConfig, mqtt: MqttConfig) -> None:
        import paho.mqtt.client as paho

        self.device = device
        self.topic = device.mqtt_topic
        self._cond = threading.Condition()
        self._state: bool | None = None
        self._seq = 0  # bumped on every POWER message
        self._pulse_set: int | None = None
        client_id = f"{mqtt.client_id or 'smartmeter'}-relay-{self.topic}"[:64]
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id)
        if mqtt.username:
            self.client.username_pw_set(mqtt.username, mqtt.password or None)
        if mqtt.tls:
            self.client.tls_set(ca_certs=mqtt.ca_file or None, certfile=mqtt.cert_file or None,
                                keyfile=mqtt.key_file or None)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, int(max(1.0, device.refresh)))
        self.client.connect_async(mqtt.host, mqtt.port, keepalive=int(mqtt.keepalive))
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any = None) -> None:
        if not getattr(reason, "is_failure", False):
            client.subscribe([(f"stat/{self.topic}/RESULT", 1), (f"stat/{self.topic}/POWER", 1),
                              (f"stat/{self.topic}/POWER{self.device.channel}", 1)])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            payload = msg.payload.decode("utf-8", "replace").strip()
            if msg.topic.endswith("/RESULT"):
                data = json.loads(payload)
                if isinstance(data, dict):
                    pulse = data.get(f"PulseTime{self.device.channel}")
                    if isinstance(pulse, dict) and isinstance(pulse.get("Set"), int):
                        with self._cond:
                            self._pulse_set = pulse["Set"]
                            self._cond.notify_all()
                    state = power_state(data, self.device.channel)
                else:
                    return
            elif msg.topic.endswith(("/POWER", f"/POWER{self.device.channel}")):
                if msg.topic.endswith("/POWER") and self.device.channel != 1:
                    return
                state = power_state({msg.topic.rsplit("/", 1)[1]: payload}, self.device.channel)
            else:
                return
        except (ValueError, DeviceError):
            return  # a RESULT for another command (or garbage): not a state
        with self._cond:
            self._state = state
            self._seq += 1
            self._cond.notify_all()

    def _command(self, suffix: str, payload: str) -> None:
        if not self.client.is_connected():
            raise DeviceError(f"broker not connected (topic {self.topic})")
        info = self.client.publish(f"cmnd/{self.topic}/{suffix}", payload, qos=1)
        if info.rc != 0:
            raise DeviceError(f"publish to cmnd/{self.topic}/{suffix} failed (rc {info.rc})")

    def _await_state(self, seq: int) -> bool:
        with self._cond:
            if not self._cond.wait_for(lambda: self._seq > seq, self.device.timeout):
                raise DeviceError(f"no answer on stat/{self.topic} within {self.device.timeout:g} s")
            assert self._state is not None
            return self._state

    def send(self, on: bool, deadman_s: float) -> bool | None:
        """PulseTime (when it differs) then POWER ON, or POWER OFF; waits for the device's answer. The state
        before is the one the device last published (a button press publishes it)."""
        ch = self.device.channel
        if on:
            want = pulse_time(deadman_s)
            if self._pulse_set != want:
                self._command(f"PulseTime{ch}", str(want))
                with self._cond:
                    if not self._cond.wait_for(lambda: self._pulse_set == want, self.device.timeout):
                        raise DeviceError(f"PulseTime{ch} not confirmed on stat/{self.topic}/RESULT")
        with self._cond:
            seq = self._seq
            was = self._state
        self._command(f"POWER{ch}", "ON" if on else "OFF")
        if self._await_state(seq) != on:
            raise DeviceError(f"POWER{ch} {'ON' if on else 'OFF'} not applied")
        return was

    def read(self) -> bool:
        """An empty POWER command asks the device for its state."""
        with self._cond:
            seq = self._seq
        self._command(f"POWER{self.device.channel}", "")
        return self._await_state(seq)

    def close(self) -> None:
        """Disconnect from the broker."""
        self.client.disconnect()
        self.client.loop_stop()
