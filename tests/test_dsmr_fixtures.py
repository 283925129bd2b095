"""Every real DSMR capture in ../shared/fixtures/dsmr decodes to its MANIFEST.json."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.framing.dsmr import DsmrFramer
from app.obis import normalize
from app.protocols.dsmr import DsmrDecoder, parse_telegram
from app.records import Reading, Value
from tests.conftest import FIXTURES, ROOT, manifest

ENTRIES = [e for e in manifest("dsmr") if not e.get("encrypted")]
TZ = ZoneInfo("Europe/Brussels")


def _same(got: object, expected: str) -> bool:
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        return float(expected) == float(got)
    return got == expected


def _check(reading: Reading, expected: dict[str, Any]) -> None:
    for ref, exp in expected.items():
        key = normalize(ref)
        assert key in reading.values, f"{ref} missing"
        v: Value = reading.values[key]
        if exp and isinstance(exp[0], list):
            assert [list(g) for g in v.groups] == exp, ref
        else:
            assert _same(v.value, exp[0]), f"{ref}: {v.value!r} != {exp[0]!r}"
            assert v.unit == exp[1], f"{ref}: unit {v.unit!r} != {exp[1]!r}"


def _frames(name: str) -> list[Any]:
    data = (FIXTURES / "dsmr" / name).read_bytes()
    framer = DsmrFramer()
    return framer.feed(data) + framer.flush()


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_fixture_decodes_to_manifest(entry: dict[str, Any]) -> None:
    frames = _frames(entry["file"])
    good = [f for f in frames if f.ok]
    assert good, [f.reason for f in frames]
    assert good[0].crc_ok == entry["crc_ok"]
    reading = DsmrDecoder(TZ).decode(good[0], datetime.now(UTC), 1)
    assert reading.header == entry["header"].lstrip("/")
    assert reading.crc_ok == entry["crc_ok"]
    _check(reading, entry["expected"])
    if entry.get("kind") == "stream":
        assert len(good) == entry["telegram_count"]
        assert [f.ok for f in frames] == [t["ok"] for t in entry["telegrams"]]


def test_named_fields_fluvius() -> None:
    frame = _frames("fluvius_be_p1v50217_1.txt")[0]
    r = DsmrDecoder(TZ).decode(frame, datetime.now(UTC), 1)
    assert r.meter_id == "1SAG3100721326"
    assert r.meter_time == datetime(2023, 11, 2, 12, 15, 48, tzinfo=TZ)
    f = r.fields
    assert f["total_consumption_day"] == 301.548
    assert f["actual_total_consumption"] == 0.338
    assert f["l1_voltage"] == 232.9 and f["l2_current"] == 0.88
    assert f["current_average_demand"] == 0.052 and f["maximum_demand_month"] == 3.064
    # gas is channel 1 (device type 3), not the water meter on channel 2
    assert f["total_gas_consumption"] == 92.287
    assert r.gas_time == datetime(2023, 11, 2, 12, 10, 2, tzinfo=TZ)
    assert r.values["1-0:1.6.0"].timestamp == datetime(2023, 11, 2, 11, 45, tzinfo=TZ)


def test_dsmr22_gas_on_next_line() -> None:
    frame = _frames("iskra_mt382_dsmr2.2_1.txt")[0]
    r = DsmrDecoder(TZ).decode(frame, datetime(2021, 11, 22, 21, 0, 5, tzinfo=UTC), 1)
    assert r.crc_ok is None and r.meter_time is None
    assert r.time == r.received  # no meter clock: receive time
    assert r.fields["total_gas_consumption"] == 13368.864
    assert r.gas_time == datetime(2021, 11, 22, 21, 0, tzinfo=TZ)


def test_summer_and_winter_flags_in_the_repeated_hour() -> None:
    s = parse_telegram(b"/X\r\n\r\n0-0:1.0.0(231029023000S)\r\n!\r\n", datetime.now(UTC), TZ)
    w = parse_telegram(b"/X\r\n\r\n0-0:1.0.0(231029023000W)\r\n!\r\n", datetime.now(UTC), TZ)
    assert s.meter_time is not None and w.meter_time is not None
    assert (w.meter_time - s.meter_time).total_seconds() == 3600
    assert s.meter_time.utcoffset().total_seconds() == 7200  # type: ignore[union-attr]


def test_non_ascii_bytes_never_raise() -> None:
    body = b"/ISK5\\2M550T\r\n\r\n0-0:96.13.0(\xb3\xff)\r\n1-0:1.8.1(000001.000*kWh)\r\n!"
    from app.framing.dsmr import crc16_arc

    tele = body + f"{crc16_arc(body):04X}\r\n".encode()
    frames = DsmrFramer().feed(tele)
    assert frames[0].ok
    r = DsmrDecoder(TZ).decode(frames[0], datetime.now(UTC))
    assert r.values["0-0:96.13.0"].value == "\xb3\xff"
    assert r.fields["total_consumption_day"] == 1.0


def test_unknown_obis_lines_are_kept() -> None:
    r = parse_telegram(b"/X\r\n\r\n7-7:99.99.99(abc*zz)\r\n!\r\n", datetime.now(UTC), TZ)
    assert r.values["7-7:99.99.99"] == Value("abc", "zz")


def test_decode_tool_prints_json_lines() -> None:
    path = FIXTURES / "dsmr" / "iskra_am550-stream_dsmr5.0_1.txt"
    out = subprocess.run([sys.executable, str(ROOT / "app" / "main.py"), "--decode", str(path)],
                         capture_output=True, text=True, timeout=60, check=True)
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert len(lines) == 5
    first = lines[0]
    assert first["protocol"] == "dsmr" and first["crc_ok"] is True
    assert first["header"] == "ISK5\\2M550T-1012"
    assert first["timestamp"] == "2019-03-24T15:05:19+01:00"
    assert first["values"]["1-0:1.8.1"] == {"value": 3432.827, "unit": "kWh"}


def test_decode_tool_reports_rejects_on_stderr(tmp_path: Any) -> None:
    data = (FIXTURES / "dsmr" / "fluvius_be_p1v50217_1.txt").read_bytes().replace(b"301.548", b"301.549")
    p = tmp_path / "bad.txt"
    p.write_bytes(data)
    out = subprocess.run([sys.executable, str(ROOT / "app" / "main.py"), "--decode", str(p), "--protocol", "dsmr"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert "CRC mismatch: calculated" in out.stderr and "received C4B0" in out.stderr


def test_absurdly_long_numbers_stay_text_and_never_raise() -> None:
    for body in (b"1-0:1.8.1(-" + b"1" * 5000 + b"*kWh)", b"1-0:1.8.1(" + b"1" * 5000 + b"*kWh)",
                 b"0-1:24.3.0(1)(2)(3)(4)(5)(m3)\r\n(" + b"9" * 5000 + b")"):
        r = parse_telegram(b"/X\r\n\r\n" + body + b"\r\n!\r\n", datetime.now(UTC), TZ)
        assert all(isinstance(v.value, str) for v in r.values.values())
