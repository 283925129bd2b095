"""A tiny HTTP GET client for relay devices: JSON replies, digest auth (RFC 7616: SHA-256 and MD5).

Python 3.11's urllib digest handler knows MD5 and SHA-1 only; Shelly Gen2+ answers with
`algorithm=SHA-256`, so the challenge is answered here. Credentials never reach a log line or
an exception message (a URL is shown without its query when it may carry a password).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from app.control.relays.net import DeviceError

_PARAM_RE = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|[^,\s]+)')
_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def parse_challenge(header: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth"` -> {'realm': 'x', ...} (ValueError if not digest)."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise ValueError(f"not a digest challenge ({scheme or 'empty'})")
    return {k.lower(): v[1:-1] if v.startswith('"') else v for k, v in _PARAM_RE.findall(rest)}


def digest_header(chal: dict[str, str], username: str, password: str, method: str, uri: str,
                  nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization header answering `chal` (qop=auth, or none when the server offers none)."""
    algorithm = chal.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise ValueError(f"unsupported digest algorithm {algorithm}")
    hfun = _HASHES[algorithm]

    def h(s: str) -> str:
        return hfun(s.encode()).hexdigest()

    realm, nonce = chal.get("realm", ""), chal.get("nonce", "")
    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    cnonce = cnonce or os.urandom(8).hex()
    qops = [q.strip() for q in chal.get("qop", "").split(",") if q.strip()]
    parts = [f'username="{username}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"',
             f"algorithm={algorithm}"]
    if "auth" in qops:
        resp = h(f"{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f"nc={nc:08x}", f'cnonce="{cnonce}"']
    else:
        resp = h(f"{ha1}:{nonce}:{ha2}")
    parts.append(f'response="{resp}"')
    if "opaque" in chal:
        parts.append(f'opaque="{chal["opaque"]}"')
    return "Digest " + ", ".join(parts)


class JsonHttp:
    """GET `path?query` on one device and decode the JSON reply; digest auth when asked for."""

    def __init__(self, host: str, username: str = "", password: str = "", timeout_s: float = 2.0) -> None:
        self.base = f"http://{host}"
        self.username = username
        self._password = password
        self.timeout_s = timeout_s
        self._challenge: dict[str, str] | None = None
        self._nc = 0

    def get(self, path: str, params: dict[str, str] | None = None, timeout_s: float | None = None) -> Any:
        """The decoded JSON reply; DeviceError (without the query) on any failure."""
        uri = path + ("?" + urllib.parse.urlencode(params) if params else "")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        for attempt in (1, 2):
            headers = {"Accept": "application/json"}
            if self._challenge is not None and self._password:
                self._nc += 1
                headers["Authorization"] = digest_header(self._challenge, self.username, self._password, "GET",
                                                         uri, self._nc)
            req = urllib.request.Request(self.base + uri, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    body = resp.read(1 << 16)
            except urllib.error.HTTPError as exc:
                challenge = exc.headers.get("WWW-Authenticate", "") if exc.headers else ""
                exc.close()
                if exc.code == 401 and challenge and attempt == 1 and self._password:
                    try:
                        self._challenge, self._nc = parse_challenge(challenge), 0
                    except ValueError as why:
                        raise DeviceError(f"{self.base}{path}: 401, {why}") from None
                    continue
                if exc.code == 401:
                    who = "wrong username or password" if self._password else "the device wants a password"
                    raise DeviceError(f"{self.base}{path}: 401 unauthorized ({who})") from None
                raise DeviceError(f"{self.base}{path}: HTTP {exc.code}") from None
            except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
                reason = getattr(exc, "reason", None) or exc
                raise DeviceError(f"{self.base}{path}: {reason}") from None
            try:
                return json.loads(body)
            except ValueError:
                raise DeviceError(f"{self.base}{path}: not JSON ({body[:60]!r})") from None
        raise DeviceError(f"{self.base}{path}: 401 unauthorized")
