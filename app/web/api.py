"""The Starlette application: REST routes, the live stream (SSE and WebSocket), /mcp, the page.

Every /api and /mcp request passes `Guard` first: the bearer token (when one is set), the
same-origin check for write requests, and one line on the `app.web.access` logger.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import queue as queue_mod
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from app import logutil
from app.config import Config
from app.web import meter_registry
from app.web.mcp import McpServer
from app.web.openapi import openapi_document
from app.web.service import ApiError, History, Service
from app.web.state import LiveState

access_log = logging.getLogger("app.web.access")
log = logging.getLogger("app.web")
STATIC = Path(__file__).resolve().parent / "static"
HEARTBEAT_S = 15.0
SEND_TIMEOUT_S = 10.0  # a live client that cannot take one event in this long is dropped
COMMAND_WAIT_S = 5.0  # how long POST /api/relays/{name} waits to see the outcome
MAX_BODY = 64 * 1024
MODES = ("on", "off", "auto")
JsonDumps = Callable[[Any], bytes]


def dumps(obj: Any) -> bytes:
    """Compact JSON (dates as ISO strings)."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def _default(obj: Any) -> Any:
    if hasattr(obj, "isoformat"):
        return obj.isoformat()
    return str(obj)


class Json(JSONResponse):
    """A JSON response rendered by `dumps`."""

    def render(self, content: Any) -> bytes:
        """Bytes of the body."""
        return dumps(content)


def error(status: int, message: str) -> Json:
    """`{"success": false, "error": ...}`."""
    return Json({"success": False, "error": message}, status_code=status)


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


def same_origin(scope: Scope) -> bool:
    """Origin (or else Referer) names this host; requests without either (curl, scripts) pass."""
    host = _header(scope, b"host")
    origin = _header(scope, b"origin")
    if origin is None:
        referer = _header(scope, b"referer")
        if referer is None:
            return True
        origin = referer
    if origin == "null":
        return False
    return host is not None and urlsplit(origin).netloc.lower() == host.lower()


class Guard:
    """Token and same-origin checks for /api and /mcp; one access-log line per request."""

    def __init__(self, app: ASGIApp, token: str, log_interval_s: float) -> None:
        self.app = app
        self.token = token.encode()
        self.limited = logutil.RateLimited(access_log, log_interval_s)

    def _authorized(self, scope: Scope) -> bool:
        if not self.token:
            return True
        auth = _header(scope, b"authorization") or ""
        scheme, _, given = auth.partition(" ")
        if scheme.lower() != "bearer":
            # EventSource and browser WebSockets cannot set headers: the live streams take ?access_token=
            if scope["path"] in ("/api/live", "/api/ws"):
                given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("access_token") or [""])[0]
            else:
                given = ""
        return hmac.compare_digest(given.strip().encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check, pass on, log."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        method = scope.get("method", "WS")
        client = scope.get("client")
        who = f"{client[0]}:{client[1]}" if client else "-"
        guarded = path.startswith(("/api", "/mcp"))
        status = [0]

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "websocket.accept":
                status[0] = 101
            elif message["type"] == "websocket.close" and not status[0]:
                status[0] = 403
            await send(message)

        try:
            if guarded and not self._authorized(scope):
                self.limited.warning(f"auth {who.rpartition(':')[0]}", "%s %s 401 %s: missing or wrong token",
                                     method, path, who)
                await self._refuse(scope, receive, send, 401, "missing or wrong bearer token")
                return
            writes = method not in ("GET", "HEAD", "OPTIONS") or path in ("/api/ws", "/mcp")
            if guarded and writes and not same_origin(scope):
                self.limited.warning(f"origin {who.rpartition(':')[0]}", "%s %s 403 %s: cross-origin request",
                                     method, path, who)
                await self._refuse(scope, receive, send, 403, "cross-origin request refused")
                return
            await self.app(scope, receive, logged_send)
        finally:
            if status[0]:
                access_log.info("%s %s %d %s", method, path, status[0], who)

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": message})
            return
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        resp = Json({"success": False, "error": message}, status_code=status, headers=headers)
        await resp(scope, receive, send)


class Web:
    """The routes over one `Service`."""

    def __init__(self, cfg: Config, state: LiveState, history: History,
                 commands: Any = None) -> None:
        self.cfg = cfg
        self.state = state
        self.history = history
        self.service = Service(cfg, state, history)
        self.commands = commands  # the queue to the post-processor (None: relays read-only)
        self.mcp = McpServer(self.service)
        self.stopping = asyncio.Event()

    def routes(self) -> list[Any]:
        """Every route; the page and its assets last."""
        r: list[Any] = [
            Route("/api/energy/smart-meter/status", self.status, methods=["GET"]),
            Route("/api/energy/smart-meter/current", self.current, methods=["GET"]),
            Route("/api/energy/smart-meter/history", self.history_rows, methods=["GET"]),
            Route("/api/energy/smart-meter/cost", self.cost, methods=["GET"]),
            Route("/api/energy/smart-meter/capacity", self.capacity, methods=["GET"]),
            Route("/api/energy-meters", self.meters, methods=["GET"]),
            Route("/api/energy-meters/consumption/building", self.building, methods=["GET"]),
            Route("/api/energy-meters", self.add_meter, methods=["POST"]),
            Route("/api/energy-meters/{meter_id}", self.meter, methods=["GET"]),
            Route("/api/energy-meters/{meter_id}", self.update_meter, methods=["PUT"]),
            Route("/api/energy-meters/{meter_id}", self.delete_meter, methods=["DELETE"]),
            Route("/api/energy-meters/{meter_id}/reading", self.meter_reading, methods=["GET"]),
            Route("/api/relays", self.relays, methods=["GET"]),
            Route("/api/relays/{name}", self.set_relay, methods=["POST"]),
            Route("/api/live", self.live, methods=["GET"]),
            WebSocketRoute("/api/ws", self.ws),
            Route("/mcp", self.mcp_post, methods=["POST"]),
            Route("/openapi.json", self.openapi, methods=["GET"]),
            Route("/", self.index, methods=["GET"]),
        ]
        if STATIC.is_dir():
            r.append(Mount("/static", StaticFiles(directory=STATIC), name="static"))
        return r

    # ------------------------------------------------------------ REST

    @staticmethod
    async def _answer(make: Callable[[], Awaitable[Any]], wrap: bool = False) -> Response:
        try:
            data = await make()
        except ApiError as exc:
            return error(exc.status, exc.message)
        return Json({"success": True, "data": data} if wrap else data)

    async def status(self, request: Request) -> Response:
        """GET /api/energy/smart-meter/status."""
        return Json(self.service.status())

    async def current(self, request: Request) -> Response:
        """GET /api/energy/smart-meter/current."""
        return await self._answer(_sync(self.service.current))

    async def history_rows(self, request: Request) -> Response:
        """GET /api/energy/smart-meter/history."""
        q = request.query_params
        return await self._answer(lambda: self.service.history_rows(q.get("resolution"), q.get("from"), q.get("to")))

    async def cost(self, request: Request) -> Response:
        """GET /api/energy/smart-meter/cost."""
        q = request.query_params
        return await self._answer(lambda: self.service.cost(q.get("from"), q.get("to"), q.get("tariff")))

    async def capacity(self, request: Request) -> Response:
        """GET /api/energy/smart-meter/capacity."""
        return await self._answer(self.service.capacity)

    async def meters(self, request: Request) -> Response:
        """GET /api/energy-meters."""
        data = self.service.meters()
        return Json({"success": True, "data": data, "count": len(data)})

    async def meter(self, request: Request) -> Response:
        """GET /api/energy-meters/{id}."""
        meter_id = request.path_params["meter_id"]
        return await self._answer(_sync(lambda: self.service.meter(meter_id)), wrap=True)

    async def meter_reading(self, request: Request) -> Response:
        """GET /api/energy-meters/{id}/reading."""
        meter_id = request.path_params["meter_id"]
        return await self._answer(_sync(lambda: self.service.meter_reading(meter_id)), wrap=True)

    async def building(self, request: Request) -> Response:
        """GET /api/energy-meters/consumption/building."""
        return await self._answer(_sync(self.service.building), wrap=True)

    async def add_meter(self, request: Request) -> Response:
        """POST /api/energy-meters: the WAGO guide's body -> meters_dir/NAME.ini (main starts it)."""
        return await self._write_meter(request, None)

    async def update_meter(self, request: Request) -> Response:
        """PUT /api/energy-meters/{id}: rewrite that meter's file (main restarts that meter's process only)."""
        return await self._write_meter(request, request.path_params["meter_id"])

    async def _write_meter(self, request: Request, meter_id: str | None) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(400, "request body too large")
        try:
            doc = json.loads(body or b"null")
        except ValueError:
            return error(400, "expected a JSON body (name, location, protocol, meterType, pollInterval, "
                         "communication)")
        try:
            result = meter_registry.write(self.cfg, doc, meter_id)
        except ApiError as exc:
            return error(exc.status, exc.message)
        client = request.client
        log.info("meter %s %s by %s (%s)", result["id"], "updated" if meter_id else "added",
                 client.host if client else "-", result["file"])
        return Json({"success": True, "data": result}, status_code=200 if meter_id else 201)

    async def delete_meter(self, request: Request) -> Response:
        """DELETE /api/energy-meters/{id}: remove that meter's file (main stops it)."""
        meter_id = request.path_params["meter_id"]
        try:
            result = meter_registry.delete(self.cfg, meter_id)
        except ApiError as exc:
            return error(exc.status, exc.message)
        client = request.client
        log.info("meter %s deleted by %s (%s)", meter_id, client.host if client else "-", result["file"])
        return Json({"success": True, "data": result})

    async def relays(self, request: Request) -> Response:
        """GET /api/relays."""
        return Json({"relays": self.service.relays()})

    async def set_relay(self, request: Request) -> Response:
        """POST /api/relays/{name} {"mode": "on"|"off"|"auto"}: the override path MQTT `set` uses."""
        name = request.path_params["name"]
        known = [r["name"] for r in self.state.relays]
        if name not in known:
            return error(404, f"no relay {name!r} (known: {', '.join(known) or 'none'})")
        body = await request.body()
        if len(body) > MAX_BODY:
            return error(400, "request body too large")
        try:
            doc = json.loads(body or b"null")
        except ValueError:
            return error(400, 'expected a JSON body {"mode": "on"|"off"|"auto"}')
        mode = doc.get("mode") if isinstance(doc, dict) else None
        if not isinstance(mode, str) or mode.strip().lower() not in MODES:
            return error(400, 'expected {"mode": "on"|"off"|"auto"}')
        mode = mode.strip().lower()
        if self.commands is None:
            return error(503, "relay commands are not available (no post-processor)")
        request_id, fut = self.state.new_request()
        try:
            self.commands.put_nowait((request_id, name, mode.upper()))
        except queue_mod.Full:
            self.state.pending.pop(request_id, None)
            return error(503, "too many relay commands waiting; try again")
        client = request.client
        log.info("relay %s: mode %s requested by %s", name, mode, client.host if client else "-")
        try:
            result, details = await asyncio.wait_for(fut, COMMAND_WAIT_S)
        except TimeoutError:
            self.state.pending.pop(request_id, None)
            result, details = {"outcome": "pending", "detail": "not seen applied yet", "until": None}, self.state.relays
        relay = next((d for d in details if d["name"] == name), None)
        return Json({"success": True, "relay": name, "mode": mode, **result, "state": relay}, status_code=202)

    # ------------------------------------------------------------ live

    async def live(self, request: Request) -> Response | _Sse:
        """GET /api/live: Server-Sent Events."""
        sub = self.state.subscribe()
        if sub is None:
            return error(503, "too many live clients")
        last_id = request.headers.get("last-event-id")
        return _Sse(self, sub, last_id)

    async def ws(self, websocket: WebSocket) -> None:
        """/api/ws: the live stream as WebSocket text messages."""
        sub = self.state.subscribe()
        if sub is None:
            await websocket.close(code=1013)
            return
        await websocket.accept()
        try:
            if sub.first is not None:  # not state.current: a reading queued meanwhile would come twice
                await asyncio.wait_for(websocket.send_text(dumps(sub.first).decode()), SEND_TIMEOUT_S)
            while not self.stopping.is_set():
                try:
                    event = await asyncio.wait_for(sub.q.get(), HEARTBEAT_S)
                except TimeoutError:
                    event = {"heartbeat": time.time()}
                if event is None:
                    await websocket.close(code=1008, reason="too slow: dropped")
                    return
                await asyncio.wait_for(websocket.send_text(dumps(event).decode()), SEND_TIMEOUT_S)
        except (WebSocketDisconnect, TimeoutError, RuntimeError, OSError):
            pass
        finally:
            self.state.unsubscribe(sub)

    # ------------------------------------------------------------ MCP, docs, page

    async def mcp_post(self, request: Request) -> Response:
        """POST /mcp: MCP streamable HTTP, stateless, JSON responses."""
        body = await request.body()
        if len(body) > MAX_BODY:
            return Json({"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "request too large"}},
                        status_code=400)
        status, reply = await self.mcp.handle_body(body)
        if reply is None:
            return Response(status_code=status)
        return Json(reply, status_code=status)

    async def openapi(self, request: Request) -> Response:
        """GET /openapi.json: the hand-written API description."""
        return Json(openapi_document(bool(self.cfg.web.token)))

    async def index(self, request: Request) -> Response:
        """GET /: the dashboard, or a pointer to the API until it is installed."""
        page = STATIC / "index.html"
        if page.is_file():
            return FileResponse(page)
        return HTMLResponse("<!doctype html><meta charset=utf-8><title>smartmeter</title>"
                            "<h1>smartmeter</h1><p>API: <a href=/openapi.json>/openapi.json</a>, "
                            "live: <a href=/api/live>/api/live</a></p>")


def _sync(fn: Callable[[], Any]) -> Callable[[], Awaitable[Any]]:
    async def run() -> Any:
        return fn()

    return run


class _Sse:
    """The SSE stream of one client: one event per reading, a heartbeat, ids for reconnects."""

    raw_headers: ClassVar[list[tuple[bytes, bytes]]] = [
        (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no")]

    def __init__(self, web: Web, sub: Any, last_id: str | None) -> None:
        self.web = web
        self.sub = sub
        self.last_id = last_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream until the client goes, is too slow, or the server stops."""
        gone = asyncio.Event()

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    gone.set()
                    return

        watcher = asyncio.create_task(watch())

        async def put(chunk: bytes) -> None:
            await asyncio.wait_for(send({"type": "http.response.body", "body": chunk, "more_body": True}),
                                   SEND_TIMEOUT_S)

        state = self.web.state
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await put(b"retry: 3000\n\n")
            cur = self.sub.first  # not state.current: a reading queued meanwhile would come twice
            if cur is not None and self.last_id != str(cur["seq"]):
                await put(_event(cur))
            while not gone.is_set() and not self.web.stopping.is_set():
                get = asyncio.ensure_future(self.sub.q.get())
                stop = asyncio.ensure_future(gone.wait())
                done, _ = await asyncio.wait({get, stop}, timeout=HEARTBEAT_S, return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if get not in done:
                    get.cancel()
                    if not gone.is_set():
                        await put(f"event: heartbeat\ndata: {{\"time\": {time.time():.3f}}}\n\n".encode())
                    continue
                event = get.result()
                if event is None:  # too slow: dropped
                    break
                await put(_event(event))
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (TimeoutError, OSError):
            pass
        finally:
            watcher.cancel()
            state.unsubscribe(self.sub)


def _event(cur: dict[str, Any]) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (cur["seq"], dumps(cur))


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    detail = exc.detail if isinstance(exc, HTTPException) else "internal error"
    return error(status, str(detail))


def build_app(cfg: Config, state: LiveState, history: History, commands: Any = None,
              on_start: Callable[[asyncio.AbstractEventLoop], None] | None = None,
              on_stop: Callable[[], None] | None = None) -> tuple[ASGIApp, Web]:
    """The ASGI application (guarded) and its routes object."""
    web = Web(cfg, state, history, commands)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if on_start is not None:
            on_start(asyncio.get_running_loop())
        try:
            yield
        finally:
            web.stopping.set()
            for sub in list(state.subscribers):
                try:
                    sub.q.put_nowait(None)  # ends its stream
                except asyncio.QueueFull:
                    pass
            if on_stop is not None:
                on_stop()
            history.close()

    app = Starlette(routes=web.routes(), lifespan=lifespan,
                    exception_handlers={HTTPException: _not_found})
    return Guard(app, cfg.web.token, cfg.general.log_interval), web
