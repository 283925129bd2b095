"""MCP at POST /mcp and over `--mcp-stdio`, checked with the official `mcp` SDK client (the oracle;
it is a test dependency only, never imported by app/)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from tests.appliance import Appliance
from tests.conftest import ROOT
from tests.test_web import INI, TOKEN, FakeHistory, Served, reading, wait_until

TOOLS = {"get_smart_meter_status", "get_power_consumption", "get_energy_consumption", "calculate_energy_cost",
         "get_historical_usage"}


@pytest.fixture
def served_mcp() -> Iterator[Served]:
    FakeHistory.calls, FakeHistory.fail = [], None
    s = Served(INI + f"token = {TOKEN}\n")
    s.send(reading(1, import_w=1500.0, export_w=250.0))
    wait_until(lambda: s.get("/api/energy/smart-meter/current", token=TOKEN)[0] == 200)
    yield s
    s.close()


async def exercise(session: ClientSession) -> dict[str, Any]:
    """initialize, ping, tools/list and every tool; the results by tool name."""
    init = await session.initialize()
    assert init.server_info.name == "smartmeter"
    assert init.capabilities.tools is not None
    await session.send_ping()
    listed = await session.list_tools()
    assert {t.name for t in listed.tools} == TOOLS
    assert all(t.annotations is not None and t.annotations.read_only_hint for t in listed.tools)
    out: dict[str, Any] = {}
    calls = {"get_smart_meter_status": {}, "get_power_consumption": {},
             "get_energy_consumption": {"period": "month", "from": "2024-01-01", "to": "2024-06-30"},
             "calculate_energy_cost": {"from": "2024-05-01", "to": "2024-05-31", "tariff": "dynamic"},
             "get_historical_usage": {"resolution": "quarter", "from": "2024-06-03", "to": "2024-06-04"}}
    for name, args in calls.items():
        result = await session.call_tool(name, args)
        assert not result.is_error, (name, result.content)
        out[name] = json.loads(result.content[0].text)  # type: ignore[union-attr]
        assert result.structured_content == out[name]
    bad = await session.call_tool("get_historical_usage", {"resolution": "week"})
    assert bad.is_error and "resolution" in bad.content[0].text  # type: ignore[union-attr]
    return out


def check_same_numbers_as_rest(s: Served, out: dict[str, Any]) -> None:
    """The tools answer what the REST API answers."""
    status = out["get_smart_meter_status"]
    rest = s.get("/api/energy/smart-meter/status", token=TOKEN)[1]
    assert status["meter_id"] == rest["meter_id"] == "1SAG1105123456" and status["online"] is True
    power = out["get_power_consumption"]
    cur = s.get("/api/energy/smart-meter/current", token=TOKEN)[1]
    assert power["power_w"] == cur["power_w"] == 1250.0 and power["import_w"] == 1500.0
    assert power["phases"]["L1"] == {"import_w": 1500.0, "export_w": None, "voltage_v": 231.5, "current_a": 4.0}
    hist = s.get("/api/energy/smart-meter/history?resolution=month&from=2024-01-01&to=2024-06-30", token=TOKEN)[1]
    assert out["get_energy_consumption"] == hist
    cost = s.get("/api/energy/smart-meter/cost?from=2024-05-01&to=2024-05-31&tariff=dynamic", token=TOKEN)[1]
    assert out["calculate_energy_cost"] == cost
    q = s.get("/api/energy/smart-meter/history?resolution=quarter&from=2024-06-03&to=2024-06-04", token=TOKEN)[1]
    assert out["get_historical_usage"] == q


def test_streamable_http_with_the_sdk_client(served_mcp: Served) -> None:
    async def run() -> dict[str, Any]:
        client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30.0)
        async with client, streamable_http_client(served_mcp.url + "/mcp", http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            return await exercise(session)

    check_same_numbers_as_rest(served_mcp, asyncio.run(run()))


def test_stdio_with_the_sdk_client(served_mcp: Served, tmp_path: Path) -> None:
    ini = tmp_path / "smartmeter.ini"
    ini.write_text(INI + f"token = {TOKEN}\nport = {served_mcp.port}\n")

    async def run() -> dict[str, Any]:
        params = StdioServerParameters(command=sys.executable, args=[str(ROOT / "app" / "main.py"), "-c", str(ini),
                                                                     "--mcp-stdio"], cwd=str(ROOT),
                                       env=Appliance.environment())
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            return await exercise(session)

    check_same_numbers_as_rest(served_mcp, asyncio.run(run()))


def test_stdio_says_so_when_the_appliance_is_not_running(tmp_path: Path) -> None:
    ini = tmp_path / "smartmeter.ini"
    ini.write_text(INI + "port = 9\n")

    async def run() -> None:
        params = StdioServerParameters(command=sys.executable, args=[str(ROOT / "app" / "main.py"), "-c", str(ini),
                                                                     "--mcp-stdio"], cwd=str(ROOT),
                                       env=Appliance.environment())
        async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            result = await session.call_tool("get_power_consumption", {})
            assert result.is_error and "not reachable" in result.content[0].text  # type: ignore[union-attr]

    asyncio.run(run())


def test_protocol_edges_over_http(served_mcp: Served) -> None:
    s = served_mcp

    def post(body: Any, **headers: str) -> tuple[int, Any]:
        status, reply, _h = s.request("POST", "/mcp", body, token=TOKEN,
                                      headers={"Content-Type": "application/json", **headers})
        return status, reply

    assert post({"jsonrpc": "2.0", "method": "notifications/initialized"}) == (202, b"")
    status, reply = post({"jsonrpc": "2.0", "id": 7, "method": "nope"})
    assert status == 200 and reply["error"]["code"] == -32601 and reply["id"] == 7
    status, reply = post({"jsonrpc": "2.0", "id": 8, "method": "tools/call", "params": {"name": "rm_rf"}})
    assert reply["error"]["code"] == -32602
    status, reply = post(b"{oops")
    assert status == 400 and reply["error"]["code"] == -32700
    status, reply = post({"jsonrpc": "2.0", "id": 9, "method": "initialize",
                          "params": {"protocolVersion": "1999-01-01", "capabilities": {},
                                     "clientInfo": {"name": "t", "version": "0"}}})
    assert reply["result"]["protocolVersion"] == "2025-11-25"
    status, reply = post({"jsonrpc": "2.0", "id": 10, "method": "ping"}, Origin="http://evil.example")
    assert status == 403  # DNS rebinding / another page on the LAN
    status, _reply, _h = s.request("GET", "/mcp", token=TOKEN)
    assert status == 405
