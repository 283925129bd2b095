"""Every real DSMR capture in ../shared/fixtures/dsmr decodes to its MANIFEST.json."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.framing.dsmr import DsmrFramer
from app.obis import FIELDS, normalize
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


# ---------------------------------------------------------------- named fields from a MANIFEST

_NAME_BY_CDE = {f.cde: (f.name, f.unit) for f in FIELDS}
_TO_BASE = {("Wh", "kWh"): 0.001, ("W", "kW"): 0.001}
_MBUS_NAMES = {3: "total_gas_consumption", 6: "total_water_consumption", 7: "total_water_consumption",
               4: "total_heat_consumption", 12: "total_heat_consumption", 13: "total_heat_consumption"}


def manifest_fields(entry: dict[str, Any]) -> dict[str, float]:
    """The named fields a MANIFEST entry implies: its own `fields` where it lists them, else derived
    here from its OBIS values (an oracle independent of app.obis.named_fields): electricity C.D.E
    in base units, the 1.8.1+1.8.2 totals, and per M-Bus kind the lowest channel with a real reading
    (an all-zero slot dated 1970 or with no unit is no reading)."""
    if "fields" in entry:
        return {k: float(v) for k, v in entry["fields"].items()}
    out: dict[str, float] = {}
    expected: dict[str, Any] = entry["expected"]
    for ref, exp in expected.items():
        m = re.match(r"^1-\d+:(\d+\.\d+\.\d+)(?:[.*]255)?$", ref)
        if m is None or m.group(1) not in _NAME_BY_CDE or isinstance(exp[0], list):
            continue
        name, unit = _NAME_BY_CDE[m.group(1)]
        if name not in out:
            out[name] = float(exp[0]) * _TO_BASE.get((exp[1], unit), 1.0)
    for total, day, night in (("total_consumption", "total_consumption_day", "total_consumption_night"),
                              ("total_injection", "total_injection_day", "total_injection_night")):
        if total not in out and day in out:
            out[total] = out[day] + out.get(night, 0.0)
    channels = sorted({int(m.group(1)) for r in expected if (m := re.match(r"^0-(\d+):24\.1\.0", r))})
    for n in channels:
        name = _MBUS_NAMES.get(int(expected[f"0-{n}:24.1.0"][0]))
        reading = next((expected[r] for r in expected if re.match(rf"^0-{n}:24\.(2\.[13]|3\.0)", r)), None)
        if name is None or name in out or reading is None:
            continue
        date, (value, unit) = reading[0][0], reading[-1]
        if float(value) == 0 and (date.startswith("700101") or date.startswith("6325") or not unit):
            continue
        out[name] = float(value)
    return out


def check_fields(fields: dict[str, float], entry: dict[str, Any]) -> None:
    """Every named field the manifest implies is there with its value; no M-Bus field beyond them."""
    expected = manifest_fields(entry)
    for name, value in expected.items():
        assert name in fields, f"{entry['file']}: named field {name} missing (expected {value})"
        assert fields[name] == pytest.approx(value, rel=1e-9, abs=1e-9), f"{entry['file']}: {name}"
    extra = {n for n in set(_MBUS_NAMES.values()) if n in fields and n not in expected}
    assert not extra, f"{entry['file']}: M-Bus fields from empty slots: {extra}"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_fixture_named_fields_match_manifest(entry: dict[str, Any]) -> None:
    good = [f for f in _frames(entry["file"]) if f.ok]
    reading = DsmrDecoder(TZ).decode(good[0], datetime.now(UTC), 1)
    check_fields(reading.fields, entry)


def test_gas_from_the_channel_with_a_real_reading() -> None:
    frame = _frames("iskra_am550_dsmr5.0_3.txt")[0]
    r = DsmrDecoder(TZ).decode(frame, datetime.now(UTC), 1)
    assert r.fields["total_gas_consumption"] == 246.138  # channel 2; channel 1 is an empty slot
    assert r.gas_time == datetime(2020, 4, 26, 22, 30, 1, tzinfo=TZ)
    assert r.values["0-1:24.2.1"].timestamp is None  # 700101010000W: the epoch, no date


def test_only_empty_slots_give_no_gas_field() -> None:
    body = (b"/X\r\n\r\n0-1:24.1.0(003)\r\n0-1:24.2.1(700101010000W)(00000000)\r\n"
            b"0-2:24.1.0(003)\r\n0-2:24.2.1(632525252525S)(00000.000)\r\n!\r\n")
    r = parse_telegram(body, datetime.now(UTC), TZ)
    assert "total_gas_consumption" not in r.fields and r.gas_time is None


def test_water_and_heat_meters_get_named_fields() -> None:
    r = DsmrDecoder(TZ).decode(_frames("nwa_warmtelink_dsmr5.0_1.txt")[0], datetime.now(UTC), 1)
    assert r.fields == {"total_heat_consumption": 240.86}
    f = DsmrDecoder(TZ).decode(_frames("fluvius_be_p1v50217_1.txt")[0], datetime.now(UTC), 1).fields
    assert f["total_water_consumption"] == 8.579 and f["total_gas_consumption"] == 92.287
    kwh = parse_telegram(b"/X\r\n\r\n0-3:24.1.0(004)\r\n0-3:24.2.1(260215200523W)(1000.0*kWh)\r\n!\r\n",
                         datetime.now(UTC), TZ)
    assert kwh.fields["total_heat_consumption"] == pytest.approx(3.6)


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


# ---------------------------------------------------------------- text variants peers accept

_UNITS = ("kWh", "kW", "V", "A", "m3", "GJ", "kvarh", "s", "Wh")


def _telegram(*lines: str) -> bytes:
    return ("/X\r\n\r\n" + "".join(f"{line}\r\n" for line in lines) + "!\r\n").encode()


def test_lower_case_dst_flags() -> None:
    s = parse_telegram(_telegram("0-0:1.0.0(231029023000s)"), datetime.now(UTC), TZ)
    w = parse_telegram(_telegram("0-0:1.0.0(231029023000w)"), datetime.now(UTC), TZ)
    assert s.meter_time is not None and w.meter_time is not None
    assert (w.meter_time - s.meter_time).total_seconds() == 3600
    gas = parse_telegram(_telegram("0-1:24.1.0(003)", "0-1:24.2.1(231029023000w)(00012.345*m3)"),
                         datetime.now(UTC), TZ)
    assert gas.gas_time == w.meter_time


def test_unit_without_star() -> None:
    r = parse_telegram(_telegram("1-0:1.8.1(001247.747kWh)", "1-0:32.7.0(230.1V)",
                                 "0-1:24.1.0(003)", "0-1:24.2.1(231102121002W)(00092.287m3)"),
                       datetime.now(UTC), TZ)
    assert r.values["1-0:1.8.1"] == Value(1247.747, "kWh")
    assert r.fields["total_consumption_day"] == 1247.747 and r.fields["l1_voltage"] == 230.1
    assert r.fields["total_gas_consumption"] == 92.287


def test_obis_with_a_fifth_group_is_kept() -> None:
    r = parse_telegram(_telegram("1-0:31.7.0.255(001*A)", "1-0:1.8.1.255(000100.000*kWh)", "1-0:99.1.0.101(7)"),
                       datetime.now(UTC), TZ)
    assert r.values["1-0:31.7.0"] == Value(1, "A") and r.fields["l1_current"] == 1.0
    assert r.fields["total_consumption_day"] == 100.0
    assert r.values["1-0:99.1.0*101"].value == 7


@given(st.datetimes(min_value=datetime(2001, 1, 1), max_value=datetime(2069, 12, 31)), st.sampled_from("SW"))
def test_dst_flag_case_never_matters(when: datetime, flag: str) -> None:
    text = when.strftime("%y%m%d%H%M%S")
    from app.protocols.dsmr import parse_timestamp

    assert parse_timestamp(text + flag.lower(), TZ) == parse_timestamp(text + flag, TZ) is not None


@given(st.decimals(min_value=0, max_value=999999, places=3, allow_nan=False), st.sampled_from(_UNITS),
       st.sampled_from(["1-0:1.8.1", "1-0:21.7.0", "1-0:32.7.0", "0-0:96.7.21"]), st.sampled_from(["", ".255"]))
def test_unit_and_fifth_group_variants_parse_like_the_standard_form(
    number: Any, unit: str, ref: str, fifth: str
) -> None:
    text = f"{number:010.3f}"
    standard = parse_telegram(_telegram(f"{ref}({text}*{unit})"), datetime.now(UTC), TZ)
    variant = parse_telegram(_telegram(f"{ref}{fifth}({text}{unit})"), datetime.now(UTC), TZ)
    assert variant.values == standard.values and variant.fields == standard.fields


_SLOT = st.sampled_from(["(700101010000W)(00000000)", "(632525252525S)(00000.000)", "(000101000000W)(00000.000)"])


@given(st.lists(st.one_of(_SLOT.map(lambda s: ("empty", s)),
                          st.tuples(st.sampled_from([3, 7, 4]), st.decimals(1, 99999, places=3))),
                min_size=1, max_size=4))
def test_mbus_fields_come_from_the_first_real_channel_of_their_kind(channels: list[Any]) -> None:
    units = {3: "m3", 7: "m3", 4: "GJ"}
    names = {3: "total_gas_consumption", 7: "total_water_consumption", 4: "total_heat_consumption"}
    lines, expected = [], {}
    for n, slot in enumerate(channels, 1):
        if slot[0] == "empty":
            lines += [f"0-{n}:24.1.0(003)", f"0-{n}:24.2.1{slot[1]}"]
        else:
            dtype, value = slot
            lines += [f"0-{n}:24.1.0({dtype:03d})", f"0-{n}:24.2.1(231102121002W)({value:09.3f}*{units[dtype]})"]
            expected.setdefault(names[dtype], float(value))
    r = parse_telegram(_telegram(*lines), datetime.now(UTC), TZ)
    assert r.fields == expected
    assert (r.gas_time is not None) == ("total_gas_consumption" in expected)
