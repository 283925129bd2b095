"""Water and heat meters on M-Bus channels: named fields that reach the CSV, InfluxDB and MQTT/HA outputs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from app.config import CsvConfig
from app.framing.dsmr import DsmrFramer
from app.protocols.dsmr import DsmrDecoder
from app.records import Reading
from app.sinks import influx, mqtt_topics
from app.sinks.csv_sink import CsvSink
from tests.conftest import FIXTURES

TZ = ZoneInfo("Europe/Brussels")


def _reading(name: str) -> Reading:
    framer = DsmrFramer()
    frames = framer.feed((FIXTURES / "dsmr" / name).read_bytes()) + framer.flush()
    return DsmrDecoder(TZ).decode(frames[0], datetime(2026, 2, 15, 19, 5, 30, tzinfo=UTC), 1)


def test_heat_and_water_reach_csv_columns(tmp_path: Path) -> None:
    sink = CsvSink(CsvConfig(enabled=True, directory=str(tmp_path), interval=0), TZ, [])  # type: ignore[call-arg]
    sink.write(_reading("nwa_warmtelink_dsmr5.0_1.txt"), {})
    sink.write(_reading("fluvius_be_p1v50217_1.txt"), {})
    sink.flush()
    sink.close()
    text = "".join(p.read_text() for p in sorted(tmp_path.rglob("*.csv")))
    assert "total_heat_consumption" in text and "240" in text
    assert "total_water_consumption" in text and "8" in text


def test_heat_and_water_reach_influx_fields() -> None:
    heat = influx.reading_point(_reading("nwa_warmtelink_dsmr5.0_1.txt"), {}, "smartmeter")
    assert heat is not None and "total_heat_consumption=240.86" in heat.to_line_protocol()
    water = influx.reading_point(_reading("fluvius_be_p1v50217_1.txt"), {}, "smartmeter")
    assert water is not None and "total_water_consumption=8.579" in water.to_line_protocol()


def test_heat_and_water_reach_mqtt_topics_and_home_assistant() -> None:
    heat = _reading("nwa_warmtelink_dsmr5.0_1.txt")
    msgs = {m.topic: json.loads(m.payload) for m in mqtt_topics.reading_messages(heat, "smartmeter")}
    assert [v["value"] for t, v in msgs.items() if t.endswith("/heat/energy")] == [240.86]
    water = _reading("fluvius_be_p1v50217_1.txt")
    msgs = {m.topic: json.loads(m.payload) for m in mqtt_topics.reading_messages(water, "smartmeter")}
    assert [v["value"] for t, v in msgs.items() if t.endswith("/water/volume")] == [8.579]
    topics = mqtt_topics.Topics.of("smartmeter", water.meter_id)
    specs = [s for s in mqtt_topics.TOPICS if s.field in ("total_water_consumption", "total_heat_consumption")]
    configs = [json.loads(m.payload) for m in mqtt_topics.discovery_messages(topics, specs, [], {}, "homeassistant")]
    by_class = {c["device_class"]: c for c in configs}
    assert by_class["water"]["unit_of_measurement"] == "m³"
    assert by_class["energy"]["unit_of_measurement"] == "GJ"
    assert all(c["state_class"] == "total_increasing" for c in configs)
