"""The Grafana dashboard (grafana/smartmeter.json) and its provisioning files: every panel's
InfluxQL query, run against a real InfluxDB 1.x filled by the whole appliance replaying two
simulated days, returns data; the dashboard imports with a data source variable."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import Appliance
from tests.conftest import ROOT
from tests.fixtures_influx import InfluxV1Server

GRAFANA = ROOT / "grafana"
DB = "grafana_panels"
INI = """
[general]
log_level = info
[meter]
source = replay:{capture}
protocol = dsmr
timezone = Europe/Brussels
[control]
settle = 0 s
stale_after = 10 min
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W for 5 min
off_when = export < 200 W for 5 min
[history]
enabled = no
[influxdb]
enabled = yes
url = {url}
api = v1
database = {db}
measurement = smartmeter
batch_size = 500
flush_interval = 1 s
spool_dir = {spool}
"""


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((GRAFANA / "smartmeter.json").read_text())
    return doc


def _queries() -> list[tuple[str, str]]:
    return [(p["title"], t["query"]) for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_the_dashboard_is_importable() -> None:
    doc = _dashboard()
    assert doc["uid"] == "smartmeter" and doc["schemaVersion"] >= 36
    names = {v["name"]: v for v in doc["templating"]["list"]}
    assert names["datasource"]["type"] == "datasource" and names["datasource"]["query"] == "influxdb"
    titles = [p["title"] for p in doc["panels"]]
    for wanted in ("Power", "Energy per day", "Voltage per phase", "Current per phase", "Relay states"):
        assert wanted in titles
    for p in doc["panels"]:
        assert p["datasource"] == {"type": "influxdb", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and all(t["rawQuery"] for t in p["targets"]), p["title"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    provider = (GRAFANA / "provisioning" / "dashboards" / "smartmeter.yaml").read_text()
    assert "type: file" in provider and "path:" in provider
    source = (GRAFANA / "provisioning" / "datasources" / "smartmeter.yaml").read_text()
    assert "type: influxdb" in source and "dbName: smartmeter" in source


@pytest.fixture(scope="module")
def filled(influxdb_v1: InfluxV1Server, tmp_path_factory: pytest.TempPathFactory) -> tuple[InfluxV1Server, int, int]:
    """InfluxDB holding two simulated days up to now, written by the appliance replaying them."""
    tmp = tmp_path_factory.mktemp("grafana")
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=2)
    meter = SimulatedMeter(start.astimezone(BRUSSELS), step_s=120.0, seed=5)
    capture = tmp / "two-days.txt"
    capture.write_bytes(b"".join(meter.telegrams(2 * 86400 // 120)))
    influxdb_v1.create_database(DB)
    ini = tmp / "app.ini"
    ini.write_text(INI.format(capture=capture, url=influxdb_v1.url, db=DB, spool=tmp / "spool"))
    app = Appliance(ini)
    try:
        assert app.proc.wait(timeout=240) == 0, app.log()
    finally:
        app.kill()
    assert "relay boiler -> on" in app.log()
    return influxdb_v1, int(start.timestamp()), int(end.timestamp()) + 1


def _expand(query: str, t0: int, t1: int) -> str:
    """Grafana's InfluxQL macros and this dashboard's variables, as Grafana expands them."""
    q = query.replace("$timeFilter", f"time >= {t0}s and time <= {t1}s")
    q = q.replace("$__interval", "5m").replace("$timezone", "Europe/Brussels")
    assert "$" not in q, q
    return q


@pytest.mark.parametrize(("title", "query"), _queries(), ids=[t for t, _ in _queries()])
def test_every_panel_query_returns_data(filled: tuple[InfluxV1Server, int, int], title: str, query: str) -> None:
    server, t0, t1 = filled
    series = server.query(_expand(query, t0, t1), DB)
    assert series, f"{title}: no series for {query}"
    values = [v for s in series for row in s["values"] for v in row[1:] if v is not None]
    assert values, f"{title}: only nulls"
    columns = [c for s in series for c in s["columns"][1:]]
    if "relay_" in query:
        assert any(re.search(r"relay_boiler$", c) for c in columns), columns
        assert set(values) <= {0, 1}
        if "GROUP BY time" in query:  # over two days the boiler was on around noon
            assert 1 in values
    if "spread" in query and "1d" in query:  # a day of a simulated house: kWh per day, positive, plausible
        assert 0 < max(values) < 200, values
    if "voltage" in query:
        assert all(200 < v < 260 for v in values)


def test_the_dashboard_reads_the_default_measurement() -> None:
    from app.config import InfluxConfig

    assert InfluxConfig.measurement == "smartmeter"
    assert all('FROM "smartmeter"' in q for _, q in _queries())
