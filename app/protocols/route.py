"""Routes each good frame to its protocol's decoder: DSMR text, or a DLMS APDU (created on first use)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from app.framing import Frame
from app.protocols import Decoder
from app.protocols.dsmr import DsmrDecoder
from app.records import Reading


class FrameDecoder:
    """Decodes frames of any kind the framers yield; DLMS (and its crypto) is imported only when needed."""

    def __init__(self, tz: ZoneInfo, key: bytes | None = None, auth_key: bytes | None = None,
                 profile: str = "auto") -> None:
        self.tz = tz
        self.key = key
        self.auth_key = auth_key
        self.profile = profile
        self._dsmr = DsmrDecoder(tz)
        self._dlms: Decoder | None = None

    def decode(self, frame: Frame, received: datetime, seq: int = 0) -> Reading:
        """Decode one good frame into a Reading (raises a ProtocolError subclass)."""
        if frame.kind == "dsmr":
            return self._dsmr.decode(frame, received, seq)
        if self._dlms is None:
            from app.protocols.dlms import DlmsDecoder

            self._dlms = DlmsDecoder(self.key, self.auth_key, self.profile, self.tz)
        return self._dlms.decode(frame, received, seq)
