"""A Shelly Gen2+ device simulator: HTTP RPC (`/rpc/Switch.Set`, `/rpc/Switch.GetStatus`, POST `/rpc`)
with digest authentication as the Shelly API docs describe it (RFC 7616, SHA-256, user `admin`,
realm = the device id), on 127.0.0.1 with an ephemeral port. Tests only."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from app.control.relays.http import parse_challenge
from tests.sim_switch import SimSwitch

REALM = "shellyplus1pm-a8032ab12345"


class ShellySim:
    """One Shelly with `channels` switches; `password` empty: no authentication."""

    def __init__(self, password: str = "", channels: int = 1, port: int = 0) -> None:
        self.password = password
        self.switches = [SimSwitch() for _ in range(channels)]
        self.requests: list[tuple[str, dict[str, Any], bool]] = []  # (method, params, authorized)
        self.unauthorized = 0
        self.nonces: set[str] = set()
        self.hang_s = 0.0  # answer this late (a device on a bad link)
        self.port = port
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def host(self) -> str:
        """`host` for the relay config."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Listen (again, on the same port)."""
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                params = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                if not url.path.startswith("/rpc/"):
                    self._reply(404, {"code": 404, "message": "not found"})
                    return
                self._call(url.path[len("/rpc/"):], {k: _value(v) for k, v in params.items()}, "GET")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                self._call(body.get("method", ""), body.get("params") or {}, "POST", body.get("id"))

            def _call(self, method: str, params: dict[str, Any], verb: str, rid: Any = None) -> None:
                if sim.hang_s:
                    time.sleep(sim.hang_s)
                ok = sim.authorized(self.headers.get("Authorization", ""), verb, self.path)
                sim.requests.append((method, params, ok))
                if not ok:
                    sim.unauthorized += 1
                    nonce = os.urandom(8).hex()
                    sim.nonces.add(nonce)
                    self._reply(401, {"code": 401, "message": "unauthorized"}, {
                        "WWW-Authenticate": f'Digest qop="auth", realm="{REALM}", nonce="{nonce}", algorithm=SHA-256'})
                    return
                code, result = sim.rpc(method, params)
                if verb == "POST" and code == 200:
                    result = {"id": rid, "src": REALM, "result": result}
                self._reply(code, result)

            def _reply(self, code: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def stop(self) -> None:
        """Stop listening (the device is unreachable); the switches keep their state and timers."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def close(self) -> None:
        """Stop everything."""
        self.stop()
        for s in self.switches:
            s.stop()

    def authorized(self, header: str, verb: str, uri: str) -> bool:
        """RFC 7616 digest check with SHA-256, as a Shelly with a password does it."""
        if not self.password:
            return True
        try:
            got = parse_challenge(header)
        except ValueError:
            return False
        if got.get("username") != "admin" or got.get("nonce") not in self.nonces or got.get("uri") != uri:
            return False

        def h(s: str) -> str:
            return hashlib.sha256(s.encode()).hexdigest()

        ha1 = h(f"admin:{REALM}:{self.password}")
        ha2 = h(f"{verb}:{uri}")
        want = h(f"{ha1}:{got['nonce']}:{got.get('nc', '')}:{got.get('cnonce', '')}:auth:{ha2}")
        return got.get("response") == want and got.get("algorithm", "").upper() == "SHA-256"

    def rpc(self, method: str, params: dict[str, Any]) -> tuple[int, Any]:
        """One RPC call -> (HTTP status, result or error object)."""
        sid = params.get("id", 0)
        if method not in ("Switch.Set", "Switch.GetStatus", "Switch.Toggle"):
            return 404, {"code": 404, "message": f"No handler for {method}"}
        if not isinstance(sid, int) or not 0 <= sid < len(self.switches):
            return 500, {"code": -105, "message": f"Argument 'id', value {sid} not found!"}
        sw = self.switches[sid]
        if method == "Switch.Set":
            on = params.get("on")
            if not isinstance(on, bool):
                return 500, {"code": -103, "message": "Missing required argument 'on'!"}
            after = params.get("toggle_after")
            return 200, {"was_on": sw.set(on, float(after) if after is not None else None, "http")}
        if method == "Switch.Toggle":
            return 200, {"was_on": sw.set(not sw.state(), None, "http")}
        with sw.lock:
            out = sw.state()
            status: dict[str, Any] = {"id": sid, "source": "http", "output": out, "apower": 0.0}
            if sw.deadline is not None:
                status["timer_duration"] = round(sw.deadline - time.monotonic(), 2)
        return 200, status


def _value(text: str) -> Any:
    """A query value as the Shelly RPC reads it (JSON: true, 120, "x")."""
    try:
        return json.loads(text)
    except ValueError:
        return text
