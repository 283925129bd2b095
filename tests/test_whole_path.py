"""The whole appliance, real processes: an Austrian M-Bus meter through a pty, a replay that answers
"what would my relays have done", exported relay states after SIGKILL, a full disk."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest

from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import Appliance, Pty, csv_rows, wait_for
from tests.conftest import FIXTURES
from tests.fixtures_mqtt import Broker
from tests.test_mqtt import Collector

NETZNOE = FIXTURES / "dlms" / "kaifa_ma309_netznoe_mbus_1.bin"


def test_austrian_mbus_meter_through_a_pty_gives_csv_and_relay_decisions(tmp_path: Path) -> None:
    pty = Pty(tmp_path / "ttyAMA0")
    ini = tmp_path / "at.ini"
    ini.write_text(f"""
[meter]
source = {tmp_path / 'ttyAMA0'}
protocol = auto
baudrate = 2400
serial_format = 8E1
timezone = Europe/Vienna
key = 36C66639E48A8CA4D6BC8B282A793BBB
[control]
settle = 0 s
stale_after = 1 h
[relay:heater]
pin = GPIO22
on_when = voltage_l1 > 230 V
off_when = voltage_l1 < 200 V
[csv]
enabled = yes
directory = {tmp_path / 'csv'}
interval = 0
flush_interval = 200 ms
""")
    data = NETZNOE.read_bytes()
    second = data.index(b"\x68", 4 + data[1] + 2)  # the second M-Bus segment
    app = Appliance(ini)
    try:
        app.wait_log(r"reading .*ttyAMA0")
        for _ in range(3):
            pty.write(data[:second])  # segments ~160 ms apart, in separate reads
            time.sleep(0.16)
            pty.write(data[second:])
            time.sleep(0.3)
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv")) == 1, 15), app.log()
        app.wait_log(r"first telegram from meter 181220000009 \(dlms, DLMS profile \S+, interval not known yet\)")
        assert app.stop() == 0
    finally:
        app.kill()
        pty.close()
    # The same push three times: three readings, one CSV row (the same timestamp is never written twice).
    assert "3 readings processed; reader: 3 ok" in app.log()
    assert "CSV: 2 rows not written again" in app.log()
    lines = next((tmp_path / "csv").glob("*.csv")).read_text().splitlines()
    header = lines[0].split(",")
    row = dict(zip(header, lines[1].split(","), strict=True))
    assert row["timestamp"] == "2021-09-27T09:47:15+02:00"
    assert row["total_consumption"] == "12.937"
    assert row["l1_voltage"] == "233.7"
    assert row["relay_heater"] == "1"
    assert "relay heater -> on (voltage_l1 233.7 V > 230 V)" in app.log()


def test_replay_answers_what_the_relays_would_have_done(tmp_path: Path) -> None:
    meter = SimulatedMeter(datetime(2026, 6, 21, 6, 0, tzinfo=BRUSSELS), step_s=10.0, seed=11)
    capture = tmp_path / "yesterday.bin"
    capture.write_bytes(b"".join(meter.telegrams(6 * 60 * 14)))  # 06:00 to 20:00, every 10 s
    ini = tmp_path / "r.ini"
    ini.write_text(f"""
[control]
settle = 1 min
stale_after = 1 min
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W for 5 min
off_when = export < 300 W for 2 min
min_on = 20 min
min_off = 10 min
[csv]
enabled = yes
directory = {tmp_path / 'csv'}
interval = 15 min
""")
    out = subprocess.run([*Appliance.command(ini), "--replay", str(capture), "--replay-speed", "0"],
                         env=Appliance.environment(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = next((tmp_path / "csv").glob("*.csv")).read_text().splitlines()
    relay = [line.rsplit(",", 1)[1] for line in lines[1:]]
    assert len(relay) == 14 * 4
    assert relay[0] == "0" and "1" in relay  # off in the morning, on when the sun exports
    switch_lines = [x for x in out.stderr.splitlines() if "relay boiler -> " in x]
    assert any("-> on (export" in x for x in switch_lines)
    # Deterministic: the same replay decides exactly the same, whatever the speed.
    again = subprocess.run([*Appliance.command(ini), "--replay", str(capture), "--replay-speed", "0"],
                           env=Appliance.environment(), capture_output=True, text=True, timeout=120)
    assert [x.split(": ", 1)[1] for x in again.stderr.splitlines() if "relay boiler -> " in x] == \
        [x.split(": ", 1)[1] for x in switch_lines]


def test_relay_state_exported_safe_after_reader_sigkill(tmp_path: Path, mosquitto: Broker) -> None:
    pty = Pty(tmp_path / "ttyUSB0")
    ini = tmp_path / "m.ini"
    ini.write_text(f"""
[meter]
source = {tmp_path / 'ttyUSB0'}
protocol = dsmr
[control]
settle = 0 s
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W
[mqtt]
enabled = yes
host = {mosquitto.host}
port = {mosquitto.port}
""")
    collector = Collector(mosquitto)
    app = Appliance(ini)
    try:
        app.wait_log(r"reading .*ttyUSB0")
        meter = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=1.0, seed=2)
        for _ in range(3):
            pty.write(meter.next())
        state = "smartmeter/1SAG3100721326/relay/boiler/state"
        collector.wait_for(state, lambda m: m.payload == "ON")
        os.kill(app.pid_of("reader"), signal.SIGKILL)
        assert app.proc.wait(10) == 1
        collector.wait_for(state, lambda m: m.payload == "OFF")
        assert collector.on(state)[-1].payload == "OFF"
        status = collector.wait_for("smartmeter/1SAG3100721326/status", lambda m: m.payload == "offline")
        assert status is not None
    finally:
        app.kill()
        collector.close()
        pty.close()
    assert "relay boiler -> off (reader process died" in app.log()


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny tmpfs needs root (tests/test_csv.py covers "
                                              "the same with RLIMIT_FSIZE)")
def test_full_disk_is_logged_control_goes_on_and_writing_resumes(tmp_path: Path) -> None:
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(csv_dir)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (tests/test_csv.py covers this with RLIMIT_FSIZE)")
    pty = Pty(tmp_path / "ttyUSB0")
    try:
        filler = csv_dir / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)  # fill the disk, then give back one page (~20 rows)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        os.truncate(filler, max(0, filler.stat().st_size - 4096))
        ini = tmp_path / "d.ini"
        ini.write_text(f"""
[meter]
source = {tmp_path / 'ttyUSB0'}
protocol = dsmr
[control]
settle = 0 s
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W
off_when = export < 200 W
[csv]
enabled = yes
directory = {csv_dir}
interval = 0
flush_interval = 200 ms
""")
        app = Appliance(ini)
        try:
            app.wait_log(r"reading .*ttyUSB0")
            meter = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=1.0, seed=2)
            for i in range(40):
                meter.pv_peak_w = 6000.0 if (i // 10) % 2 == 0 else 0.0  # sun, cloud, sun, cloud
                pty.write(meter.next())
                time.sleep(0.05)
            app.wait_log(r"cannot write CSV to .*No space left on device")
            log = app.log()
            assert log.count("relay boiler -> on") >= 2 and log.count("relay boiler -> off (export") >= 1
            filler.unlink()  # space returns
            app.wait_log(r"CSV writing resumed", 10)
            assert wait_for(lambda: len(csv_rows(csv_dir)) == 40, 10), app.log()
            assert app.stop() == 0
        finally:
            app.kill()
        lines = next(csv_dir.glob("*.csv")).read_text().splitlines()
        assert len(lines) == 41 and all(line.count(",") == lines[0].count(",") for line in lines)
    finally:
        pty.close()
        subprocess.run(["umount", "-l", str(csv_dir)])
