"""REST and MCP over the real history store filled by a replay through the whole appliance: the same
numbers as `--report --json` (one query layer)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import Appliance
from tests.conftest import ROOT
from tests.test_web import Served

TARIFFS = "[tariff]\nimport_price = 0.30\nexport_price = 0.05\nfixed_per_month = 31\n" \
          "[tariff:cheap]\nimport_price = 0.20\nexport_price = 0.05\n"


def _run(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*Appliance.command(ini), *args], capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Served]]:
    """Three days (1-3 March 2026) at one telegram per 2 min, replayed into a store; the web on it."""
    tmp = tmp_path_factory.mktemp("webhist")
    meter = SimulatedMeter(datetime(2026, 3, 1, tzinfo=BRUSSELS), step_s=120, seed=5)
    chunks = []
    while meter.t < datetime(2026, 3, 4, 0, 2, tzinfo=BRUSSELS):
        chunks.append(meter.next())
    capture = tmp / "march.txt"
    capture.write_bytes(b"".join(chunks))
    ini = tmp / "h.ini"
    ini.write_text(f"[meter]\nprotocol = dsmr\ntimezone = Europe/Brussels\nsource = /dev/null\n"
                   f"[history]\npath = {tmp / 'h.sqlite'}\n{TARIFFS}")
    out = _run(ini, "--replay", str(capture), "--replay-speed", "0")
    assert out.returncode == 0, out.stderr + out.stdout
    s = Served(ini.read_text() + "[web]\nenabled = yes\n", history=None)  # the real HistoryQuery
    yield ini, s
    s.close()


def _report(ini: Path, *args: str) -> list[dict[str, Any]]:
    out = _run(ini, "--report", *args, "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.parametrize("resolution", ["quarter", "hour", "day", "month"])
def test_history_equals_report_json(store: tuple[Path, Served], resolution: str) -> None:
    ini, s = store
    status, body = s.get(f"/api/energy/smart-meter/history?resolution={resolution}&from=2026-03-01&to=2026-03-04")
    assert status == 200, body
    assert body["rows"] == _report(ini, resolution, "--from", "2026-03-01", "--to", "2026-03-04")
    assert body["rows"] and body["rows"][0]["import_kwh"] > 0
    if resolution == "day":
        assert len(body["rows"]) == 3


def test_cost_equals_report_json(store: tuple[Path, Served]) -> None:
    ini, s = store
    status, body = s.get("/api/energy/smart-meter/cost?from=2026-03-01&to=2026-03-04&tariff=cheap")
    assert status == 200, body
    want = _report(ini, "cost", "--from", "2026-03-01", "--to", "2026-03-04", "--tariff", "cheap")
    assert len(want) == 1
    # the projection is "as of now" in both; everything else is the same computation
    assert {k: v for k, v in body.items() if k != "projection"} == {k: v for k, v in want[0].items()
                                                                   if k != "projection"}
    assert {c["tariff"] for c in body["compare"]} == {"default", "cheap"}
    status, bad = s.get("/api/energy/smart-meter/cost?tariff=nope")
    assert status == 400 and "nope" in bad["error"]
    status, cap = s.get("/api/energy/smart-meter/capacity")
    assert status == 200 and "mean_12m_kw" in cap


def test_mcp_tools_give_the_same_numbers(store: tuple[Path, Served]) -> None:
    ini, s = store

    async def run() -> dict[str, Any]:
        client = httpx2.AsyncClient(timeout=60.0)
        async with client, streamable_http_client(s.url + "/mcp", http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            await session.initialize()
            out = {}
            for name, args in (("get_energy_consumption", {"period": "day", "from": "2026-03-01", "to": "2026-03-04"}),
                               ("get_historical_usage", {"resolution": "hour", "from": "2026-03-02",
                                                         "to": "2026-03-03"})):
                result = await session.call_tool(name, args)
                assert not result.is_error, result.content
                out[name] = result.structured_content
            return out

    out = asyncio.run(run())
    assert out["get_energy_consumption"]["rows"] == _report(ini, "day", "--from", "2026-03-01", "--to", "2026-03-04")
    assert out["get_historical_usage"]["rows"] == _report(ini, "hour", "--from", "2026-03-02", "--to", "2026-03-03")
    assert len(out["get_historical_usage"]["rows"]) == 24
