"""`--decode FILE`: one JSON object per telegram/frame on stdout, rejects on stderr."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from app.config import Config
from app.errors import ProtocolError
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


def _say_profiles() -> None:
    """Show on stderr which DLMS profile auto chose and why, and lists that match none."""
    logger = logging.getLogger("app.protocols")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("smartmeter: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def decode_file(path: str, cfg: Config) -> int:
    """Decode a capture; exit 0 if at least one frame decoded, 1 otherwise."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        print(f"smartmeter: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    _say_profiles()
    framer = make_framer(cfg.meter.protocol, max(cfg.meter.max_frame, 1 << 16))
    m = cfg.meter
    decoder = FrameDecoder(ZoneInfo(m.timezone), m.key, m.auth_key, m.profile)
    good = 0
    frames = framer.feed(data) + framer.flush()
    for n, frame in enumerate(frames, 1):
        if not frame.ok:
            print(f"frame {n}: rejected: {frame.reason}", file=sys.stderr)
            continue
        try:
            reading = decoder.decode(frame, datetime.now(UTC), n)
        except ProtocolError as exc:
            print(f"frame {n}: rejected: {exc}", file=sys.stderr)
            continue
        good += 1
        print(json.dumps(reading_json(reading, ZoneInfo(m.timezone)), ensure_ascii=False, default=str))
    if not frames:
        print(f"{path}: no frame found", file=sys.stderr)
    if good < len(frames) or not good:
        for hint in input_hints(data):
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
