"""HDLC, M-Bus and raw-APDU frame readers and the protocol sniffer, on the real captures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.framing import Frame
from app.framing.auto import AutoFramer, make_framer
from app.framing.dsmr import DsmrFramer
from app.framing.hdlc import HdlcFramer, crc16_x25
from app.framing.mbus import MbusFramer
from app.framing.raw import RawApduFramer
from tests.conftest import FIXTURES, manifest

DLMS = FIXTURES / "dlms"
_MANIFEST = DLMS / "MANIFEST.json"
ENTRIES: list[dict[str, Any]] = json.loads(_MANIFEST.read_text()) if _MANIFEST.exists() else []
FRAMERS = {"hdlc": HdlcFramer, "mbus": MbusFramer, "raw-apdu": RawApduFramer}
LUX = FIXTURES / "dsmr" / "sagemcom_lu-smarty-encrypted_dsmr4.2_1.bin"


# ---------------------------------------------------------------- builders (also used by the properties)


def hdlc_frame(info: bytes, segment: bool = False, dst: bytes = b"\x41", src: bytes = b"\x08\x83",
               ctrl: int = 0x13) -> bytes:
    """One HDLC frame with flags, HCS and FCS around `info`."""
    length = 2 + len(dst) + len(src) + 1 + 2 + len(info) + 2
    head = bytes([0xA8 if segment else 0xA0 | (length >> 8), length & 0xFF]) + dst + src + bytes([ctrl])
    if segment:
        head = bytes([0xA8 | (length >> 8), length & 0xFF]) + head[2:]
    hcs = crc16_x25(head)
    body = head + hcs.to_bytes(2, "little") + info
    return b"\x7e" + body + crc16_x25(body).to_bytes(2, "little") + b"\x7e"


def hdlc_message(apdu: bytes, segment_size: int = 0) -> bytes:
    """An APDU with LLC header, split into HDLC segments of `segment_size` bytes (0: one frame)."""
    info = b"\xe6\xe7\x00" + apdu
    if segment_size <= 0 or len(info) <= segment_size:
        return hdlc_frame(info)
    parts = [info[i : i + segment_size] for i in range(0, len(info), segment_size)]
    return b"".join(hdlc_frame(p, segment=i < len(parts) - 1) for i, p in enumerate(parts))


def mbus_frame(data: bytes, ci: int, c: int = 0x53, a: int = 0xFF) -> bytes:
    """One M-Bus long frame carrying a DLMS transport segment."""
    user = bytes([c, a, ci, 0x01, 0x67]) + data
    return bytes([0x68, len(user), len(user), 0x68]) + user + bytes([sum(user) & 0xFF, 0x16])


def mbus_message(apdu: bytes, segment_size: int = 200) -> list[bytes]:
    """An APDU split into M-Bus segments (CI 0x00, 0x01, ... with 0x10 on the last)."""
    parts = [apdu[i : i + segment_size] for i in range(0, len(apdu), segment_size)] or [b""]
    return [mbus_frame(p, (i & 0x0F) | (0x10 if i == len(parts) - 1 else 0)) for i, p in enumerate(parts)]


def feed_all(framer: Any, data: bytes, chunk: int = 0) -> list[Frame]:
    """Feed `data` in chunks of `chunk` bytes (0: at once), then flush."""
    out: list[Frame] = []
    if chunk <= 0:
        out += framer.feed(data)
    else:
        for i in range(0, len(data), chunk):
            out += framer.feed(data[i : i + chunk])
    return out + framer.flush()


def fixture_bytes(name: str) -> bytes:
    """Bytes of one DLMS fixture file."""
    return (DLMS / name).read_bytes()


# ---------------------------------------------------------------- every capture


def test_manifest_present() -> None:
    assert len(manifest("dlms")) == 22


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
@pytest.mark.parametrize("chunk", [0, 1, 7, 64])
def test_each_capture_gives_one_good_apdu(entry: dict[str, Any], chunk: int) -> None:
    framer = FRAMERS[entry["framing"]]()
    frames = feed_all(framer, fixture_bytes(entry["file"]), chunk)
    assert [f.ok for f in frames] == [True], [f.reason for f in frames]
    apdu = frames[0].data
    assert frames[0].kind == "apdu"
    assert apdu[0] == (0xDB if entry["encrypted"] else 0x0F)
    if entry["system_title_hex"]:
        assert apdu[2:10].hex().upper() == entry["system_title_hex"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_auto_framer_finds_each_capture(entry: dict[str, Any]) -> None:
    data = fixture_bytes(entry["file"])
    direct = feed_all(FRAMERS[entry["framing"]](), data)
    auto = AutoFramer()
    frames = feed_all(auto, b"\x00\x13junk" + data + data, 5)
    assert [f.data for f in frames if f.ok] == [direct[0].data] * 2
    assert {"hdlc": "hdlc", "mbus": "mbus", "raw-apdu": "raw"}[entry["framing"]] == frames[0].link


# ---------------------------------------------------------------- HDLC


def test_inner_flags_do_not_split_frames() -> None:
    with_flags = [e for e in ENTRIES if (e["inner_0x7E_bytes"] or 0) > 0]
    assert len(with_flags) >= 5
    for e in with_flags:
        frames = feed_all(HdlcFramer(), fixture_bytes(e["file"]))
        assert [f.ok for f in frames] == [True], e["file"]


def test_hdlc_segmentation_bit_reassembly() -> None:
    data = fixture_bytes("iskraemeco_am550_ch_hdlc_1.bin")
    assert data[1] == 0xA8  # S bit on the first segment
    frames = feed_all(HdlcFramer(), data)
    assert len(frames) == 1 and frames[0].ok and frames[0].data[0] == 0x0F


def test_general_block_transfer_reassembly() -> None:
    frames = feed_all(HdlcFramer(), fixture_bytes("landisgyr_e450_ch_hdlc_1.bin"))
    assert len(frames) == 1 and frames[0].ok
    assert frames[0].data[:5] == bytes.fromhex("0F00D7DD82")


def test_two_byte_source_address() -> None:
    frames = feed_all(HdlcFramer(), fixture_bytes("kaifa_ma304h4_no_hdlc_1.bin"))
    apdu = bytes.fromhex("0F40000000090C07E80A0102130002FF800000020106000013C1")
    assert frames[0].ok and frames[0].data == apdu


def test_shared_flag_between_frames() -> None:
    one = hdlc_message(b"\x0f\x00\x00\x00\x01\x00\x11\x05")
    two = hdlc_message(b"\x0f\x00\x00\x00\x02\x00\x11\x06")
    frames = feed_all(HdlcFramer(), one + two[1:])  # the closing flag opens the next frame
    assert [f.data[-1] for f in frames if f.ok] == [5, 6]


def test_bad_fcs_is_rejected_and_next_frame_survives() -> None:
    good = hdlc_message(b"\x0f\x00\x00\x00\x01\x00\x11\x05")
    bad = bytearray(good)
    bad[-4] ^= 0x01  # last information byte
    frames = feed_all(HdlcFramer(), bytes(bad) + good)
    assert [f.ok for f in frames] == [False, True]
    assert frames[0].reason.startswith("FCS mismatch: calculated")


def test_bad_hcs_is_rejected() -> None:
    good = hdlc_message(b"\x0f\x00\x00\x00\x01\x00\x11\x05")
    bad = bytearray(good)
    bad[4] ^= 0x04  # source address byte, covered by HCS
    frames = feed_all(HdlcFramer(), bytes(bad))
    assert not any(f.ok for f in frames)
    assert any("HCS mismatch" in f.reason for f in frames)


def test_lost_segment_drops_the_message() -> None:
    apdu = b"\x0f\x00\x00\x00\x01\x00\x09\x81\x96" + bytes(150)
    data = hdlc_message(apdu, 60)
    frames_all = feed_all(HdlcFramer(), data)
    assert [f.data for f in frames_all if f.ok] == [apdu]
    second = data.index(b"\x7e\xa8", 1)
    third = data.index(b"\x7e", second + 2)
    third = data.index(b"\x7e", third + 1) if data[third + 1] == 0x7E else third
    broken = bytearray(data)
    broken[second + 10] ^= 0xFF
    frames = feed_all(HdlcFramer(), bytes(broken))
    assert not any(f.ok and f.data == apdu for f in frames)
    assert any(not f.ok for f in frames)


def test_max_frame_caps_the_buffer() -> None:
    framer = HdlcFramer(max_frame=64)
    frames = feed_all(framer, hdlc_message(bytes(100)))
    assert not any(f.ok for f in frames)
    assert any("exceeds max_frame" in f.reason for f in frames)


def test_garbage_only_gives_nothing() -> None:
    framer = HdlcFramer()
    assert framer.feed(bytes(range(256)) * 4) == []
    assert framer.skipped > 900


# ---------------------------------------------------------------- M-Bus


def test_mbus_segments_in_separate_reads() -> None:
    data = fixture_bytes("kaifa_ma309_netznoe_mbus_1.bin")
    first_len = data[1] + 6
    framer = MbusFramer()
    assert framer.feed(data[:first_len]) == []  # first segment: CI 0x00, waits ~160 ms for the next
    frames = framer.feed(data[first_len:])
    assert len(frames) == 1 and frames[0].ok and frames[0].link == "mbus"
    assert frames[0].data[:2] == b"\xdb\x08"


def test_mbus_checksum_mismatch_rejected() -> None:
    data = bytearray(fixture_bytes("kaifa_ma309_tinetz_mbus_1.bin"))
    data[20] ^= 0x10
    frames = feed_all(MbusFramer(), bytes(data))
    assert not any(f.ok for f in frames)
    assert frames[0].reason.startswith("M-Bus checksum mismatch: calculated")


def test_mbus_out_of_sequence_segment() -> None:
    segs = mbus_message(bytes(range(250)) * 2, 200)
    frames = feed_all(MbusFramer(), segs[0] + segs[2])
    assert not any(f.ok for f in frames)
    assert "out of sequence" in frames[0].reason


def test_mbus_single_segment_and_ack_bytes_skipped() -> None:
    apdu = b"\x0f\x00\x00\x00\x01\x00\x11\x05"
    frames = feed_all(MbusFramer(), b"\xe5\x10\x40\x01\x41\x16" + mbus_frame(apdu, 0x10))
    assert [f.data for f in frames] == [apdu]


def test_mbus_non_dlms_ci_is_flagged() -> None:
    frames = feed_all(MbusFramer(), mbus_frame(b"\x00" * 8, 0x72))
    assert len(frames) == 1 and not frames[0].ok and "CI 0x72" in frames[0].reason


# ---------------------------------------------------------------- raw APDUs


def test_raw_luxembourg_frame() -> None:
    frames = feed_all(RawApduFramer(), LUX.read_bytes())
    assert len(frames) == 1 and frames[0].ok and len(frames[0].data) == 647


def test_raw_apdus_back_to_back_with_noise() -> None:
    a = fixture_bytes("unknown_unknown_dlmscosem-test_rawapdu_1.bin")
    b = fixture_bytes("sagemcom_t210d_steiermark_rawapdu_1.bin")
    frames = feed_all(RawApduFramer(), b"\x00\x01" + a + b"\xff" + b + a, 3)
    assert [f.data for f in frames if f.ok] == [a, b, a]


def test_raw_bare_data_notification() -> None:
    apdu = bytes.fromhex("0F40000000000203110112000A0A0141")
    frames = feed_all(RawApduFramer(), apdu + apdu, 1)
    assert [f.data for f in frames] == [apdu, apdu]


# ---------------------------------------------------------------- sniffer and factory


def test_auto_framer_dsmr_text() -> None:
    text = (FIXTURES / "dsmr" / "sagemcom_lu-smarty_dsmr4.2_1.txt").read_bytes()
    frames = feed_all(AutoFramer(), b"\x00\x7f" + text + text, 11)
    assert [f.kind for f in frames if f.ok] == ["dsmr", "dsmr"]


def test_auto_recovers_from_a_wrong_guess() -> None:
    # a stray '/ABC' before an HDLC stream: DSMR is tried first, then dropped
    data = fixture_bytes("kamstrup_omnipower_se_hdlc_1.bin")
    auto = AutoFramer(max_frame=1024)
    frames = feed_all(auto, b"/ABCx" + data * 3, 50)
    assert len([f for f in frames if f.ok]) >= 2


def test_make_framer() -> None:
    assert isinstance(make_framer("dsmr", 4096), DsmrFramer)
    dlms = make_framer("dlms", 4096)
    assert isinstance(dlms, AutoFramer) and not dlms.allow_dsmr
    text = (FIXTURES / "dsmr" / "sagemcom_lu-smarty_dsmr4.2_1.txt").read_bytes()
    assert not any(f.ok for f in feed_all(dlms, text))
    assert isinstance(make_framer("auto", 4096), AutoFramer)
    with pytest.raises(ValueError, match="unknown protocol"):
        make_framer("sml", 4096)


def test_fixture_paths_exist() -> None:
    for e in ENTRIES:
        assert Path(DLMS / e["file"]).is_file()
