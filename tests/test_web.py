"""The web process's REST API on a real uvicorn server (loopback, ephemeral port), fed by a real
PostProcessor over the real channels, with relays on gpiozero's MockFactory."""

from __future__ import annotations

import json
import logging
import multiprocessing
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from gpiozero.pins.mock import MockFactory

from app.config import Config, loads
from app.errors import ConfigError
from app.pipeline import PostProcessor
from app.records import ReaderStatus, Reading
from app.web import server
from app.web.link import CHANNEL_QUEUE, LIVE_QUEUE, Channels, WebLink
from app.web.state import SUBSCRIBER_QUEUE, LiveState

WAIT_S = 20.0
TOKEN = "s3cret-t0ken"
BASE = datetime(2024, 6, 3, 10, 0, tzinfo=UTC)
INI = """
[meter]
source = /dev/null
[control]
settle = 0 s
override_min_interval = 0 s
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W
off_when = export < 200 W
[web]
enabled = yes
"""


def reading(seq: int, import_w: float = 0.0, export_w: float = 0.0) -> Reading:
    """A reading with power, per-phase values and totals."""
    t = BASE + timedelta(seconds=seq)
    fields = {"actual_total_consumption": import_w / 1000, "actual_total_injection": export_w / 1000,
              "actual_l1_consumption": import_w / 1000, "l1_voltage": 231.5, "l2_voltage": 229.5,
              "l1_current": 4.0, "total_consumption_day": 100.0, "total_consumption_night": 50.5,
              "total_injection_day": 20.0, "total_injection_night": 1.0}
    return Reading(seq, "dsmr", "1SAG1105123456", "/Ene5\\T210-D", t, t, {}, fields)


class FakeHistory:
    """Stands in for app.store.query.HistoryQuery: records calls, answers fixed rows."""

    calls: ClassVar[list[tuple[Any, ...]]] = []
    fail: ClassVar[Exception | None] = None

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def _check(self, *call: Any) -> None:
        FakeHistory.calls.append(call)
        if FakeHistory.fail is not None:
            raise FakeHistory.fail

    def rows(self, resolution: str, start: Any, end: Any, tariff: str | None = None,
             meter: str | None = None) -> list[dict[str, Any]]:
        self._check("rows", resolution, start, end)
        return [{"start": start.isoformat(), "import_kwh": 1.25, "export_kwh": 0.5}]

    def cost(self, start: Any, end: Any, tariff: str | None = None, meter: str | None = None) -> dict[str, Any]:
        self._check("cost", start, end, tariff)
        return {"currency": "EUR", "from": start.isoformat(), "to": end.isoformat(), "total": 12.5,
                "periods": [], "projection": None, "compare": []}

    def capacity(self, meter: str | None = None) -> dict[str, Any]:
        self._check("capacity")
        return {"peak_kw": 2.5, "mean_12m_kw": 2.6, "floor_kw": 2.5}

    def meters(self) -> list[str]:
        return ["grid"]

    def close(self) -> None:
        pass


class Served:
    """A web server thread and a post-processor thread joined by the real channels."""

    def __init__(self, ini: str, history: Any = FakeHistory) -> None:
        self.cfg = loads(ini)
        self.factory = MockFactory()
        self.channels = Channels(multiprocessing.get_context("fork"))
        self.pp = PostProcessor(self.cfg, sinks=[], pin_factory=self.factory)
        self.pp.link_web(self.channels)
        self.pp.start()
        self.feed: queue.Queue[Any] = queue.Queue()
        self.stop = threading.Event()
        sock = server.listen("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.errors: list[BaseException] = []
        self.web = threading.Thread(target=self._serve, args=(sock, history), daemon=True)
        self.web.start()
        self.post = threading.Thread(target=self._post, daemon=True)
        self.post.start()
        wait_until(lambda: self._up())

    def _serve(self, sock: socket.socket, history: Any) -> None:
        try:
            server.serve(self.cfg, self.channels, self.stop.is_set, sock, history_factory=history)
        except BaseException as exc:
            self.errors.append(exc)

    def _post(self) -> None:
        while not self.stop.is_set():
            try:
                self.pp.dispatch(self.feed.get(timeout=0.05))
            except queue.Empty:
                pass
            self.pp.tick()

    def _up(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def send(self, item: Any) -> None:
        """A reading (or reader status) as if from the reader process."""
        self.feed.put(item)

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                token: str | None = None) -> tuple[int, Any, dict[str, str]]:
        """(status, JSON body, headers)."""
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        h = dict(headers or {})
        if token:
            h["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.url + path, data=data, headers=h, method=method)
        try:
            with urllib.request.urlopen(req, timeout=WAIT_S) as resp:
                raw, status, hdrs = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw, status, hdrs = exc.read(), exc.code, dict(exc.headers)
        return status, (json.loads(raw) if raw and "json" in hdrs.get("content-type", "") else raw), hdrs

    def get(self, path: str, token: str | None = None) -> tuple[int, Any]:
        status, body, _h = self.request("GET", path, token=token)
        return status, body

    def close(self) -> None:
        """Stop both threads and release the pins."""
        self.stop.set()
        self.web.join(WAIT_S)
        self.post.join(WAIT_S)
        self.pp.close(timeout_s=2.0)
        self.factory.reset()
        assert not self.errors, self.errors


def wait_until(cond: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    """Poll until `cond()` is truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def served() -> Iterator[Served]:
    FakeHistory.calls, FakeHistory.fail = [], None
    s = Served(INI)
    yield s
    s.close()


@pytest.fixture
def served_token() -> Iterator[Served]:
    FakeHistory.calls, FakeHistory.fail = [], None
    s = Served(INI + f"token = {TOKEN}\nhost = 0.0.0.0\n")
    yield s
    s.close()


def current_seq(s: Served, seq: int) -> bool:
    status, body = s.get("/api/energy/smart-meter/current", token=TOKEN if s.cfg.web.token else None)
    return status == 200 and body["seq"] == seq


# ---------------------------------------------------------------- REST


def test_before_the_first_reading(served: Served) -> None:
    status, body = served.get("/api/energy/smart-meter/status")
    assert status == 200 and body["online"] is False and body["last_reading"] is None
    assert body["counters"]["telegrams_ok"] is None and body["version"]  # unknown until the reader's status
    assert body["counters"]["crc_errors"] is None and body["counters"]["readings"] is None
    assert body["counters"]["live_clients_dropped"] == 0  # the web process's own: known
    for path in ("/api/energy/smart-meter/current", "/api/energy-meters/consumption/building",
                 "/api/energy-meters/grid/reading"):
        status, body = served.get(path)
        assert (status, body["success"]) == (503, False), path
        assert "no reading" in body["error"]
    status, body = served.get("/api/energy-meters")
    assert status == 200 and body["count"] == 1 and body["data"][0]["status"] == "offline"
    assert body["data"][0]["currentPower"] is None


def test_current_status_and_meter_registry_follow_the_readings(served: Served) -> None:
    served.send(reading(1, import_w=1200.0, export_w=200.0))
    served.send(ReaderStatus(frames_ok=7, crc_errors=2, dropped=1, lag_mean_s=0.4, lag_max_s=0.9,
                             protocol="dsmr", header="/Ene5\\T210-D"))
    wait_until(lambda: current_seq(served, 1))
    status, cur = served.get("/api/energy/smart-meter/current")
    assert cur["power_w"] == 1000.0 and cur["meter_id"] == "1SAG1105123456"
    assert cur["fields"]["l1_voltage"] == 231.5 and cur["relays"] == {"boiler": "off"}
    assert datetime.fromisoformat(cur["timestamp"]) == BASE + timedelta(seconds=1)
    body = wait_until(lambda: (b := served.get("/api/energy/smart-meter/status")[1])["counters"]["crc_errors"] and b)
    assert body["online"] is True and body["meter_id"] == "1SAG1105123456" and body["protocol"] == "dsmr"
    assert body["counters"]["telegrams_ok"] == 7 and body["counters"]["dropped"] == 1
    assert body["lag_s"] == {"mean": 0.4, "max": 0.9} and body["counters"]["readings"] == 1

    status, meters = served.get("/api/energy-meters")
    m = meters["data"][0]
    assert set(m) == {"id", "name", "location", "protocol", "meterType", "status", "statusReason", "currentPower",
                      "totalEnergy",
                      "voltage", "current", "powerFactor", "frequency", "lastUpdate"}
    assert (m["id"], m["meterType"], m["status"], m["currentPower"], m["totalEnergy"]) == (
        "grid", "grid", "online", 1.0, 150.5)
    assert m["voltage"] == 230.5 and m["current"] == 4.0 and m["powerFactor"] is None
    for meter_id in ("grid", "1SAG1105123456"):
        status, one = served.get(f"/api/energy-meters/{meter_id}")
        assert status == 200 and one == {"success": True, "data": m}
    status, r = served.get("/api/energy-meters/grid/reading")
    assert status == 200 and r["data"]["currentPower"] == 1.0 and r["data"]["totalExport"] == 21.0
    status, b = served.get("/api/energy-meters/consumption/building")
    assert b == {"success": True, "data": {"currentPower": 1.0, "totalEnergy": 150.5, "meterCount": 1,
                                           "timestamp": cur["timestamp"]}}
    status, missing = served.get("/api/energy-meters/nope")
    assert status == 404 and missing["success"] is False
    status, missing = served.get("/api/no/such/thing")
    assert status == 404 and missing == {"success": False, "error": "Not Found"}


def test_history_and_cost_come_from_the_query_layer(served: Served) -> None:
    status, body = served.get("/api/energy/smart-meter/history?resolution=day&from=2024-05-01&to=2024-05-31")
    assert status == 200 and body["resolution"] == "day" and body["rows"][0]["import_kwh"] == 1.25
    assert FakeHistory.calls[-1] == ("rows", "day", datetime(2024, 5, 1).date(), datetime(2024, 5, 31).date())
    status, body = served.get("/api/energy/smart-meter/cost?from=2024-05-01&to=2024-05-31&tariff=dynamic")
    assert status == 200 and body["total"] == 12.5 and FakeHistory.calls[-1][-1] == "dynamic"
    status, body = served.get("/api/energy/smart-meter/capacity")
    assert status == 200 and body["peak_kw"] == 2.5
    for query in ("resolution=week", "from=2024-13-01", "from=yesterday", "from=2024-06-02&to=2024-06-01",
                  "from=2024-06-01&to=2024-06-01", "from=2024-06-01T10:00",
                  "resolution=quarter&from=2020-01-01&to=2024-01-01"):
        status, body = served.get(f"/api/energy/smart-meter/history?{query}")
        assert status == 400 and body["success"] is False and body["error"], query
    FakeHistory.fail = ValueError("unknown tariff 'x'")
    status, body = served.get("/api/energy/smart-meter/cost?tariff=x")
    assert (status, body) == (400, {"success": False, "error": "unknown tariff 'x'"})
    FakeHistory.fail = OSError("unable to open database file")
    status, body = served.get("/api/energy/smart-meter/history")
    assert status == 503 and "unable to open database file" in body["error"]


def test_history_store_off_is_503() -> None:
    s = Served(INI + "[history]\nenabled = no\n")
    try:
        status, body = s.get("/api/energy/smart-meter/history")
        assert status == 503 and "[history] enabled = no" in body["error"]
    finally:
        s.close()


# ---------------------------------------------------------------- relays


def test_relays_show_state_mode_reason_and_timers(served: Served) -> None:
    status, body = served.get("/api/relays")
    assert status == 200 and body["relays"][0]["name"] == "boiler" and body["relays"][0]["state"] == "off"
    served.send(reading(1, export_w=2000.0))
    served.send(reading(2, export_w=2000.0))
    relay = wait_until(lambda: (r := served.get("/api/relays")[1]["relays"][0])["state"] == "on" and r)
    assert relay["mode"] == "auto" and relay["reason"].startswith("export") and relay["pending"] is None
    assert datetime.fromisoformat(relay["since"]) == BASE + timedelta(seconds=1)
    assert relay["blocked_by"] == [] and relay["next_switch_allowed"] is None


def test_relay_post_goes_through_the_override_path(served: Served) -> None:
    served.send(reading(1, export_w=0.0))
    wait_until(lambda: current_seq(served, 1))
    status, body, _h = served.request("POST", "/api/relays/boiler", {"mode": "on"})
    assert status == 202 and body["mode"] == "on" and body["outcome"] == "applied"
    assert body["state"]["state"] == "on" and body["state"]["mode"] == "on"
    assert body["state"]["blocked_by"] == ["manual"]
    assert served.factory.pin("GPIO17").state  # the mock pin switched
    status, relays = served.get("/api/relays")
    assert relays["relays"][0]["reason"] == "manual override ON"
    status, body, _h = served.request("POST", "/api/relays/boiler", {"mode": "AUTO"})
    assert status == 202 and body["outcome"] == "applied" and body["state"]["mode"] == "auto"
    status, body, _h = served.request("POST", "/api/relays/boiler", {"mode": "off"},
                                      headers={"Origin": served.url})
    assert status == 202 and body["state"]["state"] == "off" and not served.factory.pin("GPIO17").state
    for bad in ({"mode": "toggle"}, {"state": "on"}, [1], b"{not json", None):
        status, body, _h = served.request("POST", "/api/relays/boiler", bad)
        assert status == 400 and body["success"] is False, bad
    status, body, _h = served.request("POST", "/api/relays/nope", {"mode": "on"})
    assert status == 404


def test_relay_post_while_stale_holds_the_safe_state(served: Served) -> None:
    served.pp.safe("test: stale")  # readings stopped: relays held in the safe state
    status, body, _h = served.request("POST", "/api/relays/boiler", {"mode": "on"})
    assert status == 202 and body["state"]["mode"] == "on" and body["state"]["state"] == "off"
    assert not served.factory.pin("GPIO17").state


def test_relay_protection_defers_a_command_and_says_until_when() -> None:
    s = Served(INI.replace("override_min_interval = 0 s", "override_min_interval = 1 h"))
    try:
        status, body, _h = s.request("POST", "/api/relays/boiler", {"mode": "on"})
        assert status == 202 and body["outcome"] == "applied" and s.factory.pin("GPIO17").state
        status, body, _h = s.request("POST", "/api/relays/boiler", {"mode": "off"})
        assert status == 202 and body["outcome"] == "deferred" and "override_min_interval" in body["detail"]
        assert datetime.fromisoformat(body["until"]) > datetime.now(UTC) + timedelta(minutes=50)
        assert body["state"]["state"] == "on" and body["state"]["pending"].startswith("OFF deferred until")
        assert s.factory.pin("GPIO17").state  # still on
        status, body, _h = s.request("POST", "/api/relays/boiler", {"mode": "on"})
        assert body["outcome"] == "unchanged"
    finally:
        s.close()


def test_cross_origin_writes_are_refused(served: Served) -> None:
    for headers in ({"Origin": "http://evil.example"}, {"Referer": "http://192.168.1.9:8080/page"},
                    {"Origin": "null"}):
        status, body, _h = served.request("POST", "/api/relays/boiler", {"mode": "on"}, headers=headers)
        assert status == 403 and body["success"] is False, headers
    assert not served.factory.pin("GPIO17").state


# ---------------------------------------------------------------- token and access log


def test_token_is_required_and_never_logged(served_token: Served, caplog: pytest.LogCaptureFixture) -> None:
    s = served_token
    caplog.set_level(logging.INFO, logger="app.web.access")
    for token in (None, "wrong", TOKEN + "x"):
        status, body, headers = s.request("GET", "/api/energy/smart-meter/status", token=token)
        assert status == 401 and body == {"success": False, "error": "missing or wrong bearer token"}
        assert headers.get("www-authenticate", headers.get("WWW-Authenticate")) == "Bearer"
    status, body, _h = s.request("POST", "/mcp", {"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert status == 401
    status, body = s.get("/api/energy/smart-meter/status", token=TOKEN)
    assert status == 200
    status, _body, _h = s.request("GET", "/openapi.json")  # the document itself is public
    assert status == 200
    warnings = [r for r in caplog.records if r.name == "app.web.access" and r.levelno == logging.WARNING]
    first = warnings[0].getMessage()
    assert "401" in first and "/api/energy/smart-meter/status" in first
    assert len(warnings) <= 2  # rate-limited per client
    infos = [r.getMessage() for r in caplog.records if r.name == "app.web.access" and r.levelno == logging.INFO]
    assert any(m.startswith("GET /api/energy/smart-meter/status 200 127.0.0.1:") for m in infos)
    assert all(TOKEN not in r.getMessage() for r in caplog.records)


def test_config_host_beyond_loopback_needs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"\[web\] host = '0.0.0.0'.*needs a token"):
        loads("[web]\nenabled = yes\nhost = 0.0.0.0\n")
    assert loads("[web]\nhost = ::1\n").web.host == "::1"
    with pytest.raises(ConfigError, match=r"\[web\] token = '\*\*\*'") as err:
        loads("[web]\ntoken = has space\n")
    assert "has space" not in str(err.value)
    monkeypatch.setenv("SMARTMETER_WEB_TOKEN", "from-env")
    cfg = loads("[web]\nhost = 0.0.0.0\ntoken = from-file\n")
    assert cfg.web.token == "from-env" and "from-env" not in repr(cfg.web)


# ---------------------------------------------------------------- live stream


def _sse_events(s: Served, n: int, headers: str = "", query: str = "",
                until: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Read n data events (id, data), or up to the one with id `until`, from /api/live over a raw socket."""
    with socket.create_connection(("127.0.0.1", s.port), timeout=WAIT_S) as c:
        c.sendall(f"GET /api/live{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}\r\n".encode())
        buf = b""
        events: list[tuple[str, dict[str, Any]]] = []
        deadline = time.monotonic() + WAIT_S
        while len(events) < n and not (events and events[-1][0] == until) and time.monotonic() < deadline:
            buf += c.recv(65536)
            while b"\n\n" in buf:
                block, buf = buf.split(b"\n\n", 1)
                lines = dict(line.split(": ", 1) for line in block.decode().splitlines()
                             if ": " in line and not line.startswith(("HTTP/", ":")))
                if "data" in lines and "id" in lines:
                    events.append((lines["id"], json.loads(lines["data"])))
        assert b"" in buf
        return events


def test_sse_sends_one_event_per_reading_and_resumes_by_last_event_id(served: Served) -> None:
    served.send(reading(1, import_w=500.0))
    wait_until(lambda: current_seq(served, 1))
    got: list[list[tuple[str, dict[str, Any]]]] = []
    t = threading.Thread(target=lambda: got.append(_sse_events(served, 3)))
    t.start()
    wait_until(lambda: served.get("/api/energy/smart-meter/status")[1] and _subscribers(served) == 1)
    served.send(reading(2, import_w=600.0))
    served.send(reading(3, import_w=700.0))
    t.join(WAIT_S)
    events = got[0]
    assert [e[0] for e in events] == ["1", "2", "3"]
    assert [e[1]["power_w"] for e in events] == [500.0, 600.0, 700.0]
    status, cur = served.get("/api/energy/smart-meter/current")
    assert events[-1][1] == cur  # the event is the `current` object
    # a reconnect that already saw seq 3 does not get it again: the first event is the next reading
    wait_until(lambda: _subscribers(served) == 0)  # the first client is gone (else its count hides the new one)
    got.clear()
    t = threading.Thread(target=lambda: got.append(_sse_events(served, 1, headers="Last-Event-ID: 3\r\n")))
    t.start()
    wait_until(lambda: _subscribers(served) == 1)
    served.send(reading(4, import_w=800.0))
    t.join(WAIT_S)
    assert [e[0] for e in got[0]] == ["4"]


def _subscribers(s: Served) -> int:
    status, body = s.get("/api/energy/smart-meter/status")
    return int(body.get("live_clients", 0))


def test_websocket_streams_the_same_objects(served: Served) -> None:
    from websockets.sync.client import connect

    served.send(reading(1, import_w=500.0))
    wait_until(lambda: current_seq(served, 1))
    with connect(f"ws://127.0.0.1:{served.port}/api/ws", open_timeout=WAIT_S) as ws:
        first = json.loads(ws.recv(timeout=WAIT_S))
        assert first["seq"] == 1
        served.send(reading(2, import_w=900.0))
        second = json.loads(ws.recv(timeout=WAIT_S))
        assert second["seq"] == 2 and second["power_w"] == 900.0


def _reading_at_subscribe(monkeypatch: pytest.MonkeyPatch, seq: int) -> list[int]:
    """Make a reading arrive right after the next live client subscribes (on the event loop, as the
    channel's readings do), before its handler has sent anything: the connect race, without timing."""
    injected: list[int] = []
    subscribe = LiveState.subscribe

    def hooked(self: LiveState) -> Any:
        sub = subscribe(self)
        if not injected:
            injected.append(seq)
            self.on_reading(reading(seq, import_w=100.0 * seq), {"boiler": False})
        return sub

    monkeypatch.setattr(LiveState, "subscribe", hooked)
    return injected


def test_websocket_sends_a_reading_arriving_while_it_connects_once(served: Served,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from websockets.sync.client import connect

    served.send(reading(1, import_w=500.0))
    wait_until(lambda: current_seq(served, 1))
    injected = _reading_at_subscribe(monkeypatch, 2)
    seqs: list[int] = []
    with connect(f"ws://127.0.0.1:{served.port}/api/ws", open_timeout=WAIT_S) as ws:
        seqs.append(json.loads(ws.recv(timeout=WAIT_S))["seq"])
        assert injected == [2]
        served.send(reading(3, import_w=300.0))
        while seqs[-1] != 3:
            msg = ws.recv(timeout=WAIT_S)
            assert isinstance(msg, str)  # text messages, the first one too
            seqs.append(json.loads(msg)["seq"])
    assert seqs == sorted(set(seqs)), seqs  # each reading once, in order (not 2, 2, 3)
    assert seqs == [1, 2, 3]  # the reading current at connect first, then the one that arrived meanwhile


def test_sse_sends_a_reading_arriving_while_it_connects_once(served: Served,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    served.send(reading(1, import_w=500.0))
    wait_until(lambda: current_seq(served, 1))
    injected = _reading_at_subscribe(monkeypatch, 2)
    got: list[list[tuple[str, dict[str, Any]]]] = []
    t = threading.Thread(target=lambda: got.append(_sse_events(served, 99, until="3")))
    t.start()
    wait_until(lambda: injected and _subscribers(served) == 1)
    served.send(reading(3, import_w=300.0))
    t.join(WAIT_S)
    ids = [int(e[0]) for e in got[0]]
    assert ids[-1] == 3 and ids == sorted(set(ids)), ids  # each reading once, in order (not 2, 2, 3)
    assert ids == [1, 2, 3]  # the reading current at connect first, then the one that arrived meanwhile


def test_websocket_needs_the_token(served_token: Served) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{served_token.port}/api/ws"
    with pytest.raises((InvalidStatus, Exception)), connect(url, open_timeout=WAIT_S) as ws:
        ws.recv(timeout=WAIT_S)
    with connect(url, open_timeout=WAIT_S, additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        served_token.send(reading(1, import_w=100.0))
        assert json.loads(ws.recv(timeout=WAIT_S))["seq"] == 1
    with connect(url + f"?access_token={TOKEN}", open_timeout=WAIT_S) as ws:
        assert json.loads(ws.recv(timeout=WAIT_S))["seq"] == 1  # the latest reading at once
        served_token.send(reading(2, import_w=100.0))
        assert json.loads(ws.recv(timeout=WAIT_S))["seq"] == 2


# ---------------------------------------------------------------- bounded channels


def test_a_slow_live_client_is_dropped_not_buffered() -> None:
    import asyncio

    async def run() -> None:
        state = LiveState(loads(INI))
        slow = state.subscribe()
        fast = state.subscribe()
        assert slow is not None and fast is not None
        for seq in range(1, SUBSCRIBER_QUEUE * 3):
            state.on_reading(reading(seq), {"boiler": False})
            while not fast.q.empty():
                fast.q.get_nowait()
        assert slow.dropped and slow not in state.subscribers and slow.q.qsize() <= SUBSCRIBER_QUEUE
        assert not fast.dropped and fast in state.subscribers
        assert state.live_dropped == 1

    asyncio.run(run())


def test_the_live_channel_drops_the_oldest_and_never_blocks() -> None:
    channels = Channels(multiprocessing.get_context("fork"))
    link = WebLink(channels)
    t0 = time.monotonic()
    for seq in range(1, LIVE_QUEUE + 101):  # nobody reads
        link.reading(reading(seq), {})
    assert time.monotonic() - t0 < 10.0  # returned every time (a blocking put would hang here)
    # held: the ring, the channel's queue, and the one message the feeder thread waits to put
    assert link.dropped >= LIVE_QUEUE + 100 - (LIVE_QUEUE + CHANNEL_QUEUE + 1)
    got = []
    wait_until(lambda: not channels.live.empty())
    while True:
        try:
            got.append(channels.live.get(timeout=3.0)[1].seq)
        except queue.Empty:
            break
    # what is left: the first few the channel held, then the newest; the last one is never lost
    assert len(got) <= LIVE_QUEUE + CHANNEL_QUEUE + 1 and got[-1] == LIVE_QUEUE + 100 and got == sorted(got)
    assert got[-LIVE_QUEUE:] == list(range(101, LIVE_QUEUE + 101))


def test_history_answers_are_reused_until_the_store_changes(tmp_path: Any) -> None:
    store = tmp_path / "h.sqlite"
    store.write_bytes(b"x")
    FakeHistory.calls, FakeHistory.fail = [], None
    s = Served(INI + f"[history]\npath = {store}\n")
    try:
        path = "/api/energy/smart-meter/history?resolution=day&from=2024-05-01&to=2024-06-01"
        first = s.get(path)
        assert s.get(path) == first and len(FakeHistory.calls) == 1  # ten dashboards, one query
        store.write_bytes(b"xy")  # the recorder committed
        assert s.get(path) == first and len(FakeHistory.calls) == 2
    finally:
        s.close()


def test_the_listening_socket_lets_asyncio_turn_nagle_off() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; with proto 0 every response
    waited for a delayed ACK (about 40 ms each, measured by bench/bench_web.py)."""
    sock = server.listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
