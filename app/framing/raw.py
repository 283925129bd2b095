"""Reader for bare DLMS APDUs in a byte stream (no link layer), as some P1 ports and adapters send.

    DB|DC  08  <system title, 8>  <length, BER>  <length bytes: SC, counter, ciphertext, tag>
    0F  <invoke id, 4>  <date-time: 00 | 09 0C <12> | 0C <12>>  <one A-XDR value>

The ciphering APDU is cut by its own length; a bare data-notification by decoding its A-XDR
body. There is no checksum on this link: the decoder's GCM tag, A-XDR parse or DSMR CRC is
the only integrity check.
"""

from __future__ import annotations

import re

from app.framing import Frame

_CIPHERING = (0xDB, 0xDC)
_FIXED = {0x03: 1, 0x05: 4, 0x06: 4, 0x0D: 1, 0x0F: 1, 0x10: 2, 0x11: 1, 0x12: 2, 0x14: 8, 0x15: 8,
          0x16: 1, 0x17: 4, 0x18: 8, 0x19: 12, 0x1A: 5, 0x1B: 4, 0x00: 0, 0xFF: 0}
_MAX_DEPTH = 16
NEED_MORE = -2
INVALID = -1


class AxdrScan:
    """Finds the end of one A-XDR value, resumable: bytes already walked are not walked again."""

    def __init__(self, pos: int) -> None:
        self.pos = pos
        self.remaining = [1]  # values still to read at each nesting level

    def run(self, buf: bytes | bytearray) -> int:
        """End offset of the value; NEED_MORE if it is cut off (call again with more), INVALID if malformed."""
        remaining = self.remaining
        size_of = _FIXED.get
        while remaining:
            if remaining[-1] == 0:
                remaining.pop()
                continue
            pos = self.pos
            if pos >= len(buf):
                return NEED_MORE
            tag = buf[pos]
            size = size_of(tag)
            if size is not None:
                if pos + 1 + size > len(buf):
                    return NEED_MORE
                self.pos = pos + 1 + size
                remaining[-1] -= 1
                continue
            if tag not in _VARIABLE:
                return INVALID
            if pos + 1 >= len(buf):
                return NEED_MORE
            first = buf[pos + 1]
            if first < 0x80:
                n, body = first, pos + 2
            else:
                k = first & 0x7F
                if k == 0 or k > 4:
                    return INVALID
                if pos + 2 + k > len(buf):
                    return NEED_MORE
                n, body = int.from_bytes(buf[pos + 2 : pos + 2 + k], "big"), pos + 2 + k
            if tag in (0x01, 0x02):
                if len(remaining) > _MAX_DEPTH:
                    return INVALID
                remaining[-1] -= 1
                self.pos = body
                remaining.append(n)
                continue
            end = body + (n + 7 >> 3 if tag == 0x04 else n)
            if end > len(buf):
                return NEED_MORE
            self.pos = end
            remaining[-1] -= 1
        return self.pos


def axdr_end(buf: bytes | bytearray, pos: int) -> int:
    """End offset of the A-XDR value at `pos`; NEED_MORE if it is cut off, INVALID if malformed."""
    return AxdrScan(pos).run(buf)


_VARIABLE = frozenset((0x01, 0x02, 0x04, 0x09, 0x0A, 0x0C))
_START = re.compile(rb"[\x0f\xdb\xdc]")
DATA_NOTIFICATION = 0x0F


class RawApduFramer:
    """Streaming bare-APDU reader: feed(chunk) -> APDU frames; never raises, bounded by max_frame."""

    def __init__(self, max_frame: int = 16384) -> None:
        self.max_frame = max_frame
        self.skipped = 0
        self._buf = bytearray()
        self._scan: AxdrScan | None = None  # the body walk of a data-notification waiting for more bytes

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes; return the frames they complete, in order."""
        self._buf += chunk
        out: list[Frame] = []
        buf = self._buf
        while buf:
            first = buf[0]
            if first in _CIPHERING:
                size = self._ciphering_size(buf)
            elif first == DATA_NOTIFICATION:
                size = self._notification_size(buf)
            else:
                size = -1
            if size == 0:  # need more bytes
                if len(buf) > self.max_frame:
                    out.append(Frame("apdu", bytes(buf[:64]), False,
                                     f"APDU longer than {self.max_frame} bytes", "raw"))
                    del buf[:1]
                    self._scan = None
                    continue
                break
            if size < 0:
                self._scan = None
                nxt = self._next_start(buf)
                self.skipped += nxt
                del buf[:nxt]
                continue
            out.append(Frame("apdu", bytes(buf[:size]), True, "", "raw"))
            del buf[:size]
            self._scan = None
        return out

    @staticmethod
    def _next_start(buf: bytearray) -> int:
        """Offset of the next byte that may start an APDU (at least 1)."""
        m = _START.search(buf, 1)
        return m.start() if m is not None else len(buf)

    def _ciphering_size(self, buf: bytearray) -> int:
        """Total size of the ciphering APDU at buf[0]; 0 = need more, -1 = not one."""
        if len(buf) < 2:
            return 0
        if buf[1] != 8:
            return -1
        if len(buf) < 11:
            return 0
        first = buf[10]
        if first < 0x80:
            length, pos = first, 11
        else:
            n = first & 0x7F
            if n == 0 or n > 4:
                return -1
            if len(buf) < 11 + n:
                return 0
            length, pos = int.from_bytes(buf[11 : 11 + n], "big"), 11 + n
        if length < 5 or pos + length > self.max_frame:
            return -1
        if len(buf) > pos and (buf[pos] & 0xC0 or buf[pos] & 0x0F > 1 or not buf[pos] & 0x30):
            return -1  # not a plausible security control byte
        if len(buf) < pos + length:
            return 0
        return pos + length

    def _notification_size(self, buf: bytearray) -> int:
        """Total size of the data-notification at buf[0]; 0 = need more, -1 = not one."""
        if len(buf) < 6:
            return 0
        pos = 5
        marker = buf[pos]
        if marker == 0x00:
            pos += 1
        elif marker == 0x09:
            if len(buf) < 7:
                return 0
            if buf[6] != 12:
                return -1
            pos += 14
        elif marker == 0x0C:
            pos += 13
        else:
            return -1
        if len(buf) <= pos:
            return 0
        if self._scan is None:
            self._scan = AxdrScan(pos)
        end = self._scan.run(buf)
        if end == NEED_MORE:
            return 0 if len(buf) < self.max_frame else -1
        if end == INVALID or end > self.max_frame:
            return -1
        return end

    def flush(self) -> list[Frame]:
        """End of stream: a partial APDU is returned as a bad frame."""
        out: list[Frame] = []
        if self._buf and self._buf[0] in (*_CIPHERING, DATA_NOTIFICATION):
            out.append(Frame("apdu", bytes(self._buf[:64]), False,
                             f"stream ended inside an APDU ({len(self._buf)} bytes)", "raw"))
        self._buf.clear()
        self._scan = None
        return out
