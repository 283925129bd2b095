"""Sans-IO parsers: a good `Frame` -> `Reading`, raising one precise `ProtocolError`."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from app.framing import Frame
from app.records import Reading


class Decoder(Protocol):
    """Turns frames of one protocol into Readings."""

    def decode(self, frame: Frame, received: datetime, seq: int = 0) -> Reading:
        """Decode one good frame; raise a ProtocolError subclass if it cannot be decoded."""
        ...
