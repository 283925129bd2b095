"""`--decode FILE`: one JSON object per telegram/frame on stdout, rejects on stderr."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, BinaryIO
from zoneinfo import ZoneInfo

from app.config import Config
from app.errors import ProtocolError
from app.framing import Frame
from app.framing.auto import make_framer
from app.protocols.peaks import MONTH_PEAKS_REF, peaks_json
from app.protocols.route import FrameDecoder
from app.records import Reading, Value


def value_json(v: Value) -> dict[str, Any]:
    """One OBIS value as JSON: value, and unit/timestamp/text/groups where present."""
    out: dict[str, Any] = {"value": v.value}
    if v.unit:
        out["unit"] = v.unit
    if v.timestamp is not None:
        out["timestamp"] = v.timestamp.isoformat()
    if v.text is not None:
        out["text"] = v.text
    if v.groups:
        out["groups"] = [[t, u] if u else [t] for t, u in v.groups]
    return out


def reading_json(r: Reading, tz: ZoneInfo | None = None) -> dict[str, Any]:
    """The --decode object for one Reading (with `tz`, 0-0:98.1.0 also as structured month peaks)."""
    out: dict[str, Any] = {
        "protocol": r.protocol,
        "header": r.header,
        "meter_id": r.meter_id,
        "timestamp": r.meter_time.isoformat() if r.meter_time else None,
        "crc_ok": r.crc_ok,
        "values": {ref: value_json(v) for ref, v in r.values.items()},
        "fields": r.fields,
    }
    peaks = r.values.get(MONTH_PEAKS_REF)
    if tz is not None and peaks is not None and (structured := peaks_json(peaks, tz)):
        out["values"][MONTH_PEAKS_REF]["month_peaks"] = structured
    return out


@contextmanager
def _say_profiles() -> Iterator[None]:
    """While decoding, show on stderr which DLMS profile auto chose and why, and lists that match none."""
    logger = logging.getLogger("app.protocols")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("smartmeter: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


CHUNK_BYTES = 1 << 16  # --decode reads the capture in chunks: constant memory whatever its size


def decode_file(path: str, cfg: Config) -> int:
    """Decode a capture chunk by chunk; exit 0 if at least one frame decoded, 1 otherwise."""
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"smartmeter: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    with fh, _say_profiles():
        return _decode_stream(fh, path, cfg)


def _decode_stream(fh: BinaryIO, path: str, cfg: Config) -> int:
    """Frame, decode and print what `fh` holds (see decode_file)."""
    m = cfg.meter
    framer = make_framer(m.protocol, m.max_frame)  # the appliance's framer and max_frame: one rule for both
    tz = ZoneInfo(m.timezone)
    decoder = FrameDecoder(tz, m.key, m.auth_key, m.profile)
    good = n = 0
    head = b""  # the capture's first chunk, for the hints
    while True:
        try:
            data = fh.read(CHUNK_BYTES)
        except OSError as exc:
            print(f"smartmeter: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        head = head or data
        frames = framer.feed(data) if data else framer.flush()
        for frame in frames:
            n += 1
            good += _print_frame(decoder, frame, n, tz)
        if not data:
            break
    if not n:
        print(f"{path}: no frame found", file=sys.stderr)
    if good < n or not good:
        for hint in input_hints(head):
            print(f"smartmeter: hint: {hint}", file=sys.stderr)
    return 0 if good else 1


def input_hints(data: bytes) -> list[str]:
    """Why a capture may not decode, judged from its bytes (shown when frames were rejected)."""
    hints = []
    if b"/" in data and b"!" in data and b"\n" in data and b"\r\n" not in data:
        hints.append("the lines end in LF only, a DSMR telegram ends them in CR LF, so its CRC fails: "
                     "the capture went through a tty or an editor (cat /dev/ttyUSB0 does this); "
                     "capture with: smartmeter -c FILE --capture OUT")
    elif b"\r\r\n" in data:
        hints.append("the lines end in CR CR LF: the capture was converted to Windows line endings")
    return hints


def _print_frame(decoder: FrameDecoder, frame: Frame, n: int, tz: ZoneInfo) -> int:
    """Print frame `n` as JSON (1) or its reject reason on stderr (0)."""
    if not frame.ok:
        print(f"frame {n}: rejected: {frame.reason}", file=sys.stderr)
        return 0
    try:
        reading = decoder.decode(frame, datetime.now(UTC), n)
    except ProtocolError as exc:
        print(f"frame {n}: rejected: {exc}", file=sys.stderr)
        return 0
    print(json.dumps(reading_json(reading, tz), ensure_ascii=False, default=str))
    return 1
