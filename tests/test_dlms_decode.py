"""DLMS push decoding: every capture to its MANIFEST values, keys, profiles, and peers as oracles."""

from __future__ import annotations

import json
import logging
import pickle
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from app.errors import ChecksumError, ConfigError, DecryptionError, ParseError
from app.framing import Frame
from app.obis import normalize
from app.protocols import axdr, cosem_profiles, security
from app.protocols.dlms import DlmsDecoder
from app.protocols.dsmr import parse_telegram
from tests.conftest import FIXTURES
from tests.test_dlms_framing import ENTRIES, FRAMERS, LUX, feed_all, fixture_bytes
from tests.test_dsmr_fixtures import check_fields

RECEIVED = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
TZ = ZoneInfo("Europe/Vienna")
LUX_KEY = bytes.fromhex("D491470F47126332B07D1923B3504188")
LUX_AUTH = bytes.fromhex("00112233445566778899AABBCCDDEEFF")

# The scaler profile each capture needs when it is forced instead of recognised.
PROFILE = {
    "kaifa_ma309_netznoe_mbus_1.bin": "self_describing",
    "kaifa_ma309_tinetz_mbus_1.bin": "self_describing",
    "landisgyr_e450_ch_hdlc_1.bin": "lg_e450",
    "landisgyr_e450_ch_hdlc_2.bin": "self_describing",
    "landisgyr_e570_ch_hdlc_1.bin": "lg_e570",
    "iskraemeco_am550_ch_hdlc_1.bin": "iskra_am550",
    "landisgyr_e360_ch_hdlc_1.bin": "lg_e360",
    "siemens_im350_at_hdlc_1.bin": "at_im350",
    "siemens_im350_at_hdlc_2.bin": "at_im350",
    "siemens_im350_at_hdlc_3.bin": "at_im350",
    "iskraemeco_am550_at_hdlc_1.bin": "at_im350",
    "sagemcom_t210d_steiermark_rawapdu_1.bin": "at_dsmr",
    "unknown_unknown_dlmscosem-test_rawapdu_1.bin": "self_describing",
    "aidon_6000series_se_hdlc_1.bin": "self_describing",
    "aidon_6000series_se_hdlc_2.bin": "self_describing",
    "kamstrup_omnipower_no_hdlc_1.bin": "kamstrup",
    "kamstrup_omnipower_se_hdlc_1.bin": "kamstrup",
    "kaifa_ma304h4_no_hdlc_1.bin": "kaifa_no",
    "kaifa_ma304h4_no_hdlc_2.bin": "kaifa_no",
    "kaifa_ma304h4_no_hdlc_3.bin": "kaifa_no",
    "kaifa_ma304h3e_no_hdlc_4.bin": "kaifa_no",
    "landisgyr_e350_no_hdlc_1.bin": "self_describing",
}


def _key(entry: dict[str, Any], name: str) -> bytes | None:
    text = entry[name]
    return bytes.fromhex(text) if text else None


def apdu_of(entry: dict[str, Any]) -> Frame:
    """The one good frame of a capture."""
    frames = feed_all(FRAMERS[entry["framing"]](), fixture_bytes(entry["file"]))
    assert len(frames) == 1 and frames[0].ok
    return frames[0]


def decoder_for(entry: dict[str, Any], profile: str = "auto") -> DlmsDecoder:
    return DlmsDecoder(_key(entry, "key_hex"), _key(entry, "auth_key_hex"), profile, TZ)


def assert_expected(values: dict[str, Any], expected: dict[str, list[Any]]) -> None:
    """Every MANIFEST value is present under its normalized OBIS key, scaled, with its unit."""
    for ref, (value, unit) in expected.items():
        got = values.get(normalize(ref))
        assert got is not None, f"{ref} missing"
        if isinstance(value, int | float):
            assert got.value == pytest.approx(value, abs=1e-9), ref
        else:
            assert got.value == normalize(value), ref
        assert got.unit == unit, ref


def test_every_fixture_has_a_profile() -> None:
    assert {e["file"] for e in ENTRIES} <= set(PROFILE)
    assert set(PROFILE.values()) <= set(cosem_profiles.PROFILE_NAMES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
@pytest.mark.parametrize("profile", ["auto", "named"])
def test_fixture_decodes_to_manifest(entry: dict[str, Any], profile: str) -> None:
    name = PROFILE[entry["file"]] if profile == "named" else "auto"
    reading = decoder_for(entry, name).decode(apdu_of(entry), RECEIVED, seq=7)
    assert reading.seq == 7
    assert reading.received == RECEIVED
    assert_expected(reading.values, entry["expected"])
    if reading.protocol == "dlms":  # the profile used (auto-recognised or named) is the header
        assert reading.header == PROFILE[entry["file"]]
    pickle.loads(pickle.dumps(reading))


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["file"] for e in ENTRIES])
def test_fixture_named_fields_match_manifest(entry: dict[str, Any]) -> None:
    """The named fields agree with the MANIFEST's values (its own `fields` where it lists them)."""
    reading = decoder_for(entry).decode(apdu_of(entry), RECEIVED)
    check_fields(reading.fields, entry)


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["push_datetime"]], ids=lambda e: e["file"])
def test_meter_time(entry: dict[str, Any]) -> None:
    reading = decoder_for(entry).decode(apdu_of(entry), RECEIVED)
    assert reading.meter_time is not None and reading.meter_time.tzinfo is not None
    expected = datetime.fromisoformat(entry["push_datetime"])
    if expected.tzinfo is None:
        expected = expected.replace(tzinfo=TZ)
    assert abs((reading.meter_time - expected).total_seconds()) <= 1.0
    assert reading.lag_s is not None


def test_named_fields_in_kw_and_kwh() -> None:
    entry = next(e for e in ENTRIES if e["file"] == "aidon_6000series_se_hdlc_1.bin")
    reading = decoder_for(entry).decode(apdu_of(entry), RECEIVED)
    assert reading.protocol == "dlms"
    assert reading.fields["total_consumption"] == pytest.approx(63068.772)
    assert reading.fields["actual_total_consumption"] == pytest.approx(2.021)
    assert reading.fields["actual_l2_consumption"] == pytest.approx(0.780)
    assert reading.fields["l1_voltage"] == pytest.approx(227.5)
    assert reading.fields["l3_current"] == pytest.approx(4.6)
    assert reading.crc_ok is True  # HDLC FCS checked


@pytest.mark.parametrize(
    ("name", "meter_id"),
    [
        ("kaifa_ma309_netznoe_mbus_1.bin", "181220000009"),  # trailing meter number without OBIS
        ("kaifa_ma309_tinetz_mbus_1.bin", "1KFM0100000035"),
        ("landisgyr_e450_ch_hdlc_1.bin", "1909113"),
        ("kaifa_ma304h4_no_hdlc_2.bin", "6970631407262986"),
        ("kamstrup_omnipower_se_hdlc_1.bin", "6841131BN245101092"),
        ("landisgyr_e450_ch_hdlc_2.bin", "4C475A6773781FD0"),  # system title
        ("landisgyr_e350_no_hdlc_1.bin", "13943597"),
    ],
)
def test_meter_id(name: str, meter_id: str) -> None:
    entry = next(e for e in ENTRIES if e["file"] == name)
    assert decoder_for(entry).decode(apdu_of(entry), RECEIVED).meter_id == meter_id


def test_decrypted_dsmr_goes_through_the_dsmr_parser() -> None:
    entry = next(e for e in ENTRIES if e["file"] == "sagemcom_t210d_steiermark_rawapdu_1.bin")
    reading = decoder_for(entry).decode(apdu_of(entry), RECEIVED)
    assert reading.header.startswith("EST5")
    assert reading.crc_ok is True
    assert reading.fields["total_consumption"] == pytest.approx(14159.934)


# ---------------------------------------------------------------- keys and authentication


def test_wrong_auth_key_rejected_for_the_verifiable_tag() -> None:
    entry = next(e for e in ENTRIES if e["crypto_verification"] == "gcm_tag_verified")
    frame = apdu_of(entry)
    good = decoder_for(entry).decode(frame, RECEIVED)
    assert good.crc_ok is True
    wrong = DlmsDecoder(_key(entry, "key_hex"), bytes(16), "auto", TZ)
    with pytest.raises(ChecksumError, match="GCM authentication tag"):
        wrong.decode(frame, RECEIVED)


def test_without_auth_key_decrypts_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    entry = next(e for e in ENTRIES if e["crypto_verification"] == "gcm_tag_verified")
    frame = apdu_of(entry)
    decoder = DlmsDecoder(_key(entry, "key_hex"), None, "auto", TZ)
    with caplog.at_level(logging.INFO, logger="app.protocols.dlms"):
        decoder.decode(frame, RECEIVED)
        decoder.decode(frame, RECEIVED)
    assert sum("no auth key" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e["encrypted"]], ids=lambda e: e["file"])
def test_wrong_key_says_check_the_key(entry: dict[str, Any]) -> None:
    decoder = DlmsDecoder(bytes(range(16)), None, "auto", TZ)
    with pytest.raises(DecryptionError, match="decryption gives no valid APDU — check the key"):
        decoder.decode(apdu_of(entry), RECEIVED)


def test_missing_key_is_a_decryption_error() -> None:
    entry = next(e for e in ENTRIES if e["file"] == "siemens_im350_at_hdlc_1.bin")
    with pytest.raises(DecryptionError, match="no key"):
        DlmsDecoder(None, None, "auto", TZ).decode(apdu_of(entry), RECEIVED)


def test_luxembourg_encrypted_p1() -> None:
    frames = feed_all(FRAMERS["raw-apdu"](), LUX.read_bytes())
    lux_tz = ZoneInfo("Europe/Luxembourg")
    reading = DlmsDecoder(LUX_KEY, LUX_AUTH, "smarty", lux_tz).decode(frames[0], RECEIVED)
    plain = (FIXTURES / "dsmr" / "sagemcom_lu-smarty_dsmr4.2_1.txt").read_bytes()
    direct = parse_telegram(plain, RECEIVED, ZoneInfo("Europe/Luxembourg"))
    assert reading.values == direct.values
    assert reading.fields["total_consumption"] == pytest.approx(6.695)
    assert reading.crc_ok is True
    wrong = DlmsDecoder(LUX_KEY, bytes(16), "smarty", ZoneInfo("Europe/Luxembourg"))
    with pytest.raises(ChecksumError):
        wrong.decode(frames[0], RECEIVED)


# ---------------------------------------------------------------- profiles and malformed input


def test_unknown_profile_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="profile"):
        DlmsDecoder(None, None, "nonsense", TZ)


def test_forced_profile_without_matching_layout() -> None:
    entry = next(e for e in ENTRIES if e["file"] == "kaifa_ma304h4_no_hdlc_2.bin")
    with pytest.raises(ParseError, match="no layout for a list of 13"):
        DlmsDecoder(None, None, "at_im350", TZ).decode(apdu_of(entry), RECEIVED)


@pytest.mark.parametrize(
    "apdu",
    ["0F400000", "0F4000000009050102", "0F40000000000203", "C401C1000600000001", "0F40000000070000"],
)
def test_malformed_apdus_raise_parse_error(apdu: str) -> None:
    with pytest.raises(ParseError):
        DlmsDecoder(None, None, "auto", TZ).decode(Frame("apdu", bytes.fromhex(apdu), link="raw"), RECEIVED)


def test_bad_frame_is_not_decoded() -> None:
    with pytest.raises(ParseError, match="rejected frame: FCS"):
        DlmsDecoder().decode(Frame("apdu", b"\x0f", False, "FCS mismatch", "hdlc"), RECEIVED)


def test_encryption_only_round_trip_through_hdlc() -> None:
    from tests.test_dlms_framing import hdlc_message

    plain = bytes.fromhex("0F0000000100") + bytes.fromhex("0202090601000107 00FF06000004D2".replace(" ", ""))
    key, title = bytes(range(16)), b"ABC\x00\x00\x00\x00\x01"
    apdu = security.encrypt(plain, key, title, 5, 0x20)
    frames = feed_all(FRAMERS["hdlc"](), hdlc_message(apdu, 40))
    reading = DlmsDecoder(key, None, "auto", TZ).decode(frames[0], RECEIVED)
    assert reading.values["1-0:1.7.0"].value == 1234 and reading.values["1-0:1.7.0"].unit == "W"
    assert reading.fields["actual_total_consumption"] == pytest.approx(1.234)
    assert reading.meter_id == title.hex().upper()


# ---------------------------------------------------------------- peers as oracles (dlms-cosem 21.3.2)


def _leaves(value: Any) -> list[Any]:
    """Flattened leaf values, bytes-like as bytes, DLMS enums as ints."""
    if isinstance(value, list | tuple):
        return [x for v in value for x in _leaves(v)]
    if isinstance(value, bytes | bytearray):
        return [bytes(value)]
    if isinstance(value, axdr.DateTime):
        return [value.raw]
    if isinstance(value, bool):
        return [int(value)]
    return [value]


def _dlms_cosem_body(apdu: bytes) -> list[Any]:
    """dlms-cosem's decode of a plain data-notification body."""
    from dlms_cosem.dlms_data import DlmsDataParser
    from dlms_cosem.protocol.xdlms.data_notification import DataNotification

    dn = DataNotification.from_bytes(apdu)
    return [d.to_python() for d in DlmsDataParser().parse(dn.body)]


# dlms-cosem 21.3.2 decodes a data-notification only when the date-time is absent or sent
# without the 0x09 octet-string tag, cannot decode visible-strings (Kamstrup, L+G E350) and has
# no HDLC segmentation, GBT or M-Bus support: these are the captures it can decode.
ORACLE_FILES = [
    "aidon_6000series_se_hdlc_1.bin",
    "aidon_6000series_se_hdlc_2.bin",
    "landisgyr_e360_ch_hdlc_1.bin",
    "unknown_unknown_dlmscosem-test_rawapdu_1.bin",
]


@pytest.mark.parametrize("name", ORACLE_FILES)
def test_differential_against_dlms_cosem(name: str) -> None:
    entry = next(e for e in ENTRIES if e["file"] == name)
    apdu = apdu_of(entry).data
    if apdu[0] == 0xDB:
        from dlms_cosem.protocol.xdlms.general_global_cipher import GeneralGlobalCipher
        from dlms_cosem.security import decrypt as peer_decrypt

        ggc = GeneralGlobalCipher.from_bytes(apdu)
        theirs = peer_decrypt(ggc.security_control, ggc.system_title, ggc.invocation_counter,
                              _key(entry, "key_hex"), ggc.ciphered_text, _key(entry, "auth_key_hex"))
        ours = security.decrypt(apdu, _key(entry, "key_hex"), _key(entry, "auth_key_hex"))
        assert ours.verified and ours.data == theirs
        apdu = ours.data
    pos = 6 if apdu[5] == 0 else 18
    body, _ = axdr.decode(apdu, pos)
    assert _leaves(body) == _leaves(_dlms_cosem_body(apdu))


def test_dlms_cosem_agrees_on_a_gcm_round_trip() -> None:
    from dlms_cosem.security import SecurityControlField
    from dlms_cosem.security import encrypt as peer_encrypt

    key, ak, title = bytes(range(16)), bytes(range(16, 32)), b"XYZ\x01\x02\x03\x04\x05"
    plain = bytes.fromhex("0F00000001000203110112000A0A0141")
    theirs = peer_encrypt(SecurityControlField(security_suite=0, authenticated=True, encrypted=True),
                          title, 77, key, plain, ak)
    ours = security.encrypt(plain, key, title, 77, 0x30, ak)
    assert ours.endswith(theirs)
    assert security.decrypt(ours, key, ak).data == plain


def test_manifest_json_is_valid() -> None:
    path = FIXTURES / "dlms" / "MANIFEST.json"
    if path.exists():
        assert isinstance(json.loads(path.read_text()), list)
