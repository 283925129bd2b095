"""DLMS `auto` profiles: detection by list shape and content, the P ≈ U × I check, the log line,
unmatched lists, and the Slovenian AM550 and Netz Burgenland E450 lists (captures in tests/data/dlms)."""

from __future__ import annotations

import json
import logging
import re
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.framing import Frame
from app.framing.auto import make_framer
from app.protocols import cosem_profiles
from app.protocols.dlms import DlmsDecoder, _power_check
from app.records import Reading, Value
from tests.conftest import ROOT

DATA = Path(__file__).parent / "data" / "dlms"
RECEIVED = datetime(2026, 6, 9, 14, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Vienna")
BGLD_EK = bytes.fromhex("34743677397A24432646294A404E6352")
BGLD_AK = bytes.fromhex("C0C1C2C3C4C5C6C7C8C9CACBCCCDCECF")
LOG = "app.protocols.dlms"


def frame_of(name: str) -> Frame:
    """The one good frame of a capture in tests/data/dlms."""
    data = bytes.fromhex(re.sub(r"[^0-9A-Fa-f]", "", (DATA / name).read_text()))
    framer = make_framer("dlms", 1 << 16)
    frames = framer.feed(data) + framer.flush()
    assert len(frames) == 1 and frames[0].ok, [f.reason for f in frames]
    return frames[0]


def decode(name: str, profile: str = "auto", key: bytes | None = None, auth: bytes | None = None) -> Reading:
    return DlmsDecoder(key, auth, profile, TZ).decode(frame_of(name), RECEIVED)


# ---------------------------------------------------------------- building push APDUs


def _ln(obis: str) -> bytes:
    a, b, c, d, e = (int(x) for x in re.split(r"[-:.]", obis))
    return bytes([a, b, c, d, e, 255])


def _u16(v: int) -> bytes:
    return b"\x12" + struct.pack(">H", v)


def _u32(v: int) -> bytes:
    return b"\x06" + struct.pack(">I", v)


def _octets(raw: bytes) -> bytes:
    return b"\x09" + bytes([len(raw)]) + raw


def push_list_apdu(objects: list[tuple[int, str, bytes]], setup: str = "0-8:25.9.0") -> bytes:
    """A data-notification whose body opens with the push-object-list (L+G / VSE style): the push
    setup's attribute 2 (the list itself), its attribute 1 (logical name), then the objects."""
    capture = [(40, setup, 2, b""), (40, setup, 1, _octets(_ln(setup))), *((c, o, 2, v) for c, o, v in objects)]
    body = b"\x01" + bytes([len(capture)])
    for cls, obis, attr, _ in capture:
        body += b"\x02\x04\x12" + struct.pack(">H", cls) + _octets(_ln(obis)) + b"\x0f" + bytes([attr])
        body += b"\x12\x00\x00"
    body += b"".join(value for _, _, _, value in capture)
    return b"\x0f\x00\x00\x00\x01\x00\x02" + bytes([len(capture)]) + body


def positional_apdu(values: list[bytes]) -> bytes:
    """A data-notification whose body is a bare structure of values (no OBIS codes)."""
    return b"\x0f\x00\x00\x00\x01\x00\x02" + bytes([len(values)]) + b"".join(values)


def _e450_objects(meter: tuple[str, bytes] | None, u: int, i: int, p: int) -> list[tuple[int, str, bytes]]:
    objects = [] if meter is None else [(1, meter[0], _octets(meter[1]))]
    return [
        *objects,
        (3, "1-1:1.8.0", _u32(482939)), (3, "1-1:2.8.0", _u32(0)),
        (3, "1-0:1.7.0", _u32(p)), (3, "1-0:2.7.0", _u32(0)),
        (3, "1-0:32.7.0", _u16(u)), (3, "1-0:52.7.0", _u16(u)), (3, "1-0:72.7.0", _u16(u)),
        (3, "1-0:31.7.0", _u16(i)), (3, "1-0:51.7.0", _u16(0)), (3, "1-0:71.7.0", _u16(0)),
    ]


def _raw(apdu: bytes) -> Frame:
    return Frame("apdu", apdu, link="raw")


# ---------------------------------------------------------------- L+G E450 / E570 detection


def test_e450_with_only_a_meter_number_is_recognised() -> None:
    """Regionalwerke Baden style: 0-0:96.1.0 but no LGZ logical device name, unencrypted."""
    apdu = push_list_apdu(_e450_objects(("0-0:96.1.0", b"71909113"), 230, 523, 1100))
    r = DlmsDecoder(None, None, "auto", TZ).decode(_raw(apdu), RECEIVED)
    assert r.header == "lg_e450"
    assert r.fields["l1_current"] == pytest.approx(5.23)  # not 523 A
    assert r.meter_id == "71909113"


def test_e570_vse2026_list_is_not_taken_for_an_e450() -> None:
    r = decode("lg_e570_vse2026_load.hex")
    assert r.header == "lg_e570"
    # smartmeter-datacollector's own test of this capture: I 400/200/601 A, P 258874 W
    assert (r.fields["l1_current"], r.fields["l2_current"], r.fields["l3_current"]) == (400, 200, 601)
    assert r.fields["actual_total_consumption"] == pytest.approx(258.874)
    assert r.meter_id == "LGZ1030769231250"


def test_the_power_check_overrules_the_list_shape() -> None:
    """No meter number, no clock: the shape says E570, but P ≈ U × I only holds with E450 scaling."""
    apdu = push_list_apdu([(1, "0-0:42.0.0", _octets(b"LGZ1030653520967")), *_e450_objects(None, 236, 9, 28)])
    r = DlmsDecoder(None, None, "auto", TZ).decode(_raw(apdu), RECEIVED)
    assert r.header == "lg_e450" and r.fields["l1_current"] == pytest.approx(0.09)


def test_the_choice_and_why_is_logged_once_per_list(caplog: pytest.LogCaptureFixture) -> None:
    decoder = DlmsDecoder(None, None, "auto", TZ)
    frame = frame_of("lg_e570_vse2026_load.hex")
    with caplog.at_level(logging.INFO, logger=LOG):
        for _ in range(3):
            decoder.decode(frame, RECEIVED)
    lines = [r.getMessage() for r in caplog.records if "profile" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "profile lg_e570" in lines[0] and "push setup 0-8:25.9.0" in lines[0]
    assert "P 258874 W ≈ U×I 275229 VA" in lines[0]
    assert caplog.records[0].levelno == logging.INFO


def test_a_push_list_without_a_fitting_profile_warns_and_keeps_values() -> None:
    apdu = push_list_apdu([(3, "1-0:1.7.0", _u32(1234))], setup="0-11:25.9.0")
    decoder = DlmsDecoder(None, None, "auto", TZ)
    logger = logging.getLogger(LOG)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    try:
        r = decoder.decode(_raw(apdu), RECEIVED)
        decoder.decode(_raw(apdu), RECEIVED)
    finally:
        logger.removeHandler(handler)
    assert r.values["1-0:1.7.0"] == Value(1234, "W")
    warnings = [x.getMessage() for x in records if x.levelno == logging.WARNING]
    assert len(warnings) == 1 and "matches no profile" in warnings[0] and "--profile" in warnings[0]


# ---------------------------------------------------------------- unmatched positional lists


def test_unmatched_list_warns_rate_limited_naming_its_shape(caplog: pytest.LogCaptureFixture) -> None:
    decoder = DlmsDecoder(None, None, "auto", TZ)
    frame = frame_of("iskra_si_ljubljana_ed121_9_unmatched.hex")
    with caplog.at_level(logging.INFO, logger=LOG):
        readings = [decoder.decode(frame, RECEIVED) for _ in range(3)]
    assert all(not r.fields for r in readings)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "matches no profile (9 values: text×2, int×7)" in warnings[0]
    assert "--profile" in warnings[0] and "iskra_si_ljubljana" in warnings[0]


def test_decode_tool_says_when_no_profile_matches(tmp_path: Path) -> None:
    path = tmp_path / "unmatched.bin"
    path.write_bytes(bytes.fromhex(re.sub(r"[^0-9A-Fa-f]", "", (DATA / "iskra_si_ljubljana_ed121_9_unmatched.hex")
                                          .read_text())))
    out = subprocess.run([sys.executable, str(ROOT / "app" / "main.py"), "--decode", str(path), "--protocol", "dlms"],
                         capture_output=True, text=True, timeout=60)
    assert "matches no profile (9 values: text×2, int×7)" in out.stderr and "--profile" in out.stderr
    assert json.loads(out.stdout.splitlines()[0])["fields"] == {}


def test_decode_in_process_says_it_once_per_run_and_leaves_logging_as_it_was(tmp_path: Path, capsys: Any) -> None:
    from app import config
    from app.decode import decode_file

    path = tmp_path / "unmatched.bin"
    path.write_bytes(bytes.fromhex(re.sub(r"[^0-9A-Fa-f]", "", (DATA / "iskra_si_ljubljana_ed121_9_unmatched.hex")
                                          .read_text())))
    logger = logging.getLogger("app.protocols")
    handlers, level = list(logger.handlers), logger.level
    cfg = config.loads("[meter]\nprotocol = dlms\n")
    for _ in range(3):
        decode_file(str(path), cfg)
        assert capsys.readouterr().err.count("matches no profile (9 values") == 1
    assert logger.handlers == handlers and logger.level == level


def test_decode_tool_says_which_profile_it_chose(tmp_path: Path) -> None:
    path = tmp_path / "e570.bin"
    path.write_bytes(bytes.fromhex(re.sub(r"[^0-9A-Fa-f]", "", (DATA / "lg_e570_vse2026_load.hex").read_text())))
    out = subprocess.run([sys.executable, str(ROOT / "app" / "main.py"), "--decode", str(path), "--protocol", "dlms"],
                         capture_output=True, text=True, timeout=60, check=True)
    assert "profile lg_e570" in out.stderr
    assert json.loads(out.stdout.splitlines()[0])["fields"]["l1_current"] == 400


def test_forced_profile_that_does_not_fit_warns() -> None:
    r = decode("iskra_si_celje_12.hex", "self_describing")
    assert r.fields == {}


# ---------------------------------------------------------------- Slovenian AM550


def test_elektro_ljubljana_18_values() -> None:
    for name in ("iskra_si_ljubljana_18.hex", "iskra_si_ljubljana_18_2.hex"):
        assert decode(name).header == "iskra_si_ljubljana"
    r = decode("iskra_si_ljubljana_18.hex")
    assert r.meter_id == "ISK1030789375606"
    assert r.meter_time == datetime(2023, 7, 24, 19, 40, 25, tzinfo=TZ)
    f = r.fields
    assert f["actual_total_consumption"] == pytest.approx(1.393) and f["actual_total_injection"] == 0
    assert (f["l1_voltage"], f["l2_voltage"], f["l3_voltage"]) == pytest.approx((237.9, 237.9, 229.6))
    assert (f["l1_current"], f["l2_current"], f["l3_current"]) == pytest.approx((1.03, 1.25, 5.97))
    assert f["actual_l3_consumption"] == pytest.approx(1.325)
    assert r.values["1-0:4.7.0"] == Value(738, "var")
    # the phases add up to the total, a check the layout must pass
    assert sum(f[f"actual_l{n}_consumption"] for n in (1, 2, 3)) == pytest.approx(1.392)


def test_elektro_ljubljana_12_value_energy_list() -> None:
    r = decode("iskra_si_ljubljana_12.hex")
    assert r.header == "iskra_si_ljubljana" and r.meter_id == "ISK1030789375606"
    f = r.fields
    assert f["total_consumption"] == pytest.approx(52.837)
    assert f["total_consumption_day"] + f["total_consumption_night"] == pytest.approx(f["total_consumption"])
    assert f["total_injection"] == pytest.approx(177.927)
    assert r.values["1-0:3.8.0"] == Value(107882, "varh")


def test_elektro_celje_12_values() -> None:
    r = decode("iskra_si_celje_12.hex")
    assert r.header == "iskra_si_celje" and r.meter_id == "ISK1030789014731"
    f = r.fields
    assert (f["l1_voltage"], f["l2_voltage"], f["l3_voltage"]) == pytest.approx((231.4, 230.3, 234.8))
    assert (f["l1_current"], f["l2_current"], f["l3_current"]) == pytest.approx((4.51, 5.25, 0.88))
    assert f["actual_total_consumption"] == pytest.approx(2.399)
    assert _power_check(r.values)[0] == "ok"


# ---------------------------------------------------------------- Netz Burgenland E450


def test_netz_burgenland_14_values_encrypted_and_authenticated() -> None:
    r = decode("lg_e450_burgenland_14_1.hex", key=BGLD_EK, auth=BGLD_AK)
    assert r.header == "lg_e450_burgenland" and r.meter_id == "30137181"
    assert r.crc_ok is True  # GCM tag verified with the published AK
    f = r.fields
    assert (f["l1_voltage"], f["l2_voltage"], f["l3_voltage"]) == (236, 237, 236)
    assert (f["l1_current"], f["l2_current"], f["l3_current"]) == pytest.approx((0.0, 0.04, 0.26))
    assert f["actual_total_consumption"] == pytest.approx(0.029)
    assert f["total_consumption"] == pytest.approx(31358.606) and f["total_injection"] == pytest.approx(7.619)
    r2 = decode("lg_e450_burgenland_14_2.hex", key=BGLD_EK, auth=BGLD_AK)
    assert r2.meter_time is not None and r.meter_time is not None and r2.meter_time > r.meter_time


def test_netz_burgenland_11_values() -> None:
    """The 11-value list as the decrypted body in Tasmota issue #23027 shows it."""
    values = [_u16(228), _u16(226), _u16(230), _u16(781), _u16(1482), _u16(643),
              _u32(5432), _u32(0), _u32(40091000), _u32(0), _octets(b"30052002")]
    r = DlmsDecoder(None, None, "auto", TZ).decode(_raw(positional_apdu(values)), RECEIVED)
    assert r.header == "lg_e450_burgenland" and r.meter_id == "30052002"
    assert r.fields["l2_current"] == pytest.approx(14.82) and r.fields["actual_total_consumption"] == 5.432
    assert _power_check(r.values)[0] == "ok"  # 5432 W of 6470 VA


# ---------------------------------------------------------------- properties


@given(st.floats(200, 250), st.floats(0.5, 60), st.floats(0.3, 1.0), st.integers(1, 3))
def test_power_check_tells_currents_off_by_100(u: float, i: float, pf: float, phases: int) -> None:
    def values(scale: float) -> dict[str, Value]:
        out = {"1-0:1.7.0": Value(round(u * i * pf * phases), "W")}
        for n, (uc, ic) in enumerate((("32.7.0", "31.7.0"), ("52.7.0", "51.7.0"), ("72.7.0", "71.7.0"))):
            if n < phases:
                out[f"1-0:{uc}"] = Value(round(u), "V")
                out[f"1-0:{ic}"] = Value(round(i * 100) / 100 * scale, "A")
        return out

    assert _power_check(values(1.0))[0] == "ok"
    assert _power_check(values(100.0))[0] == "bad"
    if u * i * phases >= 100:
        assert _power_check(values(0.01))[0] == "bad"


_ELEMENTS = st.one_of(st.integers(0, 2**32 - 1).map(_u32), st.integers(0, 65535).map(_u16),
                      st.binary(min_size=0, max_size=20).map(_octets),
                      st.text("ABCKLGZIS0123456789", min_size=1, max_size=16).map(lambda t: _octets(t.encode())))


@given(st.lists(_ELEMENTS, min_size=1, max_size=30))
def test_any_positional_list_decodes_or_warns_never_raises(elements: list[bytes]) -> None:
    decoder = DlmsDecoder(None, None, "auto", TZ)
    r = decoder.decode(_raw(positional_apdu(elements)), RECEIVED)
    assert r.header in cosem_profiles.BY_NAME
    for v in r.values.values():
        assert isinstance(v, Value)


def test_profile_choices_stay_bounded_whatever_shapes_a_stream_shows() -> None:
    from app.protocols.dlms import MAX_SHAPES

    decoder = DlmsDecoder(tz=ZoneInfo("Europe/Brussels"))
    for i in range(5 * MAX_SHAPES):  # a corrupt stream: a new list shape (or device name) every frame
        decoder._remember(("list", f"shape {i}", None), cosem_profiles.GENERIC)
    assert 0 < len(decoder._chosen) <= MAX_SHAPES  # was: one entry per shape, for ever
