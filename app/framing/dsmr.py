"""DSMR / Fluvius P1 telegram framer and its CRC.

    /XXX5\\Ident CR LF          header, starts the telegram
    CR LF
    1-0:1.8.1(000301.548*kWh) CR LF
    ...
    !C4B0 CR LF                 end: '!' at the start of a line + 1..4 upper-case hex digits
                                of CRC-16/ARC over '/'..'!' (DSMR 2.2/3 and D0: '!' CR LF, no CRC)

The framer copes with starting mid-telegram, garbage between telegrams, telegrams split over
any number of reads and a missing end (a new '/' line before '!', or the size cap).
"""

from __future__ import annotations

import re

import crcmod.predefined

from app.framing import Frame

crc16_arc = crcmod.predefined.mkPredefinedCrcFun("crc-16")  # poly 0x8005 reflected, init 0
_HEX = frozenset(b"0123456789ABCDEF")  # meters send upper case
# A new header: '/' at a line start, or '/' + a three-letter manufacturer id anywhere.
_MANUFACTURER_RE = re.compile(rb"[A-Z][A-Za-z]{2}")
_MAX_TAIL = 8  # bytes allowed between '!' and LF: up to 4 hex digits, CR, some slack


def check_crc(telegram: bytes) -> tuple[bool | None, str, str]:
    """(crc_ok, calculated, received) for a complete telegram; crc_ok None when it has no CRC."""
    bang = telegram.rfind(b"\n!") + 1
    if bang <= 0:
        return False, "", ""
    digits = telegram[bang + 1 :]
    digits = digits[:-2] if digits.endswith(b"\r\n") else digits[:-1] if digits.endswith(b"\n") else digits
    if not digits:  # DSMR 2.2/3 and D0: no CRC to check
        return None, "", ""
    calculated = crc16_arc(telegram[: bang + 1])
    received = digits.decode("latin-1")
    if len(digits) > 4 or not all(c in _HEX for c in digits):
        return False, f"{calculated:04X}", received
    return int(digits, 16) == calculated, f"{calculated:04X}", received.upper()


class DsmrFramer:
    """Streaming telegram reader: feed(chunk) -> frames; never raises, bounded by max_frame."""

    def __init__(self, max_frame: int = 16384) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._scan = 0  # offset in _buf from where to look for '!' / a new header
        self.skipped = 0  # bytes outside any telegram

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes; return the frames they complete, in order.

        Every byte is searched a bounded number of times: `_scan` remembers how far the buffer
        was examined, the end mark is looked for only up to the next header and within max_frame.
        """
        self._buf += chunk
        frames: list[Frame] = []
        buf = self._buf
        while True:
            start = buf.find(b"/")
            if start < 0:
                self.skipped += len(buf)
                buf.clear()
                self._scan = 0
                break
            if start > 0:
                self.skipped += start
                del buf[:start]
                self._scan = max(0, self._scan - start)
            scan = max(self._scan, 1)
            limit = min(len(buf), self.max_frame + _MAX_TAIL)
            restart = self._new_header(buf, max(1, scan - 4), limit)
            eol_bang = buf.find(b"\n!", scan - 1, restart if restart >= 0 else limit)  # the end mark starts a line
            bang = eol_bang + 1 if eol_bang >= 0 else -1
            if bang < 0 and restart >= 0:
                frames.append(Frame("dsmr", bytes(buf[:restart]), False,
                                    "truncated telegram: a new header came before '!'", "dsmr"))
                del buf[:restart]
                self._scan = 0
                continue
            if bang > self.max_frame or (bang < 0 and len(buf) > self.max_frame):
                frames.append(Frame("dsmr", bytes(buf[:64]), False,
                                    f"telegram longer than {self.max_frame} bytes without '!'", "dsmr"))
                del buf[: max(1, limit - 4)]  # no header before `limit`: a new one may only straddle it
                self._scan = 0
                continue
            if bang < 0:
                self._scan = max(1, len(buf) - 1)
                break
            lf = buf.find(b"\n", bang + 1, bang + 1 + _MAX_TAIL)
            if lf < 0:
                if len(buf) - bang <= _MAX_TAIL:
                    self._scan = bang  # wait for the rest of the CRC line
                    break
                # No LF after '!': a malformed end. Cut before a following header, if any.
                slash = buf.find(b"/", bang + 1, bang + 1 + _MAX_TAIL)
                cut = slash if slash >= 0 else bang + _MAX_TAIL
                frames.append(self._finish(bytes(buf[:cut]), malformed=True))
                del buf[:cut]
            else:
                frames.append(self._finish(bytes(buf[: lf + 1])))
                del buf[: lf + 1]
            self._scan = 0
        return frames

    @staticmethod
    def _new_header(buf: bytearray, start: int, end: int) -> int:
        """Offset of a new telegram header in buf[start:end], or -1 (find() first: it is rare)."""
        pos = buf.find(b"/", start, end)
        while pos >= 0:
            if (pos > 0 and buf[pos - 1] in (10, 13)) or _MANUFACTURER_RE.match(buf, pos + 1):
                return pos
            pos = buf.find(b"/", pos + 1, end)
        return -1

    def flush(self) -> list[Frame]:
        """End of stream: an unfinished telegram is a bad frame (missing end)."""
        frames: list[Frame] = []
        if self._buf.startswith(b"/"):
            frames.append(Frame("dsmr", bytes(self._buf), False, "telegram has no end ('!' missing)", "dsmr"))
        self._buf.clear()
        self._scan = 0
        return frames

    @staticmethod
    def _finish(telegram: bytes, malformed: bool = False) -> Frame:
        ok, calculated, received = check_crc(telegram)
        if malformed:
            return Frame("dsmr", telegram, False, "malformed end line after '!'", "dsmr", False)
        if ok is False:
            return Frame("dsmr", telegram, False,
                         f"CRC mismatch: calculated {calculated}, received {received or '?'}", "dsmr", False)
        return Frame("dsmr", telegram, True, "", "dsmr", ok)
