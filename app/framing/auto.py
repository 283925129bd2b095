"""Protocol sniffing: pick the frame reader from the byte stream, and the framer factory.

    '/' + 3 letters + 1 char        DSMR text telegram          -> DsmrFramer
    7E A0..AF                       HDLC (frame format type 0xA) -> HdlcFramer
    68 L L 68                       wired M-Bus long frame       -> MbusFramer
    DB|DC 08 / 0F <invoke id> ...   bare DLMS APDU               -> RawApduFramer

The earliest signature in the stream wins (the link layer's start comes before the APDU it
carries). A choice is provisional until the framer yields its first good frame: if it yields
only bad frames (or nothing for 2 x max_frame bytes, or binary bytes after a DSMR '/') the
bytes it was given are sniffed again from one byte further on. A confirmed choice is dropped
after 10 bad frames in a row.
"""

from __future__ import annotations

import re

from app.framing import Frame, Framer
from app.framing.dsmr import DsmrFramer
from app.framing.hdlc import HdlcFramer
from app.framing.mbus import MbusFramer
from app.framing.raw import RawApduFramer

PROTOCOLS = ("auto", "dsmr", "dlms")
_SIGNATURES = re.compile(
    rb"(?P<dsmr>/[A-Za-z]{3}[\x21-\x7e])"
    rb"|(?P<hdlc>\x7e[\xa0-\xaf])"
    rb"|(?P<mbus>\x68(?P<len>[\x03-\xff])(?P=len)\x68)"
    rb"|(?P<raw>[\xdb\xdc]\x08|\x0f[\x00-\xff]{4}(?:\x00[\x01\x02]|\x09\x0c|\x0c\x07))",
    re.S,
)
_NOT_TEXT = re.compile(rb"[^\t\n\r\x20-\x7e]")
_TAIL = 8  # bytes kept while no signature is seen: a signature may straddle two reads
_MAX_BAD_UNCONFIRMED = 2
_MAX_BAD_CONFIRMED = 10


class AutoFramer:
    """Sniffs DSMR text, HDLC, M-Bus or raw APDUs and delegates to that framer; never raises."""

    def __init__(self, max_frame: int = 16384, allow_dsmr: bool = True) -> None:
        self.max_frame = max_frame
        self.allow_dsmr = allow_dsmr
        self.mode: str | None = None  # "dsmr" | "hdlc" | "mbus" | "raw" once chosen
        self.confirmed = False
        self.skipped = 0
        self._framer: Framer | None = None
        self._buf = bytearray()  # unsynced bytes while no mode is chosen
        self._history = bytearray()  # bytes given to an unconfirmed framer
        self._bad = 0

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes; return the frames they complete, in order."""
        out: list[Frame] = []
        pending = bytes(chunk)
        while pending:
            if self._framer is None:
                self._buf += pending
                pending = b""
                start = self._sniff()
                if start < 0:
                    continue
                pending = bytes(self._buf[start:])
                self._buf.clear()
                self._history.clear()
                continue
            if not self.confirmed:
                self._history += pending
            frames = self._framer.feed(pending)
            pending = b""
            pending = self._judge(frames, out)
        return out

    def _sniff(self) -> int:
        """Choose a framer at the earliest signature in `_buf`; its offset, or -1."""
        for m in _SIGNATURES.finditer(self._buf):
            kind = m.lastgroup if m.lastgroup != "len" else "mbus"
            if kind == "dsmr" and not self.allow_dsmr:
                continue
            if kind is None:
                continue
            self.skipped += m.start()
            self._start(kind)
            return m.start()
        if len(self._buf) > _TAIL:
            self.skipped += len(self._buf) - _TAIL
            del self._buf[:-_TAIL]
        return -1

    def _start(self, kind: str) -> None:
        self.mode = kind
        self.confirmed = False
        self._bad = 0
        if kind == "dsmr":
            self._framer = DsmrFramer(self.max_frame)
        elif kind == "hdlc":
            self._framer = HdlcFramer(self.max_frame)
        elif kind == "mbus":
            self._framer = MbusFramer(self.max_frame)
        else:
            self._framer = RawApduFramer(self.max_frame)

    def _judge(self, frames: list[Frame], out: list[Frame]) -> bytes:
        """Keep or drop the current choice; returns bytes to sniff again (if dropped)."""
        for f in frames:
            if f.ok:
                self.confirmed = True
                self._history.clear()
                self._bad = 0
            else:
                self._bad += 1
        out.extend(frames)
        if not self.confirmed:
            binary = self.mode == "dsmr" and _NOT_TEXT.search(self._history) is not None
            if binary or self._bad >= _MAX_BAD_UNCONFIRMED or len(self._history) > 2 * self.max_frame:
                replay = bytes(self._history[1:])
                self._reset()
                return replay
        elif self._bad >= _MAX_BAD_CONFIRMED:
            self._reset()
        return b""

    def _reset(self) -> None:
        self._framer = None
        self.mode = None
        self.confirmed = False
        self._history.clear()
        self._bad = 0

    def flush(self) -> list[Frame]:
        """End of stream: the current framer's leftovers as bad frames."""
        out = self._framer.flush() if self._framer is not None else []
        self._reset()
        self._buf.clear()
        return out


def make_framer(protocol: str, max_frame: int = 16384) -> Framer:
    """The framer for `[meter] protocol`: auto (sniff all), dsmr (text only), dlms (HDLC/M-Bus/raw)."""
    if protocol == "dsmr":
        return DsmrFramer(max_frame)
    if protocol == "dlms":
        return AutoFramer(max_frame, allow_dsmr=False)
    if protocol == "auto":
        return AutoFramer(max_frame)
    raise ValueError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
