"""HTTP meters (`protocol = http`): a JSON answer polled every poll_interval (stdlib urllib, no new dependency).

    [meter:sub]
    protocol = http
    url = http://192.168.1.70/api/meter
    method = GET                          ; or POST (with `body`)
    headers = Accept: application/json    ; one `Name: value` per line (indented continuation lines)
    auth_token = ...                      ; secret: SMARTMETER_METER_SUB_TOKEN wins; sent as Bearer
    auth_header = X-Api-Key               ; or in this header, bare (default: Authorization: Bearer ...)
    poll_interval = 30 s
    power_unit = W                        ; for `power`/`activePower` without a unit (power_kw is kW)
    path_power = data.meters[0].p         ; optional JSON path per quantity (path_energy, path_voltage, ...)

The answer is mapped by app.meters.payloads (the WAGO guide's `power_kw`, `total_kwh`, `voltage`, `current`,
`power_factor` and the alternates). A failed poll backs off (2x poll_interval, doubling, at most 10 min);
401/403/404/5xx, a timeout and a non-JSON answer each give their own status reason. The token and the URL's
query are never logged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from app.errors import ConfigError
from app.meters.payloads import QUANTITIES, PayloadError, check_path, parse
from app.meters.sample import MeterError, Sample

if TYPE_CHECKING:
    from app.config import Section
    from app.meters import MeterSpec

DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_ROLE = "building"
MAX_BACKOFF_S = 600.0
MAX_ANSWER = 1 << 20  # bytes read from an answer at most
PATH_KEYS = {"power_w": "path_power", "import_kwh": "path_energy", "export_kwh": "path_energy_export",
             "voltage_v": "path_voltage", "current_a": "path_current", "power_factor": "path_power_factor",
             "frequency_hz": "path_frequency"}
KEYS = frozenset({"url", "method", "headers", "body", "auth_token", "auth_header", "timeout", "power_unit",
                  "energy_unit",
                  *PATH_KEYS.values()})


@dataclass(frozen=True)
class HttpSettings:
    """The http keys of [meter:NAME]."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: str = ""
    auth_token: str = field(default="", repr=False)
    auth_header: str = "Authorization"  # Authorization: Bearer <token>; another header gets the bare token
    timeout: float = 5.0
    power_unit: str = "W"
    energy_unit: str = "kWh"
    paths: tuple[tuple[str, str], ...] = ()

    def shown(self) -> dict[str, object]:
        """The settings as --check-config prints them: token masked, the URL's query values and the values
        of secret-looking headers (X-Api-Key) masked."""
        from app.config import is_secret_key

        u = urlsplit(self.url)
        query = "&".join(f"{part.partition('=')[0]}=***" for part in u.query.split("&") if part)
        url = urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, query, ""))
        headers = [(k, "***" if is_secret_key(k.replace("-", "_")) else v) for k, v in self.headers]
        return {"url": url, "method": self.method, "headers": headers, "body": self.body,
                "auth_token": "***" if self.auth_token else "", "auth_header": self.auth_header,
                "timeout": self.timeout,
                "power_unit": self.power_unit, "energy_unit": self.energy_unit, "paths": dict(self.paths)}

    @property
    def where(self) -> str:
        """The URL without its query and user info (what logs and statuses show)."""
        u = urlsplit(self.url)
        host = f"[{u.hostname}]" if u.hostname and ":" in u.hostname else (u.hostname or "")
        return urlunsplit((u.scheme, host + (f":{u.port}" if u.port else ""), u.path, "", ""))


def _url(text: str) -> str:
    u = urlsplit(text)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ValueError("expected an http:// or https:// URL with a host")
    try:
        u.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError("the URL's port is not a number 1..65535") from None
    return text


def _headers(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c in name for c in " \t"):
            raise ValueError(f"expected `Name: value` per line, got {line.strip()[:40]!r}")
        out.append((name.strip(), value.strip()))
    return tuple(out)


def _header_name(text: str) -> str:
    if not text or any(c in text for c in " \t:") or not text.isascii():
        raise ValueError("expected a header name such as X-Api-Key")
    return text


def parse_settings(sec: Section, name: str) -> HttpSettings:
    """The http keys: url, method, headers, body, auth_token, timeout, power_unit, energy_unit, path_*."""
    url = sec.get("url", "", _url)
    if not url:
        raise ConfigError(f"[{sec.name}] url: missing (e.g. http://192.168.1.70/api/meter)", sec.name, "url")
    paths = []
    for quantity, key in PATH_KEYS.items():
        path = sec.get(key, "", check_path)
        if path:
            paths.append((quantity, path))
    no_headers: tuple[tuple[str, str], ...] = ()
    headers = sec.get("headers", no_headers, _headers, multiline=True)
    for hname, _v in headers:
        if hname.lower() == "authorization":
            raise ConfigError(f"[{sec.name}] headers: put the token in auth_token (a secret, never shown), not in "
                              "an Authorization header", sec.name, "headers")
    return HttpSettings(
        url=url,
        method=sec.choice("method", "get", ("get", "post")).upper(),
        headers=headers,
        body=sec.text("body", ""),
        auth_token=sec.text("auth_token", "", env=f"SMARTMETER_METER_{name.upper()}_TOKEN"),
        auth_header=sec.get("auth_header", "Authorization", _header_name),
        timeout=sec.duration("timeout", 5.0, lo=0.1, hi=120.0),
        power_unit={"w": "W", "kw": "kW"}[sec.choice("power_unit", "w", ("w", "kw"))],
        energy_unit={"wh": "Wh", "kwh": "kWh"}[sec.choice("energy_unit", "kwh", ("wh", "kwh"))],
        paths=tuple(paths),
    )


def sample_of(answer: bytes, s: HttpSettings) -> Sample:
    """An answer's body -> Sample (MeterError saying why when it holds nothing usable)."""
    try:
        q = parse(answer, None, s.power_unit, s.energy_unit, dict(s.paths))
    except PayloadError as exc:
        raise MeterError(f"answer from {s.where}: {exc}") from None
    return Sample(**{k: v for k, v in q.items() if k in QUANTITIES})  # type: ignore[arg-type]


class HttpPoller:
    """One request per poll; after a failure the next attempts wait (backoff) and repeat the reason."""

    def __init__(self, spec: MeterSpec, clock: Callable[[], float] = time.monotonic) -> None:
        self.s: HttpSettings = spec.settings
        self.interval = spec.poll_interval or DEFAULT_POLL_INTERVAL
        self.clock = clock
        self.failures = 0
        self.requests = 0
        self._retry_at = 0.0
        self._last_error = ""

    def poll(self) -> Sample:
        """A Sample, or MeterError (the reason; while backing off, the last reason again)."""
        now = self.clock()
        if now < self._retry_at:
            raise MeterError(self._last_error)
        try:
            sample = sample_of(self._fetch(), self.s)
        except MeterError as exc:
            self.failures += 1
            delay = min(self.interval * 2 ** (self.failures - 1), MAX_BACKOFF_S)
            self._retry_at = now + delay if self.failures > 1 else 0.0  # the first failure is retried next poll
            self._last_error = str(exc)
            raise
        self.failures = 0
        self._retry_at = 0.0
        return sample

    def _fetch(self) -> bytes:
        import urllib.error
        import urllib.request

        s = self.s
        headers = {"Accept": "application/json", "User-Agent": "smartmeter"}
        headers.update(dict(s.headers))
        if s.auth_token:
            bearer = s.auth_header.lower() == "authorization"
            headers[s.auth_header] = f"Bearer {s.auth_token}" if bearer else s.auth_token
        data = s.body.encode() if s.method == "POST" else None
        if data is not None and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(s.url, data=data, headers=headers, method=s.method)
        self.requests += 1
        try:
            with urllib.request.urlopen(req, timeout=s.timeout) as resp:
                body: bytes = resp.read(MAX_ANSWER + 1)
        except urllib.error.HTTPError as exc:
            raise MeterError(_http_reason(exc.code, exc.reason, s.where)) from None
        except TimeoutError:
            raise MeterError(f"no answer from {s.where} within {s.timeout:g} s") from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise MeterError(f"no answer from {s.where} within {s.timeout:g} s") from None
            raise MeterError(f"cannot reach {s.where}: {reason}") from None
        except (OSError, ValueError) as exc:  # a reset connection, a broken chunked answer
            raise MeterError(f"request to {s.where} failed: {exc}") from None
        if len(body) > MAX_ANSWER:
            raise MeterError(f"answer from {s.where} is larger than {MAX_ANSWER} bytes")
        return body

    def close(self) -> None:
        """Nothing to release (a connection per request)."""


def _http_reason(code: int, reason: object, where: str) -> str:
    if code in (401, 403):
        return f"HTTP {code} {reason} from {where}: check auth_token"
    if code == 404:
        return f"HTTP 404 Not Found from {where}: check url"
    if code == 429:
        return f"HTTP 429 Too Many Requests from {where}: raise poll_interval"
    if code >= 500:
        return f"HTTP {code} {reason} from {where}: the server failed (retrying with backoff)"
    return f"HTTP {code} {reason} from {where}"


def open_poller(spec: MeterSpec) -> HttpPoller:
    """The poller for [meter:NAME]."""
    return HttpPoller(spec)

