"""TP-Link Tapo (and Kasa) plugs through python-kasa; the plug's auto-off is the dead-man timer.

python-kasa (pinned in requirements.txt) is imported only when a `type = tapo` relay exists.
Auto-off counts in whole minutes from the moment the plug switches on; re-sending ON does not
restart it on every firmware, so keep `deadman` above the longest run you want unbroken: the
read-back then finds the plug off and switches it on again (the rules win).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from typing import Any

from app.control.relays.net import DeviceError
from app.control.relays.settings import DeviceConfig


class TapoDriver:
    """One Tapo plug (or one child socket of a strip: `channel` from 0)."""

    def __init__(self, device: DeviceConfig, connect: Callable[[DeviceConfig], Awaitable[Any]] | None = None) -> None:
        """`connect`: finds the plug (default: python-kasa's discovery at `host` with the credentials)."""
        try:
            import kasa
        except ImportError:
            raise DeviceError("type = tapo needs python-kasa: `pip install python-kasa` in the venv") from None
        self.kasa: Any = kasa
        self.device = device
        self._connect = connect if connect is not None else self._discover
        self._loop = asyncio.new_event_loop()
        self._dev: Any = None

    async def _discover(self, device: DeviceConfig) -> Any:
        creds = self.kasa.Credentials(device.username, device.password)
        return await self.kasa.Discover.discover_single(device.host, credentials=creds)

    def _run(self, coro: Any) -> Any:
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coro, self.device.timeout * 4))
        except (TimeoutError, OSError, self.kasa.KasaException) as exc:
            self._dev = None
            raise DeviceError(f"{self.device.host}: {type(exc).__name__}: {exc}") from None

    async def _plug(self) -> Any:
        if self._dev is None:
            self._dev = await self._connect(self.device)
            if self._dev is None:
                raise DeviceError(f"{self.device.host}: no Tapo/Kasa device answered")
        await self._dev.update()
        dev = self._dev
        return dev.children[self.device.channel] if dev.children else dev

    async def _send(self, on: bool, deadman_s: float) -> bool:
        plug = await self._plug()
        was = bool(plug.is_on)
        if on:
            auto = plug.modules.get("AutoOff")
            if auto is None:
                raise DeviceError(f"{self.device.host}: no auto-off on this device (no dead-man timer)")
            minutes = max(1, math.ceil(deadman_s / 60))
            if auto.delay != minutes or not auto.enabled:  # one call: set_delay alone sends the old enable
                await auto.call("set_auto_off_config", {"enable": True, "delay_min": minutes})
            await plug.turn_on()
        else:
            await plug.turn_off()
        return was

    async def _read(self) -> bool:
        plug = await self._plug()
        return bool(plug.is_on)

    def send(self, on: bool, deadman_s: float) -> bool | None:
        """On with auto-off armed, or off; the plug's state just before."""
        return bool(self._run(self._send(on, deadman_s)))

    def read(self) -> bool:
        """The plug's real state."""
        return bool(self._run(self._read()))

    def close(self) -> None:
        """Close the connection and the event loop."""
        if self._dev is not None:
            try:
                self._run(self._dev.disconnect())
            except DeviceError:
                pass
        self._loop.close()
