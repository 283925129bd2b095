"""Wired M-Bus long-frame reader for DLMS pushes (EN 13757-2, IEC 62056-7-6 transport layer).

    68  L  L  68  C  A  CI  STSAP  DTSAP  APDU segment ...  CS  16
                 \\____________ L bytes ____________/

CS is the sum of the L bytes mod 256. CI 0x00..0x1F is the DLMS transport layer: low nibble
the segment number (0, 1, ... mod 16), bit 0x10 set on the last segment; one message is the
concatenation of its segments' data after STSAP/DTSAP (Austrian Kaifa/Sagemcom/Landis+Gyr
pushes: CI 0x00 then 0x11). Segments may arrive in separate reads ~160 ms apart. A General-
Block-Transfer APDU is joined like on HDLC. Single ACK (E5) and short frames (10 ...) are skipped.
"""

from __future__ import annotations

from app.framing import Frame
from app.framing.hdlc import GBT_TAG, GbtAssembler, _ber_length
from app.framing.raw import axdr_end

START = 0x68
STOP = 0x16
# C fields a long frame carrying data may have: SND_UD (FCB 0/1), RSP_UD (ACD/DFC combinations), SND_NR.
_C_FIELDS = frozenset((0x53, 0x73, 0x08, 0x18, 0x28, 0x38, 0x44))
_CIPHERING = (0xDB, 0xDC)


def apdu_length_problem(apdu: bytes) -> str:
    """Why a reassembled APDU's own length does not match its size ('' when it does or cannot tell)."""
    if apdu[0] in _CIPHERING:
        if len(apdu) < 11 or apdu[1] != 8:
            return "ciphering APDU header is cut off"
        length, pos = _ber_length(apdu, 10)
        if length < 0 or pos + length != len(apdu):
            return f"ciphering APDU says {length} bytes, the message holds {len(apdu) - pos}"
    elif apdu[0] == 0x0F and len(apdu) > 6 and apdu[5] in (0x00, 0x09, 0x0C):
        pos = 6 if apdu[5] == 0x00 else 19 if apdu[5] == 0x09 else 18
        if axdr_end(apdu, pos) != len(apdu):
            return "data-notification body does not end where the message ends"
    return ""


class MbusFramer:
    """Streaming M-Bus reader: feed(chunk) -> APDU frames; never raises, bounded by max_frame."""

    def __init__(self, max_frame: int = 16384) -> None:
        self.max_frame = max_frame
        self.skipped = 0
        self._buf = bytearray()
        self._message: bytearray | None = None
        self._next_seq = 0
        self._gbt = GbtAssembler("mbus", max_frame)

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes; return the frames they complete, in order."""
        self._buf += chunk
        out: list[Frame] = []
        buf = self._buf
        while True:
            start = buf.find(START)
            if start < 0:
                self.skipped += len(buf)
                buf.clear()
                break
            if start:
                self.skipped += start
                del buf[:start]
            if len(buf) < 4:
                break
            length = buf[1]
            if buf[2] != length or buf[3] != START or length < 3:
                self.skipped += 1
                del buf[:1]
                continue
            total = length + 6
            if len(buf) < total:
                break
            if buf[total - 1] != STOP:
                out.append(self._bad(buf[:total], f"M-Bus frame of {total} bytes has no stop byte 0x16"))
                del buf[:1]
                continue
            cs_calc = sum(buf[4 : 4 + length]) & 0xFF
            cs_recv = buf[4 + length]
            segment = bytes(buf[4 : 4 + length])
            del buf[:total]
            if cs_calc != cs_recv:
                out.append(self._bad(segment, f"M-Bus checksum mismatch: calculated {cs_calc:02X}, "
                                              f"received {cs_recv:02X}"))
                continue
            self._segment(segment, out)
        return out

    def _segment(self, segment: bytes, out: list[Frame]) -> None:
        """One good long frame: C A CI STSAP DTSAP data."""
        if segment[0] not in _C_FIELDS:
            out.append(self._bad(segment, f"M-Bus C field 0x{segment[0]:02X} is not a data frame"))
            return
        ci = segment[2]
        if ci > 0x1F:
            out.append(self._bad(segment, f"M-Bus CI 0x{ci:02X} is not a DLMS transport segment"))
            return
        if len(segment) < 5:
            out.append(self._bad(segment, "M-Bus DLMS segment without STSAP/DTSAP"))
            return
        seq, last = ci & 0x0F, bool(ci & 0x10)
        data = segment[5:]
        if seq == 0:
            if self._message is not None:
                out.append(Frame("apdu", bytes(self._message[:64]), False,
                                 "M-Bus message cut off: a new first segment arrived", "mbus"))
            self._message = bytearray()
        elif self._message is None or seq != self._next_seq:
            expected = "segment 0" if self._message is None else f"segment {self._next_seq}"
            out.append(self._bad(segment, f"M-Bus segment {seq} out of sequence (expected {expected})"))
            return
        self._message += data
        self._next_seq = (seq + 1) & 0x0F
        if len(self._message) > self.max_frame:
            out.append(self._bad(b"", f"M-Bus message longer than {self.max_frame} bytes"))
            return
        if not last:
            return
        apdu = bytes(self._message)
        self._message = None
        if apdu and apdu[0] == GBT_TAG:
            frame = self._gbt.add(apdu)
            if frame is not None:
                out.append(frame)
            return
        if apdu:
            problem = apdu_length_problem(apdu)
            if problem:
                out.append(self._bad(apdu, f"M-Bus message: {problem}"))
                return
            out.append(Frame("apdu", apdu, True, "", "mbus"))

    def _bad(self, data: bytes | bytearray, reason: str) -> Frame:
        """A rejected frame; a message being reassembled is dropped with it."""
        if self._message is not None or self._gbt.pending:
            reason += " (message in progress dropped)"
        self._message = None
        self._gbt.reset()
        return Frame("apdu", bytes(data), False, reason, "mbus")

    def flush(self) -> list[Frame]:
        """End of stream: an unfinished message or frame is returned as a bad frame."""
        out: list[Frame] = []
        if self._message is not None or self._gbt.pending:
            out.append(Frame("apdu", b"", False, "stream ended inside a segmented M-Bus message", "mbus"))
        elif len(self._buf) > 4:
            out.append(Frame("apdu", bytes(self._buf[:64]), False,
                             f"stream ended inside an M-Bus frame ({len(self._buf)} bytes)", "mbus"))
        self._buf.clear()
        self._message = None
        self._gbt.reset()
        return out
