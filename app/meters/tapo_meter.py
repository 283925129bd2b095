"""TP-Link Tapo/Kasa plugs with energy monitoring (`protocol = tapo`): P115, P110, KP115 through python-kasa.

    [meter:dishwasher]
    protocol = tapo
    host = 192.168.1.80
    username = you@example.com            ; the TP-Link cloud account (Tapo needs it; a Kasa KP115 does not)
    password = ...                        ; secret: SMARTMETER_METER_DISHWASHER_PASSWORD wins
    poll_interval = 10 s                  ; role = zone by default

Each poll asks the plug (python-kasa's Energy module): power in W, and a lifetime energy counter where the
plug keeps one (Kasa KP115; Tapo plugs count per day and month only, so they give power, voltage and
current). The device is found once by a direct discovery to `host` (which tells Tapo from Kasa and the
encryption) and kept; a failed poll drops it and finds it again. python-kasa is imported only in the
meter's own process (`open_poller`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.errors import ConfigError
from app.meters.sample import MeterError, Sample

if TYPE_CHECKING:
    from app.config import Section
    from app.meters import MeterSpec

log = logging.getLogger("app.meters.tapo")
DEFAULT_POLL_INTERVAL = 10.0
DEFAULT_ROLE = "zone"
KEYS = frozenset({"host", "username", "password", "timeout"})


@dataclass(frozen=True)
class TapoSettings:
    """The tapo keys of [meter:NAME]."""

    host: str
    username: str = ""
    password: str = field(default="", repr=False)
    timeout: float = 5.0


def parse_settings(sec: Section, name: str) -> TapoSettings:
    """The tapo keys: host, username, password (secret), timeout."""
    host = sec.text("host", "")
    if not host or any(c in host for c in "/ @"):
        raise ConfigError(f"[{sec.name}] host: {'missing' if not host else 'expected a host name or IP address'}"
                          " (e.g. 192.168.1.80)", sec.name, "host")
    username = sec.text("username", "", env=f"SMARTMETER_METER_{name.upper()}_USERNAME")
    password = sec.text("password", "", env=f"SMARTMETER_METER_{name.upper()}_PASSWORD")
    if bool(username) != bool(password):
        raise ConfigError(f"[{sec.name}] {'password' if username else 'username'}: missing (a Tapo plug needs "
                          "both, the TP-Link account's)", sec.name, "password" if username else "username")
    return TapoSettings(host=host, username=username, password=password,
                        timeout=sec.duration("timeout", 5.0, lo=0.5, hi=60.0))


def sample_of(energy: Any) -> Sample:
    """python-kasa's Energy module -> Sample (power W; energy kWh only from a lifetime counter)."""
    def num(name: str) -> float | None:
        v = getattr(energy, name, None)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    power = num("current_consumption")
    if power is None:
        raise MeterError("the plug gave no power reading")
    return Sample(power_w=power, import_kwh=num("consumption_total"), voltage_v=num("voltage"),
                  current_a=num("current"))


async def discover(s: TapoSettings) -> Any:
    """Find the plug at `host` (Tapo or Kasa, and its encryption) and return python-kasa's Device."""
    from kasa import Credentials, Discover

    creds = Credentials(s.username, s.password) if s.username else None
    dev = await Discover.discover_single(s.host, credentials=creds, discovery_timeout=max(1, int(s.timeout)),
                                         timeout=max(1, int(s.timeout)))
    if dev is None:
        raise MeterError(f"no TP-Link device answers at {s.host}")
    return dev


class TapoPoller:
    """Polls one plug on its own event loop (python-kasa is asyncio)."""

    def __init__(self, spec: MeterSpec, connect: Callable[[TapoSettings], Awaitable[Any]] | None = None) -> None:
        import kasa

        logging.getLogger("kasa").setLevel(logging.CRITICAL)  # our own lines say why, rate-limited
        self.s: TapoSettings = spec.settings
        self.connect = connect or discover
        self.loop = asyncio.new_event_loop()
        self.dev: Any = None
        self._kasa_error: type[Exception] = kasa.KasaException
        self._auth_error: type[Exception] = kasa.AuthenticationError
        self._energy = kasa.Module.Energy

    def poll(self) -> Sample:
        """One update of the plug -> Sample; MeterError with the reason."""
        try:
            return self.loop.run_until_complete(asyncio.wait_for(self._poll(), self.s.timeout * 3))
        except MeterError:
            self._drop()
            raise
        except self._auth_error:
            self._drop()
            raise MeterError(f"the plug at {self.s.host} refused the login: check username/password") from None
        except (self._kasa_error, OSError, TimeoutError) as exc:
            self._drop()
            raise MeterError(f"plug at {self.s.host}: {type(exc).__name__}: {str(exc)[:160]}") from None

    async def _poll(self) -> Sample:
        new = self.dev is None
        if self.dev is None:
            self.dev = await self.connect(self.s)
        await self.dev.update()  # a Kasa (IOT) device knows its model only after its first update
        if new:
            log.info("plug at %s: %s %s", self.s.host, getattr(self.dev, "model", "?"),
                     getattr(self.dev, "alias", "") or "")
        energy = self.dev.modules.get(self._energy)
        if energy is None:
            raise MeterError(f"the device at {self.s.host} ({getattr(self.dev, 'model', '?')}) has no energy "
                             "monitoring")
        return sample_of(energy)

    def _drop(self) -> None:
        dev, self.dev = self.dev, None
        if dev is not None:
            try:
                self.loop.run_until_complete(asyncio.wait_for(dev.disconnect(), 2))
            except (self._kasa_error, OSError, TimeoutError) as exc:
                log.debug("plug at %s: disconnect: %s", self.s.host, exc)

    def close(self) -> None:
        """Disconnect and close the loop."""
        self._drop()
        self.loop.close()


def open_poller(spec: MeterSpec) -> TapoPoller:
    """The poller for [meter:NAME] (python-kasa is imported here, in the meter's process)."""
    return TapoPoller(spec)
