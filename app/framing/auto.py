"""Protocol detection: every frame reader reads the whole stream, and the one that yields good frames is used.

    '/' + 3 letters + 1 char        DSMR text telegram (CRC-16)       -> DsmrFramer
    7E A0..AF                       HDLC (HCS + FCS)                  -> HdlcFramer
    68 L L 68 ... CS 16             wired M-Bus long frame (checksum) -> MbusFramer
    DB|DC 08 / 0F <invoke id> ...   bare DLMS APDU (no link check)    -> RawApduFramer

All framers are fed every byte, so each byte is examined a bounded number of times (linear
time whatever the stream holds) and no choice ever has to be replayed. The lock is judged
after every 256 bytes; the frames of one framer, the one holding the lock, are passed on:

- without a lock, the first framer with a link check to yield a good frame takes it (raw APDUs,
  having none, need 2 good frames, or the end of the stream); until then the bad frames of the
  framers with a link check are passed on (so a stream of bad telegrams is counted);
- a framer with a link check takes the lock from one without (raw APDUs) at its first good
  frame; another framer with a link check takes it after 2 good frames while the holder yielded
  none, the raw-APDU reader after 3 (it also finds the APDUs inside HDLC and M-Bus frames); the
  frames that won the lock are passed on too (nothing is lost to a wrong lock);
- the holder loses the lock after 4 x max_frame bytes without a good frame of its own.

`skipped` counts bytes outside any frame of the framer in use (without a lock: of every framer).
"""

from __future__ import annotations

from collections.abc import Callable

from app.framing import Frame, Framer
from app.framing.dsmr import DsmrFramer
from app.framing.hdlc import HdlcFramer
from app.framing.mbus import MbusFramer
from app.framing.raw import RawApduFramer

PROTOCOLS = ("auto", "dsmr", "dlms")
_KINDS: dict[str, Callable[[int], Framer]] = {
    "dsmr": DsmrFramer, "hdlc": HdlcFramer, "mbus": MbusFramer, "raw": RawApduFramer,
}
_UNCHECKED = frozenset({"raw"})  # no link-layer check: any stronger framer's good frame wins
_TAKE_OVER = 2  # good frames another framer needs, while the holder yields none, to take the lock
_TAKE_OVER_UNCHECKED = 3  # a raw-APDU reader also finds the APDUs inside HDLC/M-Bus frames: one more
_MAX_HELD = 4
_SLICE = 256  # bytes fed to all framers before the lock is judged
_QUIET_FRAMES = 4  # x max_frame bytes without a good frame: the lock is dropped


class AutoFramer:
    """Runs the DSMR, HDLC, M-Bus and raw-APDU framers side by side; passes on the lock holder's frames."""

    def __init__(self, max_frame: int = 16384, allow_dsmr: bool = True) -> None:
        self.max_frame = max_frame
        self.allow_dsmr = allow_dsmr
        self.framers: dict[str, Framer] = {
            name: cls(max_frame) for name, cls in _KINDS.items() if allow_dsmr or name != "dsmr"
        }
        self.mode: str | None = None  # the framer holding the lock
        self.skipped = 0  # bytes outside any frame of the framer in use
        self.switches = 0  # times the lock moved from one framer to another
        self._held: dict[str, list[Frame]] = {name: [] for name in self.framers}
        self._skipped_seen: dict[str, int] = dict.fromkeys(self.framers, 0)
        self._quiet = 0  # bytes since the holder's last good frame

    @property
    def confirmed(self) -> bool:
        """True while a framer holds the lock."""
        return self.mode is not None

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes; return the frames they complete, in order."""
        out: list[Frame] = []
        for i in range(0, len(chunk), _SLICE):  # decisions follow the stream closely, not the read size
            piece = chunk[i : i + _SLICE]
            results = {name: framer.feed(piece) for name, framer in self.framers.items()}
            self._count_skipped()
            out += self._choose(results, len(piece))
        return out

    def flush(self) -> list[Frame]:
        """End of stream: every framer's leftovers; the holder's (or the checked ones') are passed on."""
        results = {name: framer.flush() for name, framer in self.framers.items()}
        lone = [name for name in _UNCHECKED & self._held.keys() if self._held[name]]
        if self.mode is None and lone:  # a lone frame without a link check, at the end of a capture
            out = self._take(lone[0], results[lone[0]], self._held[lone[0]])
        else:
            out = self._choose(results, 0)
        for held in self._held.values():
            held.clear()
        self.mode = None
        self._quiet = 0
        return out

    def _count_skipped(self) -> None:
        deltas = {}
        for name, framer in self.framers.items():
            now = getattr(framer, "skipped", 0)
            deltas[name] = now - self._skipped_seen[name]
            self._skipped_seen[name] = now
        self.skipped += deltas[self.mode] if self.mode is not None else min(deltas.values())

    def _choose(self, results: dict[str, list[Frame]], n: int) -> list[Frame]:
        """The frames to pass on from this chunk; moves the lock where the rules say."""
        if self.mode is None:
            return self._unlocked(results)
        mode = self.mode
        own = results[mode]
        if any(f.ok for f in own):
            self._quiet = 0
            for held in self._held.values():
                held.clear()
            return own
        self._quiet += n
        out = list(own)
        for name, frames in results.items():
            if name == mode:
                continue
            goods = [f for f in frames if f.ok]
            if not goods:
                continue
            held = self._held[name]
            held.extend(goods)
            del held[:-_MAX_HELD]
            need = _TAKE_OVER_UNCHECKED if name in _UNCHECKED else 1 if mode in _UNCHECKED else _TAKE_OVER
            if len(held) >= need:
                out.extend(self._take(name, frames, held))
                return out
        if self._quiet > _QUIET_FRAMES * self.max_frame:
            self.mode = None
            self._quiet = 0
            for held in self._held.values():
                held.clear()
        return out

    def _unlocked(self, results: dict[str, list[Frame]]) -> list[Frame]:
        best, most = "", 0
        for name, frames in results.items():
            goods = sum(f.ok for f in frames)
            if goods > most and name not in _UNCHECKED:
                best, most = name, goods
        if best:
            self.mode = best
            self._quiet = 0
            for held in self._held.values():
                held.clear()
            return results[best]
        for name in _UNCHECKED & results.keys():  # no link check: a second good frame confirms the first
            frames = results[name]
            held = self._held[name]
            held.extend(f for f in frames if f.ok)
            del held[:-_MAX_HELD]
            if len(held) >= _TAKE_OVER:
                return self._take(name, frames, held)
        return [f for name, frames in results.items() if name not in _UNCHECKED for f in frames]

    def _take(self, name: str, frames: list[Frame], held: list[Frame]) -> list[Frame]:
        """`name` takes the lock: its held good frames, then the rest of this chunk's frames."""
        self.mode = name
        self.switches += 1
        self._quiet = 0
        fresh = {id(f) for f in frames}
        out = [f for f in held if id(f) not in fresh]
        out.extend(frames)
        for other in self._held.values():
            other.clear()
        return out


def make_framer(protocol: str, max_frame: int = 16384) -> Framer:
    """The framer for `[meter] protocol`: auto (all), dsmr (text only), dlms (HDLC/M-Bus/raw)."""
    if protocol == "dsmr":
        return DsmrFramer(max_frame)
    if protocol == "dlms":
        return AutoFramer(max_frame, allow_dsmr=False)
    if protocol == "auto":
        return AutoFramer(max_frame)
    raise ValueError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
