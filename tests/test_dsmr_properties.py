"""Hypothesis properties of the DSMR framer and parser."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from app.errors import ProtocolError
from app.framing.dsmr import DsmrFramer
from app.protocols.dsmr import parse_telegram
from tests.conftest import FIXTURES

TZ = ZoneInfo("Europe/Brussels")
CRC_FILES = sorted(p.name for p in (FIXTURES / "dsmr").glob("*.txt")
                   if b"!\r\n" not in p.read_bytes() and "stream" not in p.name)
TELEGRAMS = {name: (FIXTURES / "dsmr" / name).read_bytes() for name in CRC_FILES}


def _feed_all(chunks: list[bytes]) -> list[tuple[bool, bytes]]:
    framer = DsmrFramer()
    out = []
    for c in chunks:
        out += [(f.ok, f.data) for f in framer.feed(c)]
    return out


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, prev = [], 0
    for p in points:
        pieces.append(data[prev:p])
        prev = p
    pieces.append(data[prev:])
    return pieces


@given(st.binary(max_size=4000), st.lists(st.integers(0, 4000), max_size=20))
def test_framer_never_raises_on_garbage(data: bytes, cuts: list[int]) -> None:
    framer = DsmrFramer(max_frame=2048)
    for chunk in _split(data, cuts):
        for f in framer.feed(chunk):
            assert isinstance(f.ok, bool)
    framer.flush()


@given(st.binary(max_size=2000))
def test_parser_never_raises_anything_but_protocol_errors(data: bytes) -> None:
    try:
        parse_telegram(b"/" + data, datetime.now(UTC), TZ)
    except ProtocolError:
        pass


@given(st.sampled_from(CRC_FILES), st.lists(st.integers(0, 3000), max_size=30),
       st.binary(max_size=200).filter(lambda b: b"/" not in b),
       st.binary(max_size=200).filter(lambda b: b"/" not in b))
def test_any_chunking_and_garbage_gives_the_same_telegram(name: str, cuts: list[int], pre: bytes,
                                                           post: bytes) -> None:
    tele = TELEGRAMS[name]
    stream = pre + tele + post + tele
    frames = _feed_all(_split(stream, cuts))
    assert [(ok, d) for ok, d in frames if ok] == [(True, tele), (True, tele)]


@settings(max_examples=300)
@given(st.sampled_from(CRC_FILES), st.data())
def test_single_bit_flip_is_rejected(name: str, data: st.DataObject) -> None:
    tele = bytearray(TELEGRAMS[name])
    pos = data.draw(st.integers(0, len(tele) - 1))
    bit = data.draw(st.integers(0, 7))
    tele[pos] ^= 1 << bit
    framer = DsmrFramer()
    frames = framer.feed(bytes(tele)) + framer.flush()
    assert not any(f.ok for f in frames)


@given(st.sampled_from(CRC_FILES), st.integers(1, 400))
def test_truncated_telegram_then_good_one(name: str, cut: int) -> None:
    tele = TELEGRAMS[name]
    frames = _feed_all([tele[: max(1, len(tele) - cut)], tele])
    assert [d for ok, d in frames if ok] == [tele]
