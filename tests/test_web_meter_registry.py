"""The meter registry's write side: the WAGO body -> a [meter:NAME] file validated like the INI; the routes on a
real uvicorn server (token, 400 with the INI's message, 409 for the P1 meter and main-INI meters)."""

from __future__ import annotations

import configparser
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def _two_unit_sim() -> Any:
    """pymodbus's server answering unit 1 (PV -5 kW) and unit 2 (-3 kW): a PUT to unit_id 2 shows in the values."""
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext

    from tests.test_modbus import ModbusSim, spec_for

    sim = ModbusSim()
    second = ModbusDeviceContext(hr=ModbusSequentialDataBlock(0, [0] * 0x10000),
                                 ir=ModbusSequentialDataBlock(0, [0] * 0x10000))
    sim.context = ModbusServerContext(devices={1: sim.device, 2: second}, single=False)
    sim.start()
    regs = spec_for(f"protocol = modbus\nsource = tcp://127.0.0.1:{sim.port}\npreset = sdm630\n").settings.registers
    sim.set(regs, {"power_w": -5000.0, "voltage_v": 231.0})
    one = sim.device
    sim.device = second
    sim.set(regs, {"power_w": -3000.0, "voltage_v": 232.0})
    sim.device = one
    return sim


def test_put_restarts_that_meter_only_and_the_p1_path_and_relays_go_on(tmp_path: Path) -> None:
    """POST starts one meter, PUT restarts only it (new pid, new unit id's values) while the P1 reader's and the
    post-processor's pids stay and a P1 relay never leaves ON; the meter is offline at once while it restarts
    (offline_after is an hour) and a relay that needs it goes safe; a killed meter is `error` at once; a bad
    file is refused with the INI's message while the others go on; DELETE stops only that meter."""
    import os
    import re
    import signal
    import threading
    from datetime import datetime

    from app.simulator import BRUSSELS, SimulatedMeter
    from tests.appliance import Appliance, Pty, csv_rows, process_alive, pty_feeder, wait_for
    from tests.test_web_process import call as call_as
    from tests.test_web_process import free_port

    def call(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        return call_as(port, method, path, body, token=TOKEN)

    def listed() -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = (call(port, "GET", "/api/energy-meters")[1] or {}).get("data", [])
        return data

    sim = _two_unit_sim()
    d = tmp_path / "meters.d"
    d.mkdir()
    pty = Pty(tmp_path / "ttyUSB0")
    port = free_port()
    ini = tmp_path / "main.ini"
    ini.write_text(f"""
[general]
meters_dir = {d}
[meter]
source = {tmp_path / 'ttyUSB0'}
protocol = dsmr
[control]
settle = 0 s
stale_after = 1 h
[relay:boiler]
pin = GPIO17
on_when = voltage_l1 > 100 V
[relay:charger]
pin = GPIO27
on_when = pv.power < -1000 W
[csv]
enabled = yes
directory = {tmp_path / 'csv'}
interval = 0
flush_interval = 200 ms
[web]
enabled = yes
host = 127.0.0.1
port = {port}
token = {TOKEN}
""")
    # the charger's condition names pv, so pv's file (as POST writes it) is there before the start
    pv = {"name": "pv", "protocol": "modbus", "meterType": "solar", "pollInterval": 200, "offlineAfter": 3600000,
          "communication": {"source": f"tcp://127.0.0.1:{sim.port}", "unitId": 1, "preset": "sdm630",
                            "timeout": "500 ms"}}
    from app.web.meter_files import write_file

    write_file(str(d), *_as_file(pv))
    stop = threading.Event()
    meter = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=1.0, seed=2)

    app = Appliance(ini)
    feeder = pty_feeder(pty, meter, stop)
    try:
        app.wait_log(r"reading .*ttyUSB0")
        feeder.start()
        reader_pid, pp_pid = app.pid_of("reader"), app.pid_of("post-processor")
        app.wait_log(r"relay boiler -> on")
        app.wait_log(r"relay charger -> on \(pv.power")
        pv_pid = int(app.wait_log(r"meter pv process started \(pid (\d+),").group(1))
        # POST: one more meter starts, nothing else restarts
        sub = {"name": "sub", "protocol": "modbus", "meterType": "zone", "pollInterval": 200,
               "offlineAfter": 3600000,
               "communication": {"source": f"tcp://127.0.0.1:{sim.port}", "unitId": 2, "preset": "sdm630"}}
        assert wait_for(lambda: call(port, "GET", "/api/energy-meters")[0] == 200, 30)
        status, body = call(port, "POST", "/api/energy-meters", sub)
        assert status == 201, body
        app.wait_log(r"meters_dir: sub added; its process starts")
        sub_pid = int(app.wait_log(r"meter sub process started \(pid (\d+),").group(1))
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv" / "sub")) >= 1, 30), app.log()
        assert wait_for(lambda: any(m["id"] == "sub" and m["status"] == "online" for m in listed()), 30)
        # PUT: pv to unit 2 -> only pv's process restarts, offline at once, the charger safe, then on again
        status, body = call(port, "PUT", "/api/energy-meters/pv",
                            {**pv, "communication": {**pv["communication"], "unitId": 2}})
        assert status == 200, body
        app.wait_log(r"meters_dir: pv changed; its process restarts with the new settings")
        app.wait_log(r"meter pv: online -> offline \(restarting: its settings changed\)")
        app.wait_log(r"relay charger -> off \(stale: meter pv offline\)")
        new_pv = int(app.wait_log(r"meter pv process started[\s\S]*meter pv process started \(pid (\d+),").group(1))
        assert new_pv != pv_pid and wait_for(lambda: not process_alive(pv_pid), 10)
        app.wait_log(r"relay charger -> off \(stale: meter pv offline\)[\s\S]*relay charger -> on", 30)
        assert wait_for(lambda: (call(port, "GET", "/api/energy-meters/pv/reading")[1] or {}).get("data", {})
                        .get("currentPower") == -3.0, 30), app.log()  # unit 2's value
        # killed: error at once (offline_after is an hour), restarted by main
        os.kill(new_pv, signal.SIGKILL)
        app.wait_log(r"meter pv: online -> error \(its process exited \(code -9\); restarting in 1 s\)")
        app.wait_log(r"meter-pv restarted \(restart 1 in a row")
        # a bad file: the INI's message, the others go on
        (d / "bad.ini").write_text("[meter:bad]\nprotocol = http\n")
        app.wait_log(r"meters_dir: \S*bad.ini not applied; the other meters go on: \[meter:bad\] url: missing")
        rows = len(csv_rows(tmp_path / "csv" / "sub"))
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv" / "sub")) > rows + 2, 30), app.log()
        (d / "bad.ini").unlink()
        # DELETE: sub stops and stays stopped; pv and P1 go on
        status, body = call(port, "DELETE", "/api/energy-meters/sub")
        assert status == 200, body
        app.wait_log(r"meters_dir: sub removed; its process stops")
        assert wait_for(lambda: not process_alive(sub_pid), 15)
        assert wait_for(lambda: [m["id"] for m in listed()] == ["grid", "pv"], 30)
        status, body = call(port, "DELETE", "/api/energy-meters/pv")
        assert status == 409 and "needs meter 'pv'" in body["error"]
        time.sleep(1.0)
        log = app.log()
        assert log.count("meter sub process started") == 1
        assert log.count("reader process started") == 1 and log.count("post-processor process started") == 1
        assert log.count("smartmeter 0") == 1  # main never restarted itself
        assert process_alive(reader_pid) and process_alive(pp_pid)
        after_on = log[log.index("relay boiler -> on"):]
        assert not re.search(r"relay boiler -> off", after_on), log  # the P1 relay never left ON
        assert app.proc.poll() is None
        stop.set()
        assert app.stop() == 0
    finally:
        stop.set()
        app.kill()
        pty.close()
        sim.stop()
    assert "Traceback" not in app.log()


def _as_file(body: dict[str, Any]) -> tuple[str, str]:
    from app.web.meter_files import ini_text

    ident, items = section_items(body)
    return ident, ini_text(ident, items)
