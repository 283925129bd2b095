"""MCP (Model Context Protocol) server: JSON-RPC 2.0 over streamable HTTP (stateless, JSON
responses) at POST /mcp, and over stdio (`--mcp-stdio`). Five read-only tools, answered by the
same `Service` as the REST API.

    initialize -> protocolVersion, capabilities.tools, serverInfo
    notifications/initialized, other notifications -> 202, no body
    ping -> {}
    tools/list -> the five tools, each annotated readOnlyHint
    tools/call -> {"content": [{"type": "text", "text": JSON}], "structuredContent": {...}, "isError"}
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from app import __version__

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")
PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
DATE = {"type": "string", "description": "a local date (2024-05-01) or an ISO 8601 time with offset (its date); "
        "`to` is exclusive; default: see the tool description"}
READ_ONLY = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}

TOOLS: list[dict[str, Any]] = [
    {"name": "get_smart_meter_status",
     "title": "Smart meter status",
     "description": "Meter id, protocol, whether readings arrive (online), the last reading's time, "
                    "error counters, lag, uptime and version.",
     "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False}},
    {"name": "get_power_consumption",
     "title": "Power now",
     "description": "The latest reading's power in W: import, export, net (import - export) and per phase "
                    "(L1-L3: import/export W, voltage V, current A).",
     "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False}},
    {"name": "get_energy_consumption",
     "title": "Energy per day, month or year",
     "description": "Imported/exported energy (kWh) per day, month or year between from and to "
                    "(defaults: the last 31 days, 12 months or 10 years, today included).",
     "inputSchema": {"type": "object", "properties": {
         "period": {"type": "string", "enum": ["day", "month", "year"]},
         "from": DATE, "to": DATE}, "required": ["period"], "additionalProperties": False}},
    {"name": "calculate_energy_cost",
     "title": "Energy cost",
     "description": "Cost between from and to (default: this month so far) with its parts, per period, the "
                    "projection for the current month/year and the comparison across tariffs.",
     "inputSchema": {"type": "object", "properties": {
         "from": DATE, "to": DATE,
         "tariff": {"type": "string", "description": "a [tariff:NAME] section; default: the active tariff"}},
         "additionalProperties": False}},
    {"name": "get_historical_usage",
     "title": "Historical usage",
     "description": "The history rows (as `--report --json`) at quarter, hour, day, month or year resolution "
                    "between from and to (default: today for quarter/hour, else as get_energy_consumption).",
     "inputSchema": {"type": "object", "properties": {
         "resolution": {"type": "string", "enum": ["quarter", "hour", "day", "month", "year"]},
         "from": DATE, "to": DATE}, "required": ["resolution"], "additionalProperties": False}},
]
for _tool in TOOLS:
    _tool["annotations"] = {"title": _tool["title"], **READ_ONLY}
TOOL_NAMES = tuple(t["name"] for t in TOOLS)
ToolCall = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


class ToolError(Exception):
    """A tool could not answer (bad argument, no data yet, store unavailable)."""


class McpServer:
    """The protocol; tool calls go to `call_tool` (the in-process service, or a forwarder)."""

    def __init__(self, service: Any = None, call_tool: ToolCall | None = None) -> None:
        self.service = service
        self.call_tool = call_tool or self._call_service

    async def handle_body(self, body: bytes) -> tuple[int, Any]:
        """An HTTP body -> (status, JSON reply or None for 202 Accepted)."""
        try:
            msg = json.loads(body)
        except ValueError:
            return 400, _error(None, PARSE_ERROR, "parse error: the body is not JSON")
        if isinstance(msg, list):  # a batch (protocol 2025-03-26)
            if not msg:
                return 400, _error(None, INVALID_REQUEST, "empty batch")
            replies = [r for r in [await self.handle(m) for m in msg] if r is not None]
            return (200, replies) if replies else (202, None)
        reply = await self.handle(msg)
        if reply is None:
            return 202, None
        return (400 if "error" in reply and reply["error"]["code"] in (INVALID_REQUEST, PARSE_ERROR)
                else 200), reply

    async def handle(self, msg: Any) -> dict[str, Any] | None:
        """One JSON-RPC message -> its response (None for notifications and responses)."""
        if not isinstance(msg, dict) or msg.get("jsonrpc") != "2.0":
            return _error(None, INVALID_REQUEST, "expected a JSON-RPC 2.0 object")
        method = msg.get("method")
        msg_id = msg.get("id")
        if method is None:  # a response from the client: nothing to answer
            return None
        if not isinstance(method, str) or (msg_id is not None and not isinstance(msg_id, str | int)):
            return _error(None, INVALID_REQUEST, "bad method or id")
        if "id" not in msg:  # a notification (notifications/initialized, cancelled, ...)
            return None
        params = msg.get("params") or {}
        if not isinstance(params, dict):
            return _error(msg_id, INVALID_PARAMS, "params must be an object")
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            return _result(msg_id, {
                "protocolVersion": version,
                "capabilities": {"tools": {"listChanged": False}},
                "serverInfo": {"name": "smartmeter", "title": "Smart meter", "version": __version__},
                "instructions": "Read-only tools for this home's electricity meter: power now, energy and cost "
                                "history. Powers in W, energy in kWh, times ISO 8601 with offset.",
            })
        if method == "ping":
            return _result(msg_id, {})
        if method == "tools/list":
            return _result(msg_id, {"tools": TOOLS})
        if method == "tools/call":
            name = params.get("name")
            args = params.get("arguments") or {}
            if name not in TOOL_NAMES:
                return _error(msg_id, INVALID_PARAMS, f"unknown tool {name!r}")
            if not isinstance(args, dict):
                return _error(msg_id, INVALID_PARAMS, "arguments must be an object")
            try:
                data = await self.call_tool(str(name), args)
            except ToolError as exc:
                return _result(msg_id, {"content": [{"type": "text", "text": str(exc)}], "isError": True})
            return _result(msg_id, data)
        return _error(msg_id, METHOD_NOT_FOUND, f"method {method!r} not found")

    async def _call_service(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        from app.web.service import ApiError

        s = self.service
        try:
            for key, value in args.items():
                if value is not None and not isinstance(value, str):
                    raise ApiError(400, f"{key} must be a string")
            if name == "get_smart_meter_status":
                data = s.status()
            elif name == "get_power_consumption":
                data = s.power()
            elif name == "get_energy_consumption":
                period = args.get("period")
                if period not in ("day", "month", "year"):
                    raise ApiError(400, f"period={period!r}: expected day, month or year")
                data = await s.history_rows(period, args.get("from"), args.get("to"))
            elif name == "calculate_energy_cost":
                data = await s.cost(args.get("from"), args.get("to"), args.get("tariff"))
            else:
                if not args.get("resolution"):
                    raise ApiError(400, "resolution is required: quarter, hour, day, month or year")
                data = await s.history_rows(args["resolution"], args.get("from"), args.get("to"))
        except ApiError as exc:
            raise ToolError(exc.message) from None
        return tool_result(data)


def tool_result(data: dict[str, Any]) -> dict[str, Any]:
    """A tools/call result carrying `data` as text and as structured content."""
    text = json.dumps(data, ensure_ascii=False, default=str)
    return {"content": [{"type": "text", "text": text}], "structuredContent": json.loads(text), "isError": False}


def _result(msg_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "result": result}


def _error(msg_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}}
