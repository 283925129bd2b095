"""HDLC frame reader for DLMS/COSEM push ports (IEC 62056-46), with segment and GBT reassembly.

    7E  Ftype|S|len(11)  dst(1,2,4)  src(1,2,4)  ctrl  HCS(2)  information  FCS(2)  7E
        \\___ 2 bytes __/                               ^ only with information

The frame format field's top nibble is 0xA; bit 0x08 (S) marks a segment with more to come;
the 11-bit length counts from the format field to the FCS (flags excluded). Address bytes end
at the first byte with its low bit set. HCS covers format..ctrl, FCS covers format..information;
both are CRC-16/X-25 sent low byte first. Frames are cut by the length field, never by
splitting on 0x7E (which may occur inside a frame); a flag may close one frame and open the
next. The information field of the first segment starts with the LLC header E6 E7 00, which
is dropped. DLMS General-Block-Transfer blocks (E0 ...) are joined into one APDU:

    E0  block-control(1: 0x80 last, 0x40 streaming, window)  block-number(2)  ack(2)  len  data
"""

from __future__ import annotations

import crcmod.predefined

from app.framing import Frame

crc16_x25 = crcmod.predefined.mkPredefinedCrcFun("x-25")

FLAG = 0x7E
_MIN_LEN = 7  # format(2) + dst(1) + src(1) + ctrl(1) + FCS(2)
_LLC = (b"\xe6\xe7\x00", b"\xe6\xe6\x00")
GBT_TAG = 0xE0
# data-notification, glo/ded-ciphering, general-block-transfer, event-notification, get-response
_APDU_TAGS = frozenset(b"\x0f\xdb\xdc\xe0\xc2\xc4")


def _ber_length(buf: bytes, pos: int) -> tuple[int, int]:
    """(length, position after it), or (-1, pos) when the length is invalid or cut off."""
    if pos >= len(buf):
        return -1, pos
    first = buf[pos]
    if first < 0x80:
        return first, pos + 1
    n = first & 0x7F
    if n == 0 or n > 4 or pos + 1 + n > len(buf):
        return -1, pos
    return int.from_bytes(buf[pos + 1 : pos + 1 + n], "big"), pos + 1 + n


class GbtAssembler:
    """Joins DLMS General-Block-Transfer blocks (block numbers 1, 2, ... up to the last) into one APDU."""

    def __init__(self, link: str, max_frame: int) -> None:
        self.link = link
        self.max_frame = max_frame
        self._data = bytearray()
        self._next = 0  # expected block number; 0 = not assembling

    def add(self, apdu: bytes) -> Frame | None:
        """Add one E0 block; returns the joined APDU (or a bad frame) when the transfer ends."""
        if len(apdu) < 6:
            self.reset()
            return Frame("apdu", apdu, False, f"GBT block of {len(apdu)} bytes is cut off", self.link)
        control = apdu[1]
        number = (apdu[2] << 8) | apdu[3]
        length, pos = _ber_length(apdu, 6)
        if length < 0 or pos + length != len(apdu):
            self.reset()
            return Frame("apdu", apdu, False,
                         f"GBT block {number}: block data length does not match the frame", self.link)
        if number == 1:  # a new transfer replaces an unfinished one
            self._data = bytearray()
            self._next = 1
        elif number != self._next:
            expected = self._next
            self.reset()
            why = "no first block" if expected == 0 else f"expected block {expected}"
            return Frame("apdu", apdu, False, f"GBT block {number} out of sequence ({why})", self.link)
        self._data += apdu[pos:]
        if len(self._data) > self.max_frame:
            self.reset()
            return Frame("apdu", b"", False, f"GBT transfer longer than {self.max_frame} bytes", self.link)
        self._next = number + 1
        if control & 0x80:
            data = bytes(self._data)
            self.reset()
            return Frame("apdu", data, True, "", self.link)
        return None

    def reset(self) -> None:
        """Forget a transfer in progress."""
        self._data = bytearray()
        self._next = 0

    @property
    def pending(self) -> bool:
        """True while a transfer is unfinished."""
        return self._next != 0


class HdlcFramer:
    """Streaming HDLC reader: feed(chunk) -> APDU frames; never raises, bounded by max_frame."""

    def __init__(self, max_frame: int = 16384) -> None:
        self.max_frame = max_frame
        self.skipped = 0  # bytes dropped while looking for a frame start
        self._buf = bytearray()
        self._segments: bytearray | None = None
        self._lost = False  # segments of a message whose first segment was lost are arriving
        self._gbt = GbtAssembler("hdlc", max_frame)

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes; return the frames they complete, in order."""
        self._buf += chunk
        out: list[Frame] = []
        buf = self._buf
        while True:
            start = buf.find(FLAG)
            if start < 0:
                self._skip(len(buf), out)
                buf.clear()
                break
            if start:
                self._skip(start, out)
                del buf[:start]
            if len(buf) < 3:
                break
            fmt = buf[1]
            if fmt == FLAG:  # inter-frame fill, or a closing flag followed by an opening one
                del buf[:1]
                continue
            length = ((fmt & 0x07) << 8) | buf[2]
            if fmt & 0xF0 != 0xA0 or length < _MIN_LEN:
                self._skip(1, out)
                del buf[:1]
                continue
            total = length + 2
            hdr_end = self._header_end(buf, length)
            if hdr_end == -1:  # invalid address: not a frame start
                self._skip(1, out)
                del buf[:1]
                continue
            if hdr_end == -2:  # header not complete yet
                break
            has_info = length > hdr_end + 2  # header is buf[1..hdr_end]; + FCS
            if has_info and len(buf) >= hdr_end + 4:
                hcs_calc = crc16_x25(bytes(buf[1 : hdr_end + 1]))
                hcs_recv = buf[hdr_end + 1] | (buf[hdr_end + 2] << 8)
                if hcs_calc != hcs_recv:
                    if len(buf) >= total and buf[total - 1] == FLAG:
                        out.append(self._bad(buf[:total], f"HCS mismatch: calculated {hcs_calc:04X}, "
                                                          f"received {hcs_recv:04X}"))
                    else:
                        self._skip(1, out)
                    del buf[:1]
                    continue
            if total > self.max_frame:
                out.append(self._bad(buf[:16], f"HDLC frame of {total} bytes exceeds max_frame"))
                del buf[:1]
                continue
            if len(buf) < total:
                break
            if buf[total - 1] != FLAG:
                out.append(self._bad(buf[:total], f"no closing flag after {total} bytes"))
                del buf[:1]
                continue
            body = bytes(buf[1 : total - 1])
            del buf[: total - 1]  # keep the closing flag: it may open the next frame
            fcs_calc = crc16_x25(body[:-2])
            fcs_recv = body[-2] | (body[-1] << 8)
            if fcs_calc != fcs_recv:
                why = f"FCS mismatch: calculated {fcs_calc:04X}, received {fcs_recv:04X}"
                out.append(self._bad(body, why))
                continue
            if has_info:
                self._information(fmt, body[hdr_end + 2 : -2], out)
        return out

    def _skip(self, n: int, out: list[Frame]) -> None:
        """Count skipped bytes; bytes lost between the segments of a message break that message."""
        self.skipped += n
        if n and self._segments is not None:
            out.append(self._bad(b"", f"{n} bytes lost inside a segmented message"))

    @staticmethod
    def _header_end(buf: bytearray, length: int) -> int:
        """Index in `buf` of the control byte; -1 for an invalid address, -2 if more bytes are needed."""
        stop = length - 1  # index of the FCS
        pos = 3
        for _ in range(2):  # destination, then source address
            n = 0
            while True:
                if pos >= stop:
                    return -1
                if pos >= len(buf):
                    return -2
                n += 1
                last = buf[pos] & 1
                pos += 1
                if last:
                    break
                if n == 4:
                    return -1
            if n == 3:
                return -1
        return pos if pos < stop else -1

    def _information(self, fmt: int, info: bytes, out: list[Frame]) -> None:
        """Handle one good frame's information field: segments, LLC, GBT."""
        if fmt & 0x08:
            if self._segments is None:
                if info[:3] not in _LLC and info[:1] not in _APDU_TAGS:
                    why = "segment without LLC header or APDU tag (first segment lost?)"
                    out.append(self._bad(info, why))
                    self._lost = True
                    return
                self._segments = bytearray()
                self._lost = False
            self._segments += info
            if len(self._segments) > self.max_frame:
                self._segments = None
                self._lost = True
                out.append(Frame("apdu", b"", False, f"segmented message longer than {self.max_frame} bytes",
                                 "hdlc"))
            return
        if self._segments is not None:
            info = bytes(self._segments) + info
            self._segments = None
        elif self._lost and info[:3] not in _LLC:  # the last segment of a message whose start was lost
            self._lost = False
            out.append(self._bad(info, "last segment of a message whose first segment was lost"))
            return
        self._lost = False
        if info[:3] in _LLC:
            info = info[3:]
        if not info:
            return
        if info[0] not in _APDU_TAGS:
            out.append(self._bad(info, f"information field starts with 0x{info[0]:02X}, not an APDU tag"))
            return
        if info[0] == GBT_TAG:
            frame = self._gbt.add(info)
            if frame is not None:
                out.append(frame)
            return
        out.append(Frame("apdu", info, True, "", "hdlc"))

    def _bad(self, data: bytes | bytearray, reason: str) -> Frame:
        """A rejected frame; a message being reassembled is dropped with it."""
        if self._segments is not None or self._gbt.pending:
            reason += " (message in progress dropped)"
            self._lost = self._segments is not None
        self._segments = None
        self._gbt.reset()
        return Frame("apdu", bytes(data), False, reason, "hdlc")

    def flush(self) -> list[Frame]:
        """End of stream: a partial frame or an unfinished message is returned as a bad frame."""
        out: list[Frame] = []
        if self._segments is not None or self._gbt.pending:
            out.append(Frame("apdu", b"", False, "stream ended inside a segmented message", "hdlc"))
        elif len(self._buf) > 3:
            out.append(Frame("apdu", bytes(self._buf[:64]), False,
                             f"stream ended inside a frame ({len(self._buf)} bytes)", "hdlc"))
        self._buf.clear()
        self._segments = None
        self._gbt.reset()
        return out
