"""Sans-IO frame readers: `feed(chunk) -> list[Frame]`, each frame flagged good or bad.

A framer never raises and never grows without bound: each has a maximum frame size and
clears its buffer at that cap. Bad frames are returned flagged (with a reason) so that the
good frames around them are not lost and the reader can count them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame off the wire.

    kind: "dsmr" (data = the telegram from '/' to the end of the CRC line),
          "apdu" (data = a reassembled DLMS APDU from HDLC, M-Bus or a raw stream).
    link: the link layer it came in ("dsmr", "hdlc", "mbus", "raw").
    ok:   False when a link check failed or the frame was cut off; `reason` says why.
    """

    kind: str
    data: bytes
    ok: bool = True
    reason: str = ""
    link: str = ""
    crc_ok: bool | None = None


class Framer(Protocol):
    """A streaming frame reader."""

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes; return the frames they complete, in order."""
        ...

    def flush(self) -> list[Frame]:
        """End of stream: return what is left as bad frames (a missing end)."""
        ...
