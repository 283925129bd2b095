"""Shelly Gen2+ (Plus, Pro, Gen3, Gen4) over HTTP RPC: `Switch.Set` with `toggle_after`, `Switch.GetStatus`.

    GET /rpc/Switch.Set?id=0&on=true&toggle_after=120   -> {"was_on": false}
    GET /rpc/Switch.Set?id=0&on=false                   -> {"was_on": true}   (cancels the timer)
    GET /rpc/Switch.GetStatus?id=0                      -> {"id": 0, "output": true, ...}

With a password set on the device every call is digest-authenticated (SHA-256, user `admin`).
`toggle_after` flips the output back after that many seconds: the dead-man timer.
"""

from __future__ import annotations

from typing import Any

from app.control.relays.http import JsonHttp
from app.control.relays.net import DeviceError
from app.control.relays.settings import DeviceConfig


class ShellyDriver:
    """One switch channel of a Shelly Gen2+ device."""

    def __init__(self, device: DeviceConfig) -> None:
        self.device = device
        self.http = JsonHttp(device.host, device.username or "admin", device.password, device.timeout)

    def send(self, on: bool, deadman_s: float) -> bool | None:
        """Switch.Set: on with toggle_after = the dead-man time, or off (which clears any timer); `was_on`."""
        params = {"id": str(self.device.channel), "on": "true" if on else "false"}
        if on:
            params["toggle_after"] = f"{deadman_s:g}"
        reply = self.http.get("/rpc/Switch.Set", params)
        _check(reply, "was_on", "Switch.Set")
        return bool(reply["was_on"])

    def read(self) -> bool:
        """Switch.GetStatus: the output's real state."""
        reply = self.http.get("/rpc/Switch.GetStatus", {"id": str(self.device.channel)})
        _check(reply, "output", "Switch.GetStatus")
        return bool(reply["output"])

    def close(self) -> None:
        """Nothing held open (one request per call)."""


def _check(reply: Any, key: str, method: str) -> None:
    if isinstance(reply, dict) and "code" in reply and "message" in reply:  # an RPC error object
        raise DeviceError(f"{method}: error {reply['code']}: {reply['message']}")
    if not isinstance(reply, dict) or key not in reply:
        raise DeviceError(f"{method}: unexpected reply (no {key!r})")
