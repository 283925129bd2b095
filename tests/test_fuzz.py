"""Fuzz targets, one per framer and protocol: garbage and mutated real frames never crash anything.

`make test` runs each target briefly; `make fuzz` runs them longer (FUZZ_EXAMPLES; 250 each by default).
Framers must never raise, must stay within max_frame, and must be fed linearly; parsers may only
raise their ProtocolError; the readings they return are well-formed.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import ProtocolError
from app.framing import Frame
from app.framing.auto import AutoFramer
from app.framing.dsmr import DsmrFramer
from app.framing.hdlc import HdlcFramer
from app.framing.mbus import MbusFramer
from app.framing.raw import RawApduFramer
from app.protocols import axdr
from app.protocols.dlms import DlmsDecoder
from app.protocols.dsmr import parse_telegram
from app.records import Reading
from tests.conftest import FIXTURES

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "250"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
RECEIVED = datetime(2026, 1, 1, tzinfo=UTC)
TZ = ZoneInfo("Europe/Brussels")
MAX_FRAME = 2048

DSMR_SAMPLES = [p.read_bytes() for p in sorted((FIXTURES / "dsmr").glob("*.txt"))][:12]
DLMS_SAMPLES = {p.name: p.read_bytes() for p in sorted((FIXTURES / "dlms").glob("*.bin"))}
HDLC_SAMPLES = [v for k, v in DLMS_SAMPLES.items() if "_hdlc_" in k]
MBUS_SAMPLES = [v for k, v in DLMS_SAMPLES.items() if "_mbus_" in k]
RAW_SAMPLES = [v for k, v in DLMS_SAMPLES.items() if "rawapdu" in k]
ALL_SAMPLES = DSMR_SAMPLES + list(DLMS_SAMPLES.values())


@st.composite
def mutated(draw: st.DrawFn, samples: list[bytes]) -> bytes:
    """A real capture with a few bytes flipped, swapped, cut, repeated or inserted; or plain garbage."""
    if not samples or draw(st.integers(0, 9)) == 0:
        return draw(st.binary(max_size=3000))
    data = bytearray(draw(st.sampled_from(samples)))
    for _ in range(draw(st.integers(0, 4))):
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "swap", "cut", "dup", "insert", "set"]))
        if op == "flip":
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "swap" and i + 1 < len(data):
            data[i], data[i + 1] = data[i + 1], data[i]
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 64))]
        elif op == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        else:
            data[i] = draw(st.integers(0, 255))
    return bytes(data)


def _run_framer(framer: object, data: bytes, chunk: int) -> list[Frame]:
    out: list[Frame] = []
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        out += framer.feed(data[i : i + step])  # type: ignore[attr-defined]
        buf = getattr(framer, "_buf", b"")
        assert len(buf) <= MAX_FRAME + 4096  # bounded whatever comes in
    out += framer.flush()  # type: ignore[attr-defined]
    assert all(isinstance(f, Frame) and (f.ok or f.reason) for f in out)
    return out


def _check_reading(r: Reading) -> None:
    assert isinstance(r, Reading) and isinstance(r.values, dict) and isinstance(r.fields, dict)
    assert all(isinstance(v, float) for v in r.fields.values())


@FUZZ
@given(mutated(DSMR_SAMPLES), st.integers(0, 300))
def test_fuzz_dsmr_framer_and_parser(data: bytes, chunk: int) -> None:
    for frame in _run_framer(DsmrFramer(MAX_FRAME * 8), data, chunk):
        if frame.ok:
            try:
                _check_reading(parse_telegram(frame.data, RECEIVED, TZ, 1, frame.crc_ok))
            except ProtocolError:
                pass


@FUZZ
@given(mutated(HDLC_SAMPLES), st.integers(0, 300))
def test_fuzz_hdlc(data: bytes, chunk: int) -> None:
    _run_framer(HdlcFramer(MAX_FRAME), data, chunk)


@FUZZ
@given(mutated(MBUS_SAMPLES), st.integers(0, 300))
def test_fuzz_mbus(data: bytes, chunk: int) -> None:
    _run_framer(MbusFramer(MAX_FRAME), data, chunk)


@FUZZ
@given(mutated(RAW_SAMPLES + [b"\x0f\x00\x00\x00\x01\x00\x02\x02\x09\x02ab\x06\x00\x00\x01\x00"]),
       st.integers(0, 300))
def test_fuzz_raw_apdu(data: bytes, chunk: int) -> None:
    _run_framer(RawApduFramer(MAX_FRAME), data, chunk)


@FUZZ
@given(st.lists(mutated(ALL_SAMPLES), min_size=1, max_size=4), st.integers(0, 300))
def test_fuzz_auto(pieces: list[bytes], chunk: int) -> None:
    _run_framer(AutoFramer(MAX_FRAME * 8), b"".join(pieces), chunk)


@FUZZ
@given(st.binary(max_size=400) | mutated([b"\x02\x03\x09\x06\x01\x00\x01\x08\x00\xff\x06\x00\x00\x12\x34"
                                          b"\x02\x02\x0f\xfd\x16\x1e"]))
def test_fuzz_axdr(data: bytes) -> None:
    try:
        axdr.decode_all(data)
    except ProtocolError:
        pass


KEYS = {"kaifa_ma309_netznoe_mbus_1.bin": "36C66639E48A8CA4D6BC8B282A793BBB"}


@FUZZ
@given(mutated(list(DLMS_SAMPLES.values())), st.sampled_from(["auto", "hdlc", "mbus"]))
def test_fuzz_dlms_decode(data: bytes, key_for: str) -> None:
    key = bytes.fromhex(KEYS["kaifa_ma309_netznoe_mbus_1.bin"]) if key_for == "mbus" else None
    decoder = DlmsDecoder(key, None, "auto", TZ)
    for frame in _run_framer(AutoFramer(MAX_FRAME * 8, allow_dsmr=False), data, 0):
        if not frame.ok:
            continue
        try:
            _check_reading(decoder.decode(frame, RECEIVED))
        except ProtocolError:
            pass
        try:  # the decoder also on the raw bytes, whatever they are
            decoder.decode(Frame("apdu", data[:2000], True, "", "raw"), RECEIVED)
        except ProtocolError:
            pass
