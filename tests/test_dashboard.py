"""The dashboard at `/` in a real headless Chromium against the whole appliance on a pty: it loads
with no outside requests, asks for the token once, shows the API's numbers, follows each new
telegram live, and its relay buttons switch the relay (API, log and the CSV relay column)."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.simulator import SimulatedMeter
from tests import browser
from tests.appliance import Appliance, Pty, csv_rows, free_port, ini_template, simulated_meter, wait_for
from tests.conftest import ROOT

STATIC = ROOT / "app" / "web" / "static"
ARTIFACTS = ROOT / "test-artifacts"
TOKEN = "dash-token-456"
INI = ini_template("1 h", on_when="export > 50000 W", meter_extra="timezone = Europe/Brussels\n",
                   extra="""[history]
path = {history}
commit_interval = 1 s
[tariff]
currency = EUR
import_price_t1 = 0.32
import_price_t2 = 0.26
export_price = 0.04
fixed_per_year = 120
capacity_price = 53.0
capacity_floor = 2.5 kW
[web]
enabled = yes
host = 127.0.0.1
port = {port}
token = {token}
""")


def _get(port: int, path: str) -> Any:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return json.loads(resp.read())
    except (urllib.error.HTTPError, OSError):
        return None


@pytest.fixture()
def browser_ok() -> None:
    why = browser.missing()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)


def test_the_page_and_its_assets_are_local() -> None:
    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("/") and not r.startswith("//") for r in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            assert (STATIC / ref.removeprefix("/static/")).is_file(), ref
    vendor = STATIC / "vendor" / "uplot"
    assert (vendor / "LICENSE").read_text().startswith("The MIT License")
    assert "uPlot 1." in (vendor / "README.txt").read_text()
    for js in ("app.js", "vendor/uplot/uPlot.iife.min.js"):
        assert not re.search(r"https?://(?!www\.w3\.org)", (STATIC / js).read_text().split("*/", 1)[-1]), js


@pytest.fixture()
def appliance(tmp_path: Path, browser_ok: None) -> Iterator[tuple[Appliance, Pty, int, SimulatedMeter, Path]]:
    pty = Pty(tmp_path / "ttyP1")
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(INI.format(source=tmp_path / "ttyP1", csv=tmp_path / "csv", history=tmp_path / "h.sqlite",
                              port=port, token=TOKEN))
    app = Appliance(ini)
    try:
        app.wait_log(r"web: serving http://127\.0\.0\.1:\d+/")
        app.wait_log(r"reading .*ttyP1")
        # yesterday and this morning, one telegram every 5 min of meter time
        meter = simulated_meter(0, seed=11, day=20, step_s=300.0)
        for _ in range(30 * 12):
            pty.write(meter.next())
        yield app, pty, port, meter, tmp_path / "csv"
        assert app.stop() == 0
    finally:
        app.kill()
        pty.close()
    assert TOKEN not in app.log()


def _settled(port: int, last: str) -> Any:
    """The API once the last telegram is in and the store has committed it (two equal answers)."""
    cur = wait_for(lambda: (c := _get(port, "/api/energy/smart-meter/current")) and c["timestamp"].startswith(last)
                   and c, 60.0)
    assert cur, "the last telegram never reached the API"
    path = "/api/energy/smart-meter/history?resolution=quarter&from=2026-06-21&to=2026-06-22"
    state: dict[str, Any] = {"prev": None}

    def same() -> bool:
        now = _get(port, path)
        ok = now is not None and bool(now["rows"]) and now == state["prev"]
        state["prev"] = now
        return ok

    assert wait_for(same, 60.0, every_s=1.5), "the history store did not settle"
    return cur


def _value(page: Any, element: str) -> str | None:
    v: str | None = page.get_attribute(f"#{element}", "data-value")
    return v


def test_dashboard_shows_the_api_follows_live_and_switches_relays(
        appliance: tuple[Appliance, Pty, int, SimulatedMeter, Path]) -> None:
    app, pty, port, meter, csv_dir = appliance
    cur = _settled(port, "2026-06-21T05:55")
    with browser.chromium() as ctx:
        page = ctx.new_page()
        outside: list[str] = []
        page.on("request", lambda r: None if r.url.startswith(f"http://127.0.0.1:{port}/") else outside.append(r.url))
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=60000)

        # a token is configured: the page asks once
        page.wait_for_selector("#login[open]", timeout=30000)
        page.fill("#login-token", TOKEN)
        page.click("#login button[type=submit]")

        # live values equal the API's current reading
        assert wait_for(lambda: _value(page, "live-net") == _num(cur["power_w"]), 30.0), (
            _value(page, "live-net"), cur["power_w"])
        f = cur["fields"]
        assert float(_value(page, "live-import") or "nan") == pytest.approx(f["actual_total_consumption"] * 1000)
        assert float(_value(page, "live-export") or "nan") == pytest.approx(f["actual_total_injection"] * 1000)

        # history, cost and capacity equal the API's for the meter's day (2026-06-21)
        today = _get(port, "/api/energy/smart-meter/history?resolution=quarter&from=2026-06-21&to=2026-06-22")
        # (the page refreshes history at least every 60 s: a first fetch that raced the store is redone)
        assert wait_for(lambda: page.get_attribute("#chart-today", "data-rows") == str(len(today["rows"])), 75.0)
        days = _get(port, "/api/energy/smart-meter/history?resolution=day&from=2026-05-22&to=2026-06-22")
        assert len(days["rows"]) >= 2
        assert wait_for(lambda: page.get_attribute("#chart-days", "data-rows") == str(len(days["rows"])), 75.0)
        cost = _get(port, "/api/energy/smart-meter/cost?from=2026-06-01&to=2026-06-22")
        assert cost["total"]["total"] > 0
        assert wait_for(lambda: _value(page, "cost-month") == _num(cost["total"]["total"]), 75.0), (
            _value(page, "cost-month"), cost["total"])
        assert _value(page, "cost-projected") == _num(cost["projection"]["month"]["projected"]["total"])
        cap = _get(port, "/api/energy/smart-meter/capacity")
        for element, key in (("cap-peak", "month_peak_kw"), ("cap-mean", "mean_12m_kw"), ("cap-floor", "floor_kw")):
            assert _value(page, element) == _num(cap[key]), element
        status = _get(port, "/api/energy/smart-meter/status")
        # the page polls the status every 5 s: wait for a poll after the reader's last counters
        assert wait_for(lambda: _value(page, "st-ok") == str(status["counters"]["telegrams_ok"]), 30.0), (
            _value(page, "st-ok"), status["counters"])
        assert page.inner_text("#meter-badge") == "online"

        # a new telegram on the pty: the live value follows
        seq = page.get_attribute("#live-time", "data-seq")
        pty.write(meter.next())
        assert wait_for(lambda: page.get_attribute("#live-time", "data-seq") != seq, 30.0)
        new = _get(port, "/api/energy/smart-meter/current")
        assert new["timestamp"].startswith("2026-06-21T06:00")
        assert wait_for(lambda: _value(page, "live-net") == _num(new["power_w"]), 10.0)

        # the relay buttons: on, then auto
        boiler = page.locator('[data-relay="boiler"]')
        assert boiler.locator(".relay-state").inner_text() == "off"
        boiler.locator('button[data-mode="on"]').click()
        app.wait_log(r"relay boiler -> on \(manual override ON\)")
        relays = wait_for(lambda: (r := _get(port, "/api/relays")) and r["relays"][0]["state"] == "on" and r, 20.0)
        assert relays and relays["relays"][0]["mode"] == "on"
        assert wait_for(lambda: page.locator('[data-relay="boiler"] .relay-state').inner_text() == "on", 20.0)
        assert page.get_attribute('[data-relay="boiler"] button[data-mode="on"]', "aria-pressed") == "true"
        pty.write(meter.next())
        assert wait_for(lambda: (rows := csv_rows(csv_dir)) and rows[-1][0].startswith("2026-06-21T06:05")
                        and rows[-1][-1] == "1", 20.0), csv_rows(csv_dir)[-2:]
        page.locator('[data-relay="boiler"] button[data-mode="auto"]').click()
        assert wait_for(lambda: (r := _get(port, "/api/relays")) and r["relays"][0]["mode"] == "auto", 20.0)

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10000

        # the token is kept: a reload asks no more
        page.reload(wait_until="domcontentloaded")
        assert wait_for(lambda: _value(page, "live-net") not in (None, ""), 30.0)
        assert not page.is_visible("#login")
        assert not outside, outside
        assert not errors, errors


def test_a_wrong_token_is_refused_and_asked_again(appliance: tuple[Appliance, Pty, int, SimulatedMeter, Path]
                                                  ) -> None:
    _app, _pty, port, _meter, _csv = appliance
    with browser.chromium(width=390, height=844) as ctx:  # a phone
        page = ctx.new_page()
        page.goto(f"http://127.0.0.1:{port}/", wait_until="domcontentloaded", timeout=60000)
        page.wait_for_selector("#login[open]", timeout=30000)
        page.fill("#login-token", "not-the-token")
        page.click("#login button[type=submit]")
        page.wait_for_selector("#login[open] #login-error:not([hidden])", timeout=30000)
        page.fill("#login-token", TOKEN)
        page.click("#login button[type=submit]")
        assert wait_for(lambda: _value(page, "live-net") not in (None, ""), 30.0)
        assert page.evaluate("localStorage.getItem('smartmeter.token')") == TOKEN
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page is {width} px wide on a 390 px phone"


def _num(x: float | None) -> str:
    """A JSON number as the page's data-value holds it (JavaScript's String(x))."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else repr(float(x))
