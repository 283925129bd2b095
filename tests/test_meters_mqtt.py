"""MQTT keys readings by meter: the [meter] meter's topics as before, a [meter:NAME] meter's under
`<prefix>/<NAME>/` on its own connection, with its status (`meter` JSON, availability) when it goes offline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from app.config import loads
from app.meters.sample import Sample, to_reading
from app.pipeline import PostProcessor
from tests.fixtures_mqtt import Broker
from tests.test_mqtt import FLUVIUS, METER, Collector, parse


@pytest.fixture
def subscriber(mosquitto: Broker) -> Iterator[Collector]:
    """A subscriber on '#'."""
    c = Collector(mosquitto)
    yield c
    c.close()


def test_each_meter_gets_its_own_topic_tree_and_status(mosquitto: Broker, subscriber: Collector) -> None:
    collector = subscriber
    cfg = loads(f"""
[meter]
source = /dev/null
[meter:pv]
role = solar
protocol = modbus
source = tcp://127.0.0.1:1
preset = sdm630
offline_after = 1 s
[csv]
enabled = no
[history]
enabled = no
[mqtt]
enabled = yes
host = {mosquitto.host}
port = {mosquitto.port}
reconnect_max = 1 s
publish_interval = 0 s
""")
    pp = PostProcessor(cfg)
    try:
        pp.start()
        pp.on_reading(parse(FLUVIUS))
        for seq in (1, 2):
            pp.dispatch(to_reading(Sample(power_w=-2500.0, export_kwh=12.5), "pv", "solar", "modbus", seq,
                                   datetime.now(UTC)))
            pp.tick()
        collector.wait_for("smartmeter/pv/status", lambda m: m.payload == "online")
        collector.wait_for("smartmeter/pv/meter", lambda m: json.loads(m.payload)["status"] == "online")
        collector.wait_for(f"smartmeter/{METER}/status", lambda m: m.payload == "online")
        out = collector.wait_for("smartmeter/pv/power/power_out")
        assert json.loads(out.payload)["value"] == 2500  # W on MQTT
        assert json.loads(collector.wait_for("smartmeter/pv/energy/energy_out").payload)["value"] == 12.5
        assert not [m for m in collector.under(f"smartmeter/{METER}/") if "gas" not in m.topic
                    and m.topic.endswith("power_out") and json.loads(m.payload)["value"] == 2500]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not [
                m for m in collector.on("smartmeter/pv/meter") if json.loads(m.payload)["status"] == "offline"]:
            pp.tick()
            time.sleep(0.1)
        msg = collector.wait_for("smartmeter/pv/meter", lambda m: json.loads(m.payload)["status"] == "offline")
        assert "offline_after is 1 s" in json.loads(msg.payload)["reason"]
        collector.wait_for("smartmeter/pv/availability", lambda m: m.payload == "offline")
    finally:
        pp.close()
    collector.wait_for("smartmeter/pv/status", lambda m: m.payload == "offline")
