"""Two meters through the whole appliance: the P1 simulator on a pty plus a Modbus PV meter (pymodbus's
server); `available` drives a relay; the PV meter's process hung -> its readings stop, the P1 meter's
go on, the relay that needs it goes safe; main kills and restarts it, it comes back online."""

from __future__ import annotations

import os
import signal
import threading
from datetime import datetime
from pathlib import Path

from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import Appliance, Pty, csv_rows, process_alive, pty_feeder, wait_for
from tests.test_modbus import ModbusSim, spec_for


def test_p1_and_modbus_pv_meter_available_drives_a_relay_and_a_hung_meter_is_safe_and_restarted(
        tmp_path: Path) -> None:
    sim = ModbusSim().start()
    pv_section = f"""role = solar
protocol = modbus
source = tcp://127.0.0.1:{sim.port}
preset = sdm630
poll_interval = 200 ms
offline_after = 2 s
timeout = 500 ms
"""
    sim.set(spec_for(pv_section).settings.registers, {"power_w": -5000.0, "export_kwh": 4321.5,
                                                      "voltage_v": 231.0})
    pty = Pty(tmp_path / "ttyUSB0")
    ini = tmp_path / "two.ini"
    ini.write_text(f"""
[meter]
source = {tmp_path / 'ttyUSB0'}
protocol = dsmr
[site]
grid_capacity = 9.2 kW
[meter:pv]
{pv_section}
[control]
settle = 0 s
stale_after = 1 h
[relay:charger]
pin = GPIO17
on_when = available > 5 kW
[csv]
enabled = yes
directory = {tmp_path / 'csv'}
interval = 0
flush_interval = 200 ms
""")
    stop = threading.Event()
    meter = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=1.0, seed=2)

    app = Appliance(ini)
    feeder = pty_feeder(pty, meter, stop)
    try:
        app.wait_log(r"reading .*ttyUSB0")
        feeder.start()
        app.wait_log(r"meter pv: offline -> online")
        app.wait_log(r"relay charger -> on \(available [\d.]+ kW > 5 kW\)")
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv" / "pv")) >= 3, 15), app.log()
        lines = next((tmp_path / "csv" / "pv").glob("*.csv")).read_text().splitlines()
        row = dict(zip(lines[0].split(","), lines[-1].split(","), strict=True))
        assert row["actual_total_injection"] == "5" and row["total_injection"] == "4321.5", row
        assert row["actual_total_consumption"] == "0" and row["l1_voltage"] == "231", row
        pid = int(app.wait_log(r"meter pv process started \(pid (\d+),").group(1))
        os.kill(pid, signal.SIGSTOP)  # hung: no heartbeat, no reading
        app.wait_log(r"meter pv: online -> offline \(no reading for \d+ s, offline_after is 2 s\)")
        app.wait_log(r"relay charger -> off \(stale: meter pv offline\)")
        pv_rows = len(csv_rows(tmp_path / "csv" / "pv"))
        main_rows = len(csv_rows(tmp_path / "csv"))
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv")) >= main_rows + 4, 15), app.log()  # P1 goes on
        assert len(csv_rows(tmp_path / "csv" / "pv")) == pv_rows  # the PV meter's stopped
        app.wait_log(r"meter-pv hung \(no heartbeat for [\d.]+ s\); killed it; its meter is offline until "
                     r"restart 1 in 1 s", 30)
        assert wait_for(lambda: not process_alive(pid), 10)
        app.wait_log(r"meter-pv restarted \(restart 1 in a row, 1 since the start\)")
        app.wait_log(r"meter pv: offline -> online")
        new_pid = int(app.wait_log(r"meter pv process started \(pid (\d+),.*\n(?:.*\n)*.*meter pv process "
                                   r"started \(pid (\d+),").group(2))
        assert new_pid != pid
        app.wait_log(r"relay charger -> off \(stale: meter pv offline\)(?:.*\n)+.*relay charger -> on")
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv" / "pv")) > pv_rows, 15), app.log()
        assert app.proc.poll() is None  # the appliance runs on
        stop.set()
        assert app.stop() == 0
    finally:
        stop.set()
        app.kill()
        pty.close()
        sim.stop()
    log = app.log()
    assert "relay charger held in its safe state: stale: meter pv offline" in log
    assert "Traceback" not in log


def test_every_presets_values_come_out_of_the_whole_appliance(tmp_path: Path) -> None:
    from app.meters.modbus import PRESETS
    from tests.test_modbus import VALUES

    sims = {name: ModbusSim().start() for name in sorted(PRESETS)}
    try:
        sections = ""
        for name, sim in sims.items():
            text = f"protocol = modbus\nsource = tcp://127.0.0.1:{sim.port}\npreset = {name}\npoll_interval = 300 ms\n"
            sim.set(spec_for(text, name).settings.registers, VALUES)
            sections += f"[meter:{name}]\n{text}"
        ini = tmp_path / "presets.ini"
        ini.write_text(f"[meter]\nsource = {tmp_path / 'no-p1'}\nprotocol = dsmr\n{sections}"
                       f"[csv]\nenabled = yes\ndirectory = {tmp_path / 'csv'}\ninterval = 0\nflush_interval = 200 ms\n")
        app = Appliance(ini)
        try:
            for name in sims:
                assert wait_for(lambda n=name: len(csv_rows(tmp_path / "csv" / n)) >= 1, 30), app.log()
            assert app.stop() == 0
        finally:
            app.kill()
    finally:
        for sim in sims.values():
            sim.stop()
    expected = {"actual_total_consumption": 0.0, "actual_total_injection": 2.1505, "total_consumption": 1234.5,
                "total_injection": 321.25, "l1_voltage": 231.2, "l1_current": 9.35}
    for name in sims:
        lines = next((tmp_path / "csv" / name).glob("*.csv")).read_text().splitlines()
        row = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
        for column, value in expected.items():
            assert abs(float(row[column]) - value) <= 0.06, (name, column, row[column])


def test_a_replay_contacts_no_other_meter_and_holds_the_relays_that_need_one_safe(tmp_path: Path) -> None:
    """--replay with [meter:NAME] sections: no meter process starts (nothing is contacted), the relays whose
    conditions need such a meter stay in their safe state for the whole replay (said once), the others follow
    the capture."""
    from tests.conftest import FIXTURES

    ini = tmp_path / "replay.ini"
    ini.write_text(f"""
[meter]
source = /dev/null
protocol = dsmr
[site]
grid_capacity = 9.2 kW
[meter:pv]
role = solar
protocol = modbus
source = tcp://127.0.0.1:1
preset = sdm630
[control]
settle = 0 s
[relay:boiler]
pin = GPIO17
on_when = voltage_l1 > 100 V
[relay:charger]
pin = GPIO27
on_when = available > 1 kW
[csv]
enabled = yes
directory = {tmp_path / 'csv'}
interval = 0
""")
    app = Appliance(ini, "--replay", str(FIXTURES / "dsmr" / "iskra_am550-stream_dsmr5.0_1.txt"),
                    "--replay-speed", "0")
    try:
        code = app.proc.wait(timeout=60)
    finally:
        app.kill()
    log = app.log()
    assert code == 0, log
    assert "meter pv process started" not in log
    assert log.count("replay: the 1 [meter:NAME] meter(s) are not contacted") == 1
    assert log.count("relay charger held in its safe state: replay: meter pv is not read in a replay") == 1
    assert "relay boiler -> on (voltage_l1" in log
    assert "relay charger -> on" not in log
    rows = csv_rows(tmp_path / "csv")
    assert len(rows) == 5 and not (tmp_path / "csv" / "pv").exists()
    assert "Traceback" not in log
