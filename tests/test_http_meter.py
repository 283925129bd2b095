"""HTTP meters against a local http.server: the WAGO guide's JSON, 401, 404, 500, garbage, a slow answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from app.config import Section
from app.errors import ConfigError
from app.meters import MeterSpec, parse_meter
from app.meters.http_meter import HttpPoller, open_poller
from app.meters.sample import MeterError

TOKEN = "s3cr3t-token-value"
WAGO = {"power_kw": 25.5, "total_kwh": 12345.6, "voltage": 230.2, "current": 36.9, "power_factor": 0.97}


class _Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, dict[str, str], bytes]]] = []
    fail_next = 0

    def log_message(self, *_a: object) -> None:
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        _Handler.seen.append((self.command, self.path, dict(self.headers), body))
        path = self.path.split("?")[0]
        if path == "/wago":
            if _Handler.fail_next > 0:
                _Handler.fail_next -= 1
                return self._send(503, b"busy")
            return self._send(200, json.dumps(WAGO).encode())
        if path == "/auth":
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._send(401, b'{"error": "unauthorized"}')
            return self._send(200, json.dumps({"data": {"activePower": 1500, "totalEnergy": 42.0}}).encode())
        if path == "/boom":
            return self._send(500, b"Internal error")
        if path == "/garbage":
            return self._send(200, b"<html>\x00\xff not json</html>")
        if path == "/slow":
            time.sleep(2.0)
            return self._send(200, json.dumps(WAGO).encode())
        return self._send(404, b"no")

    do_GET = _answer
    do_POST = _answer

    def _send(self, code: int, body: bytes) -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the slow answer's client gave up (its timeout is the point of that test)


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    _Handler.seen = []
    _Handler.fail_next = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _spec(items: dict[str, str], name: str = "sub") -> MeterSpec:
    return parse_meter(Section(f"meter:{name}", {"protocol": "http", **items}), name)


def test_wago_json(server: str) -> None:
    spec = _spec({"url": f"{server}/wago"})
    assert spec.poll_interval == 30.0 and spec.offline_after == 90.0
    s = open_poller(spec).poll()
    assert (s.power_w, s.import_kwh, s.voltage_v, s.current_a, s.power_factor) == pytest.approx(
        (25500.0, 12345.6, 230.2, 36.9, 0.97))
    assert _Handler.seen[0][2]["Accept"] == "application/json"


def test_token_post_headers_and_env_wins(server: str, monkeypatch: pytest.MonkeyPatch,
                                         caplog: pytest.LogCaptureFixture) -> None:
    spec = _spec({"url": f"{server}/auth", "auth_token": "wrong", "method": "POST", "body": '{"q": 1}',
                  "headers": "X-Site: home\nAccept: application/json"})
    with pytest.raises(MeterError, match=r"HTTP 401 .*check auth_token"):
        open_poller(spec).poll()
    monkeypatch.setenv("SMARTMETER_METER_SUB_TOKEN", TOKEN)
    spec = _spec({"url": f"{server}/auth", "auth_token": "wrong", "method": "POST", "body": '{"q": 1}',
                  "headers": "X-Site: home"})
    s = open_poller(spec).poll()
    assert (s.power_w, s.import_kwh) == (1500.0, 42.0)
    method, _path, headers, body = _Handler.seen[-1]
    assert (method, headers["X-Site"], body) == ("POST", "home", b'{"q": 1}')
    assert TOKEN not in repr(spec) and TOKEN not in caplog.text


def test_token_in_another_header_and_check_config_masks(server: str) -> None:
    spec = _spec({"url": f"{server}/wago?apikey=q-secret", "auth_token": "tok-1", "auth_header": "X-Api-Key"})
    open_poller(spec).poll()
    assert _Handler.seen[-1][2]["X-Api-Key"] == "tok-1" and "Authorization" not in _Handler.seen[-1][2]
    shown = repr(spec.settings.shown())
    assert "q-secret" not in shown and "tok-1" not in shown and "apikey=***" in shown


def test_statuses_for_404_500_garbage_slow(server: str) -> None:
    with pytest.raises(MeterError, match=r"HTTP 404 .*check url"):
        open_poller(_spec({"url": f"{server}/nothing?key=hidden"})).poll()
    with pytest.raises(MeterError, match=r"HTTP 500 .*server failed") as err:
        open_poller(_spec({"url": f"{server}/boom?token=abc"})).poll()
    assert "abc" not in str(err.value)  # the query is never shown
    with pytest.raises(MeterError, match="not UTF-8 text|neither a number nor JSON"):
        open_poller(_spec({"url": f"{server}/garbage"})).poll()
    t0 = time.monotonic()
    with pytest.raises(MeterError, match=r"no answer from .* within 0.3 s"):
        open_poller(_spec({"url": f"{server}/slow", "timeout": "0.3 s"})).poll()
    assert time.monotonic() - t0 < 2.0  # the timeout, not the server, ended the wait
    with pytest.raises(MeterError, match="cannot reach"):
        open_poller(_spec({"url": "http://127.0.0.1:9/x"})).poll()


def test_backoff_after_failures(server: str) -> None:
    now = [1000.0]
    poller = HttpPoller(_spec({"url": f"{server}/wago", "poll_interval": "10 s"}), clock=lambda: now[0])
    _Handler.fail_next = 2
    with pytest.raises(MeterError, match="503"):
        poller.poll()  # first failure: retried at the next poll
    with pytest.raises(MeterError, match="503"):
        poller.poll()  # second: wait 2 x 10 s
    requests = poller.requests
    now[0] += 10
    with pytest.raises(MeterError, match="503"):
        poller.poll()  # still backing off: the same reason, no request
    assert poller.requests == requests
    now[0] += 11
    assert poller.poll().power_w == 25500.0
    assert poller.failures == 0


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"\[meter:sub\] url: missing"):
        _spec({})
    with pytest.raises(ConfigError, match=r"\[meter:sub\] url = 'ftp://x'"):
        _spec({"url": "ftp://x"})
    with pytest.raises(ConfigError, match=r"\[meter:sub\] path_power = 'a..b'"):
        _spec({"url": "http://x/", "path_power": "a..b"})
    with pytest.raises(ConfigError, match="auth_token"):
        _spec({"url": "http://x/", "headers": "Authorization: Bearer abc"})
    with pytest.raises(ConfigError) as err:
        _spec({"url": "http://x/", "auth_token": "abc\n  more"})
    assert "abc" not in str(err.value)


def test_every_kind_in_one_ini_secrets_masked_unknown_keys_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.config import loads, redacted

    ini = """
[meter]
source = /dev/null
[meter:sub]
protocol = http
url = http://192.168.1.70/api/meter
auth_token = tok-123456
[meter:heat]
protocol = mqtt
topic_power = heat/power
password = mqtt-pw-999
host = broker.lan
[meter:wien]
protocol = iec62056-21
port = /dev/ttyUSB1
[meter:plug]
protocol = tapo
host = 192.168.1.80
username = a@b.c
password = tapo-pw-777
"""
    cfg = loads(ini)
    assert [m.protocol for m in cfg.meters] == ["http", "mqtt", "iec62056-21", "tapo"]
    assert [m.role for m in cfg.meters] == ["building", "building", "building", "zone"]
    shown = repr(redacted(cfg))
    for secret in ("tok-123456", "mqtt-pw-999", "tapo-pw-777"):
        assert secret not in shown
    with pytest.raises(ConfigError, match=r"\[meter:heat\] topic_powr = 'x': unknown key \(did you mean topic_power"):
        loads(ini.replace("topic_power = heat/power", "topic_power = heat/power\ntopic_powr = x"))
