"""The meter registry's write side: the WAGO body -> a [meter:NAME] file validated like the INI; the routes on a
real uvicorn server (token, 400 with the INI's message, 409 for the P1 meter and main-INI meters)."""

from __future__ import annotations

import configparser
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Section, loads
from app.errors import ConfigError
from app.meters import parse_meter
from app.web.meter_files import ini_text, meter_id, section_items, validate
from tests.test_web import TOKEN, FakeHistory, Served

PV = {"name": "PV Inverter", "location": "garage", "protocol": "modbus", "meterType": "solar", "pollInterval": 5000,
      "communication": {"ipAddress": "192.168.1.50", "port": 502, "unitId": 1,
                        "registers": {"power": 20480, "energy": 20482, "energyHigh": 20483}}}


def test_body_to_section() -> None:
    ident, items = section_items(PV)
    assert ident == "pv_inverter"
    assert items == {"protocol": "modbus", "role": "solar", "location": "garage", "poll_interval": "5000 ms",
                     "source": "tcp://192.168.1.50:502", "unit_id": "1", "register_power": "20480",
                     "register_energy": "20482", "register_energy_high": "20483"}
    spec = validate(ident, items)
    assert (spec.role, spec.poll_interval) == ("solar", 5.0)
    http = {"name": "sub", "protocol": "http", "meterType": "building",
            "communication": {"url": "http://192.168.1.70/api", "authToken": "tok", "headers": {"X-A": "1"}}}
    ident, items = section_items(http)
    assert items["auth_token"] == "tok" and items["headers"] == "X-A: 1"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(ini_text(ident, items))
    assert dict(parser["meter:sub"]) == items  # the file reads back as written
    mqtt = {"name": "shelly", "protocol": "mqtt", "communication": {"topics": {"power": "shellies/x/power"}}}
    assert section_items(mqtt)[1]["topic_power"] == "shellies/x/power"
    assert meter_id("3 Phase!") == "m_3_phase"


def test_a_bad_body_gets_the_ini_message() -> None:
    body = {**PV, "communication": {**PV["communication"], "unitId": "x"}}
    ident, items = section_items(body)
    with pytest.raises(ConfigError) as api:
        validate(ident, items)
    with pytest.raises(ConfigError) as ini:
        parse_meter(Section("meter:pv_inverter", items), "pv_inverter")
    assert str(api.value) == str(ini.value) and "[meter:pv_inverter] unit_id = 'x'" in str(api.value)
    with pytest.raises(ConfigError, match="unknown key"):
        validate(*section_items({**PV, "communication": {**PV["communication"], "colour": "red"}}))
    with pytest.raises(ConfigError, match="unknown field"):
        section_items({**PV, "foo": 1})


@pytest.fixture
def served_dir(tmp_path: Path) -> Iterator[tuple[Served, Path]]:
    FakeHistory.calls, FakeHistory.fail = [], None
    d = tmp_path / "meters.d"
    s = Served(f"""
[general]
meters_dir = {d}
[meter]
source = /dev/null
[meter:heat]
protocol = http
url = http://127.0.0.1:9/x
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W
[web]
enabled = yes
token = {TOKEN}
""")
    yield s, d
    s.close()


def test_post_put_delete(served_dir: tuple[Served, Path]) -> None:
    s, d = served_dir
    status, body, _h = s.request("POST", "/api/energy-meters", PV)
    assert status == 401  # the token is required
    status, body, _h = s.request("POST", "/api/energy-meters", PV, token=TOKEN)
    assert status == 201, body
    assert body["success"] is True and body["data"]["id"] == "pv_inverter"
    path = d / "pv_inverter.ini"
    assert path.exists() and path.stat().st_mode & 0o077 == 0
    cfg = loads(f"[general]\nmeters_dir = {d}\n[meter]\nsource = /dev/null\n")
    assert [m.name for m in cfg.meters] == ["pv_inverter"]  # the file is config like the main INI
    status, body, _h = s.request("POST", "/api/energy-meters", PV, token=TOKEN)
    assert status == 409 and "exists already" in body["error"]
    bad = {**PV, "communication": {**PV["communication"], "unitId": "x"}}
    status, body, _h = s.request("PUT", "/api/energy-meters/pv_inverter", bad, token=TOKEN)
    assert status == 400 and "[meter:pv_inverter] unit_id = 'x'" in body["error"]
    status, body, _h = s.request("PUT", "/api/energy-meters/pv_inverter", {**PV, "pollInterval": 2000},
                                 token=TOKEN)
    assert status == 200 and body["data"]["settings"]["poll_interval"] == "2000 ms"
    assert "poll_interval = 2000 ms" in path.read_text()
    for method in ("PUT", "DELETE"):
        status, body, _h = s.request(method, "/api/energy-meters/grid", PV if method == "PUT" else None,
                                     token=TOKEN)
        assert status == 409 and "P1" in body["error"]
        status, body, _h = s.request(method, "/api/energy-meters/heat", PV if method == "PUT" else None,
                                     token=TOKEN)
        assert status == 409 and "edit that file" in body["error"]
    status, body, _h = s.request("DELETE", "/api/energy-meters/pv_inverter", token=TOKEN)
    assert status == 200 and body["data"]["deleted"] is True and not path.exists()
    status, body, _h = s.request("DELETE", "/api/energy-meters/pv_inverter", token=TOKEN)
    assert status == 404


def test_secrets_masked_and_no_token_no_writes(served_dir: tuple[Served, Path], tmp_path: Path) -> None:
    s, _d = served_dir
    body = {"name": "sub", "protocol": "http", "communication": {"url": "http://h/x", "authToken": "tok-9876"}}
    status, got, _h = s.request("POST", "/api/energy-meters", body, token=TOKEN)
    assert status == 201 and "tok-9876" not in repr(got)
    plain = Served(f"[general]\nmeters_dir = {tmp_path / 'x'}\n[meter]\nsource = /dev/null\n[web]\nenabled = yes\n")
    try:
        status, got, _h = plain.request("POST", "/api/energy-meters", PV)
        assert status == 403 and "token" in got["error"]
    finally:
        plain.close()


def test_main_starts_and_stops_meters_from_meters_dir(tmp_path: Path) -> None:
    import threading
    from http.server import ThreadingHTTPServer

    from tests.appliance import Appliance, csv_rows, wait_for
    from tests.test_http_meter import _Handler

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    d = tmp_path / "meters.d"
    d.mkdir()
    ini = tmp_path / "main.ini"
    ini.write_text(f"""
[general]
meters_dir = {d}
[meter]
source = {tmp_path / 'no-p1'}
protocol = dsmr
[csv]
enabled = yes
directory = {tmp_path / 'csv'}
interval = 0
flush_interval = 200 ms
""")
    app = Appliance(ini)
    try:
        app.wait_log(r"smartmeter .* starting")
        body = {"name": "sub", "protocol": "http", "pollInterval": 300,
                "communication": {"url": f"http://127.0.0.1:{httpd.server_address[1]}/wago"}}
        from app.web.meter_files import ini_text, write_file
        ident, items = section_items(body)
        write_file(str(d), ident, ini_text(ident, items))  # what POST /api/energy-meters does
        app.wait_log(r"meters_dir: added sub; restarting with the new meters")
        app.wait_log(r"meter sub process started")
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv" / "sub")) >= 1, 30), app.log()
        (d / "bad.ini").write_text("[meter:bad]\nprotocol = http\n")
        app.wait_log(r"changed, not applied \(the running meters go on\): \[meter:bad\] url: missing")
        (d / "bad.ini").unlink()
        (d / "sub.ini").unlink()  # what DELETE does
        app.wait_log(r"meters_dir: removed sub; restarting")
        n = app.log().count("meter sub process started")
        app.wait_log(r"smartmeter .* starting[\s\S]*smartmeter .* starting[\s\S]*smartmeter .* starting")
        time.sleep(1.0)
        assert app.log().count("meter sub process started") == n  # not started again
        assert app.proc.poll() is None
        assert app.stop() == 0
    finally:
        app.kill()
        httpd.shutdown()
        httpd.server_close()
    assert "Traceback" not in app.log()
