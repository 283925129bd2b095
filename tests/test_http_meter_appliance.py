"""The new meter kinds through the whole appliance: an HTTP meter (local http.server), an MQTT meter (the real
Mosquitto) and an IEC 62056-21 meter (the pty simulator) at once, each in its own process, each with its own
CSV file set; the HTTP server going away makes only that meter go offline."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.appliance import Appliance, csv_rows, wait_for
from tests.fixtures_mqtt import Broker
from tests.test_http_meter import _Handler
from tests.test_iec62056 import SimMeter


def test_http_mqtt_and_iec_meters_through_the_appliance(tmp_path: Path, mosquitto: Broker) -> None:
    from http.server import ThreadingHTTPServer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    sim = SimMeter()
    ini = tmp_path / "kinds.ini"
    ini.write_text(f"""
[meter]
source = {tmp_path / 'no-p1'}
protocol = dsmr
[mqtt]
host = {mosquitto.host}
port = {mosquitto.port}
[meter:sub]
protocol = http
url = http://127.0.0.1:{httpd.server_address[1]}/wago
poll_interval = 300 ms
offline_after = 3 s
timeout = 1 s
[meter:heat]
protocol = mqtt
topic_power = site/heat/power
power_unit = kW
[meter:wien]
protocol = iec62056-21
role = zone
port = {sim.path}
format = 8N1
poll_interval = 500 ms
timeout = 1 s
timezone = Europe/Vienna
[csv]
enabled = yes
directory = {tmp_path / 'csv'}
interval = 0
flush_interval = 200 ms
""")
    app = Appliance(ini)
    pub = mqtt.Client(CallbackAPIVersion.VERSION2)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    stop = threading.Event()

    def publish() -> None:
        while not stop.is_set():
            pub.publish("site/heat/power", b"2.5")
            time.sleep(0.3)

    publisher = threading.Thread(target=publish, daemon=True)
    publisher.start()
    try:
        def rows_of(name: str) -> int:
            return len(csv_rows(tmp_path / "csv" / name))

        for name in ("sub", "heat", "wien"):
            assert wait_for(lambda: rows_of(name) >= 2, 40), (name, app.log())  # noqa: B023 (used at once)
        app.wait_log(r"meter sub: offline -> online")
        httpd.shutdown()
        httpd.server_close()
        app.wait_log(r"meter sub: online -> error \((cannot reach|request to)")
        rows = len(csv_rows(tmp_path / "csv" / "heat"))
        assert wait_for(lambda: len(csv_rows(tmp_path / "csv" / "heat")) >= rows + 2, 20), app.log()  # goes on
        stop.set()
        assert app.stop() == 0
    finally:
        stop.set()
        app.kill()
        pub.loop_stop()
        pub.disconnect()
        sim.close()
    expected = {"sub": {"actual_total_consumption": 25.5, "total_consumption": 12345.6, "l1_voltage": 230.2},
                "heat": {"actual_total_consumption": 2.5},
                "wien": {"total_consumption": 12345.678, "total_injection": 321.5, "l1_voltage": 231.4}}
    for name, want in expected.items():
        lines = next((tmp_path / "csv" / name).glob("*.csv")).read_text().splitlines()
        row = dict(zip(lines[0].split(","), lines[1].split(","), strict=True))
        for column, value in want.items():
            assert abs(float(row[column]) - value) <= 0.001, (name, column, row[column])
    log = app.log()
    assert "Traceback" not in log
