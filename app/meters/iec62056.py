"""IEC 62056-21 meters (`protocol = iec62056-21`): optical head or RS-485, readout mode A/B/C or plain push.

Readout (mode C; A and B are told by the identification's baud character):

    master  /?!\\r\\n                          at 300 baud 7E1 (`/?ADDRESS!\\r\\n` with an address)
    meter   /XXXZ<ident>\\r\\n                  XXX manufacturer, Z the baud rate it offers
    master  ACK '0' Z '0' \\r\\n                 mode C only: 0x06, protocol 0, baud Z, data readout;
                                               both sides then switch to Z's baud rate
    meter   STX <OBIS lines> ! \\r\\n ETX BCC    BCC = XOR of every byte after STX up to and including ETX

    Z   mode C: '0'..'6' = 300, 600, 1200, 2400, 4800, 9600, 19200 baud (the master acks, then switches)
        mode B: 'A'..'F' = 600 .. 19200 baud (the meter switches right after its identification, no ack)
        mode A: anything else; no switch, the data follows at 300 baud

Push (`mode = push`, the EasyMeter and other D0 meters that send unasked): `/XXXZ<ident>` CR LF CR LF,
the OBIS lines, `!` CR LF, no checksum, every second or so; framed by the DSMR framer.

Either way the data lines go through the DSMR/OBIS line parser (app.protocols.dsmr), so the named fields
are the same as the P1 meter's. The framer and the dialogue are sans-IO (bytes in, actions out); pyserial
is used only by the poller and the push loop, in the meter's own process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from app.errors import ChecksumError, ConfigError, ParseError
from app.framing import Frame
from app.meters.sample import MeterError
from app.records import Reading

if TYPE_CHECKING:
    from app.config import Section
    from app.meters import MeterSpec
    from app.meters.runner import Output

log = logging.getLogger("app.meters.iec62056")
DEFAULT_POLL_INTERVAL = 60.0  # readout; a push meter is not polled (see default_poll_interval)
DEFAULT_ROLE = "building"
KEYS = frozenset({"port", "mode", "address", "baudrate", "format", "max_baudrate", "baud_switch", "timeout",
                  "timezone"})

STX, ETX, ACK, NAK = 0x02, 0x03, 0x06, 0x15
MODE_C_BAUD = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}
MODE_B_BAUD = {"A": 600, "B": 1200, "C": 2400, "D": 4800, "E": 9600, "F": 19200}
_BAUD_CODE = {baud: code for code, baud in MODE_C_BAUD.items()}
_MASK7 = bytes(b & 0x7F for b in range(256))  # 7E1: the parity bit is not data
MAX_BLOCK = 16384


# --- framing (pure) -----------------------------------------------------------------------------------


def bcc(data: bytes) -> int:
    """The block check character: XOR of `data` (the bytes after STX up to and including ETX)."""
    x = 0
    for b in data:
        x ^= b
    return x


def data_block(lines: bytes) -> bytes:
    """STX lines ETX BCC: the data message a meter sends (for tests and the simulator)."""
    body = lines + bytes([ETX])
    return bytes([STX]) + body + bytes([bcc(body)])


class BlockFramer:
    """STX ... ETX BCC blocks out of a byte stream: feed(chunk) -> frames flagged good or bad; never raises.

    Bytes outside a block are skipped and counted; a block longer than max_frame is cut and flagged."""

    def __init__(self, max_frame: int = MAX_BLOCK) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self.skipped = 0

    def feed(self, chunk: bytes) -> list[Frame]:
        """Consume bytes (7-bit: the parity bit is dropped); return the blocks they complete."""
        buf = self._buf
        buf += chunk.translate(_MASK7)
        frames: list[Frame] = []
        while True:
            start = buf.find(STX)
            if start < 0:
                self.skipped += len(buf)
                buf.clear()
                break
            if start:
                self.skipped += start
                del buf[:start]
            end = buf.find(ETX, 1, self.max_frame + 1)
            if end < 0:
                if len(buf) > self.max_frame:
                    frames.append(Frame("iec62056", bytes(buf[:64]), False,
                                        f"data block longer than {self.max_frame} bytes without ETX", "iec62056"))
                    del buf[:1]
                    continue
                break
            if end + 1 >= len(buf):
                break  # the BCC has not come yet
            body, got = bytes(buf[1:end + 1]), buf[end + 1]
            del buf[:end + 2]
            calc = bcc(body)
            if calc != got:
                frames.append(Frame("iec62056", body[:-1], False,
                                    f"BCC mismatch: calculated {calc:02X}, received {got:02X}", "iec62056", False))
            else:
                frames.append(Frame("iec62056", body[:-1], True, "", "iec62056", True))
        return frames

    def flush(self) -> list[Frame]:
        """End of stream: an unfinished block comes back flagged."""
        frames = []
        if self._buf.find(STX) >= 0:
            frames.append(Frame("iec62056", bytes(self._buf[:64]), False, "data block cut off (no ETX/BCC)",
                                "iec62056"))
        self._buf.clear()
        return frames


# --- the dialogue (pure) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identification:
    """`/XXXZ<ident>`: manufacturer, baud character, mode and the baud rate the data comes at."""

    manufacturer: str
    baud_char: str
    ident: str
    mode: str  # "A" | "B" | "C"
    baud: int

    @property
    def header(self) -> str:
        """The line without '/' (what a Reading's header holds)."""
        return f"{self.manufacturer}{self.baud_char}{self.ident}"


def request(address: str = "") -> bytes:
    """The sign-on: `/?!\\r\\n`, or `/?ADDRESS!\\r\\n`."""
    return b"/?" + address.encode("ascii") + b"!\r\n"


def ack(baud_char: str) -> bytes:
    """Mode C acknowledgement for a data readout at `baud_char`'s rate: 0x06 '0' Z '0' CR LF."""
    return b"\x060" + baud_char.encode("ascii") + b"0\r\n"


def parse_identification(line: bytes) -> Identification:
    """`/XXXZ<ident>` (CR LF optional) -> Identification; ParseError when it is not one."""
    text = line.translate(_MASK7).decode("ascii", "replace").rstrip("\r\n")
    if len(text) < 5 or text[0] != "/" or not text[1:4].isalpha() or not text[4].isprintable():
        raise ParseError(f"not an IEC 62056-21 identification: {text[:40]!r}")
    z = text[4]
    if z in MODE_C_BAUD:
        mode, baud = "C", MODE_C_BAUD[z]
    elif z in MODE_B_BAUD:
        mode, baud = "B", MODE_B_BAUD[z]
    else:
        mode, baud = "A", 300
    return Identification(text[1:4], z, text[5:], mode, baud)


@dataclass(frozen=True, slots=True)
class Send:
    """Write these bytes (at the current baud rate; wait until they are out before the next action)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class SetBaud:
    """Switch the port to this baud rate."""

    baud: int


@dataclass(frozen=True, slots=True)
class Done:
    """The readout is complete: the identification and the data block's lines."""

    ident: Identification
    lines: bytes


@dataclass(frozen=True, slots=True)
class Fail:
    """The readout failed; `bcc` when the block's check failed."""

    reason: str
    bcc: bool = False


Action = Send | SetBaud | Done | Fail


class Readout:
    """One readout, sans-IO: start() and feed(chunk) return the actions to carry out, in order.

    `max_baud` caps the rate proposed in mode C (None: the meter's); `switch = False` acks with '0'
    and stays at 300 baud (a meter or head that cannot switch)."""

    def __init__(self, address: str = "", max_baud: int | None = None, switch: bool = True,
                 initial_baud: int = 300, max_frame: int = MAX_BLOCK) -> None:
        self.address = address
        self.max_baud = max_baud
        self.switch = switch
        self.initial_baud = initial_baud
        self.state = "ident"
        self.ident: Identification | None = None
        self.data_baud = initial_baud
        self._line = bytearray()
        self._framer = BlockFramer(max_frame)
        self._request = request(address)
        self.max_frame = max_frame

    def start(self) -> list[Action]:
        """The first action: send the sign-on."""
        return [Send(self._request)]

    def feed(self, chunk: bytes) -> list[Action]:
        """Bytes from the meter -> what to do next (nothing while a line or block is incomplete)."""
        if self.state == "ident":
            self._line += chunk.translate(_MASK7)
            while True:
                lf = self._line.find(b"\n")
                if lf < 0:
                    if len(self._line) > 256:
                        del self._line[:-128]
                    return []
                line = bytes(self._line[:lf + 1])
                del self._line[:lf + 1]
                slash = line.find(b"/")
                if slash < 0 or line[slash:] == self._request or line[slash:slash + 2] == b"/?":
                    continue  # noise, or the echo of our own sign-on (optical heads, RS-485 half duplex)
                try:
                    ident = parse_identification(line[slash:])
                except ParseError:
                    continue
                return self._identified(ident, bytes(self._line))
        if self.state == "data":
            for frame in self._framer.feed(chunk):
                self.state = "done"
                if not frame.ok:
                    return [Fail(frame.reason, bcc=frame.crc_ok is False)]
                assert self.ident is not None
                return [Done(self.ident, frame.data)]
        return []

    def _identified(self, ident: Identification, rest: bytes) -> list[Action]:
        self.ident = ident
        self.state = "data"
        actions: list[Action] = []
        if ident.mode == "C":
            baud = ident.baud if self.switch else self.initial_baud
            if self.max_baud is not None:
                baud = min(baud, self.max_baud)
            code = _BAUD_CODE.get(baud, "0")
            baud = MODE_C_BAUD[code]
            actions.append(Send(ack(code)))
            if baud != self.initial_baud:
                actions.append(SetBaud(baud))
                rest = b""  # anything after the identification came before the switch
            self.data_baud = baud
        elif ident.mode == "B":
            actions.append(SetBaud(ident.baud))
            self.data_baud = ident.baud
            rest = b""
        if rest:
            actions.extend(self.feed(rest))
        return actions


_LETTER_C = {"C": "96", "F": "97", "L": "98", "P": "99"}  # IEC 62056-61 letters for C = 96..99


def normalize_lines(lines: bytes) -> bytes:
    """Reduced OBIS codes of a readout (`1.8.0(...)`, `C.1.0(...)`, `F.F(...)`) written in full
    (`1-0:1.8.0(...)`, `0-0:96.1.0(...)`, `0-0:97.97.0(...)`), so the DSMR line parser takes them."""
    out = []
    for line in lines.split(b"\n"):
        paren = line.find(b"(")
        code = line[:paren].strip() if paren > 0 else b""
        if code and b":" not in code and b"-" not in code:
            parts = code.decode("latin-1").split(".")
            if 2 <= len(parts) <= 3 and all(p.isdigit() or p in _LETTER_C for p in parts):
                abstract = parts[0] in _LETTER_C or parts[0] == "0"
                nums = [_LETTER_C.get(p, p) for p in parts]
                if len(nums) == 2:
                    nums.append("0")
                full = ("0-0:" if abstract else "1-0:") + ".".join(nums)
                line = full.encode("latin-1") + line[paren:]
        out.append(line)
    return b"\n".join(out)


def to_reading(ident_header: str, lines: bytes, received: datetime, tz: ZoneInfo, protocol: str = "iec62056-21",
               checked: bool | None = True) -> Reading:
    """A data block's OBIS lines -> Reading through the DSMR/OBIS line parser (ParseError when none)."""
    from app.protocols.dsmr import parse_telegram

    lines = normalize_lines(lines)
    body = lines if lines.endswith(b"\n") or not lines else lines + b"\r\n"
    if b"\n!" not in b"\n" + body:
        body += b"!\r\n"
    telegram = b"/" + ident_header.encode("latin-1") + b"\r\n\r\n" + body
    # crc_ok True: the BCC was checked (a D0 push has no check: None); parse_telegram checks no CRC then
    reading = parse_telegram(telegram, received, tz, crc_ok=True)
    return replace(reading, protocol=protocol, crc_ok=checked)


# --- config -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IecSettings:
    """The iec62056-21 keys of [meter:NAME]."""

    port: str
    mode: str = "readout"  # readout (A/B/C as the meter says) | push
    address: str = ""
    baudrate: int = 300  # readout: the sign-on rate; push: the rate the meter sends at
    bytesize: int = 7
    parity: str = "E"
    stopbits: float = 1
    max_baudrate: int | None = None
    baud_switch: bool = True
    timeout: float = 5.0  # seconds of silence that end a wait
    timezone: str = "Europe/Brussels"


def default_poll_interval(sec: Section) -> float | None:
    """60 s for a readout, None (not polled) for a push meter."""
    return None if sec.items.get("mode", "").strip().lower() == "push" else DEFAULT_POLL_INTERVAL


def parse_settings(sec: Section, name: str) -> IecSettings:
    """The iec62056-21 keys: port, mode, address, baudrate, format, max_baudrate, baud_switch, timeout."""
    from app.config import _serial_format, _timezone

    port = sec.text("port", "")
    if not port:
        raise ConfigError(f"[{sec.name}] port: missing (e.g. /dev/ttyUSB0, an optical head)", sec.name, "port")
    mode = sec.choice("mode", "readout", ("readout", "push"))
    address = sec.text("address", "")
    if len(address) > 32 or not all(c.isalnum() or c in " -_" for c in address):
        raise sec.error("address", address, "a device address is up to 32 letters and digits")
    default_baud = 9600 if mode == "push" else 300
    baud = sec.integer("baudrate", default_baud, lo=300, hi=115200)
    fmt = sec.get("format", "7E1", _serial_format)
    max_baud = sec.get("max_baudrate", None, _mode_c_baud)
    return IecSettings(
        port=port, mode=mode, address=address, baudrate=baud, bytesize=int(fmt[0]), parity=fmt[1],
        stopbits=float(fmt[2:]) if "." in fmt[2:] else int(fmt[2:]), max_baudrate=max_baud,
        baud_switch=sec.flag("baud_switch", True), timeout=sec.duration("timeout", 5.0, lo=0.1, hi=300.0),
        timezone=sec.get("timezone", "Europe/Brussels", _timezone),
    )


def _mode_c_baud(text: str) -> int:
    if not text.isdigit() or int(text) not in _BAUD_CODE:
        raise ValueError(f"expected one of {', '.join(str(b) for b in _BAUD_CODE)}")
    return int(text)


# --- I/O: the meter's own process ------------------------------------------------------------------------


class IecPoller:
    """Mode A/B/C readouts over pyserial; a meter that ignores the baud switch is detected and read at
    300 baud from then on."""

    def __init__(self, spec: MeterSpec, clock: Callable[[], float] = time.monotonic) -> None:
        import serial

        self.s: IecSettings = spec.settings
        self.tz = ZoneInfo(self.s.timezone)
        self.clock = clock
        self.switch = self.s.baud_switch
        self.bcc_errors = 0
        self.failed_switches = 0
        self.ser = serial.serial_for_url(self.s.port, do_not_open=True, baudrate=self.s.baudrate,
                                         bytesize=self.s.bytesize, parity=self.s.parity, stopbits=self.s.stopbits,
                                         timeout=0.05)
        self._serial_error: type[Exception] = serial.SerialException

    def poll(self) -> Reading:
        """One readout -> Reading; MeterError with the reason (no answer, BCC mismatch, port gone)."""
        try:
            return self._poll()
        except (OSError, self._serial_error) as exc:
            self.ser.close()
            raise MeterError(f"port {self.s.port}: {exc}") from None

    def _poll(self) -> Reading:
        if not self.ser.is_open:
            self.ser.open()
        self.ser.baudrate = self.s.baudrate
        self.ser.reset_input_buffer()
        dialogue = Readout(self.s.address, self.s.max_baudrate, self.switch, self.s.baudrate)
        actions = dialogue.start()
        switched = False
        while True:
            for action in actions:
                if isinstance(action, Send):
                    self.ser.write(action.data)
                    self.ser.flush()  # out at the old rate before a switch
                elif isinstance(action, SetBaud):
                    time.sleep(0.02)
                    self.ser.baudrate = action.baud
                    switched = True
                elif isinstance(action, Done):
                    return to_reading(action.ident.header, action.lines, datetime.now(UTC), self.tz)
                else:
                    if action.bcc:
                        self.bcc_errors += 1
                    raise MeterError(f"{action.reason} ({self.bcc_errors} BCC errors so far)"
                                     if action.bcc else action.reason)
            chunk = self._read_until_silence()
            if not chunk:
                if dialogue.state == "ident":
                    raise MeterError(f"no identification within {self.s.timeout:g} s (sent "
                                     f"{request(self.s.address)!r} at {self.s.baudrate} baud)")
                if switched:
                    self._switch_failed(dialogue)
                raise MeterError(f"no data block within {self.s.timeout:g} s at {dialogue.data_baud} baud")
            actions = dialogue.feed(chunk)
            if switched and dialogue.state == "data" and dialogue._framer.skipped > 64:
                self._switch_failed(dialogue)  # only noise at the new rate: the meter did not switch
                raise MeterError(f"only noise at {dialogue.data_baud} baud after the baud switch")

    def _switch_failed(self, dialogue: Readout) -> None:
        self.failed_switches += 1
        if self.switch:
            self.switch = False
            log.warning("meter at %s: no data at %d baud after the switch; it seems to ignore the baud switch, "
                        "reading at %d baud from now on (set baud_switch = no to say so)",
                        self.s.port, dialogue.data_baud, self.s.baudrate)

    def _read_until_silence(self) -> bytes:
        """What arrives until `timeout` of silence (or 0.2 s of quiet after something came)."""
        got = bytearray()
        deadline = self.clock() + self.s.timeout
        quiet_at = None
        while self.clock() < deadline:
            chunk = self.ser.read(self.ser.in_waiting or 1)
            now = self.clock()
            if chunk:
                got += chunk
                quiet_at = now + 0.2
                deadline = max(deadline, now + 0.2)
                if ETX in chunk or b"\n" in chunk:
                    quiet_at = now + 0.05
            elif quiet_at is not None and now >= quiet_at:
                break
        return bytes(got)

    def close(self) -> None:
        """Release the port."""
        self.ser.close()


def open_poller(spec: MeterSpec) -> IecPoller:
    """The readout poller for [meter:NAME] (pyserial is imported here, in the meter's process)."""
    return IecPoller(spec)


def run(spec: MeterSpec, out: Output, stop: Callable[[], bool]) -> None:
    """A push meter's loop: D0 telegrams framed by the DSMR framer, each a Reading; reopens a lost port."""
    import serial

    from app.framing.dsmr import DsmrFramer

    s: IecSettings = spec.settings
    tz = ZoneInfo(s.timezone)
    backoff = 1.0
    while not stop():
        try:
            ser = serial.serial_for_url(s.port, baudrate=s.baudrate, bytesize=s.bytesize, parity=s.parity,
                                        stopbits=s.stopbits, timeout=0.2)
        except (OSError, serial.SerialException) as exc:
            out.error(f"port {s.port}: {exc}")
            _sleep(backoff, stop)
            backoff = min(backoff * 2, 30.0)
            continue
        backoff = 1.0
        framer = DsmrFramer()
        last = time.monotonic()
        try:
            while not stop():
                chunk = ser.read(ser.in_waiting or 1)
                if not chunk:
                    if time.monotonic() - last > max(s.timeout, 10.0):
                        out.error(f"no telegram for {time.monotonic() - last:.0f} s on {s.port}")
                        last = time.monotonic()
                    continue
                for frame in framer.feed(chunk.translate(_MASK7)):
                    last = time.monotonic()
                    _deliver(frame, out, tz)
        except (OSError, serial.SerialException) as exc:
            out.error(f"port {s.port}: {exc}")
        finally:
            ser.close()


def _deliver(frame: Frame, out: Output, tz: ZoneInfo) -> None:
    """One pushed telegram -> out.reading, or out.error with why it was rejected."""
    if not frame.ok:
        out.error(frame.reason)
        return
    from app.protocols.dsmr import parse_telegram

    try:
        reading = parse_telegram(frame.data, datetime.now(UTC), tz, crc_ok=frame.crc_ok)
    except (ParseError, ChecksumError) as exc:
        out.error(str(exc))
        return
    out.reading(replace(reading, protocol="iec62056-21"))


def _sleep(seconds: float, stop: Callable[[], bool]) -> None:
    end = time.monotonic() + seconds
    while not stop() and time.monotonic() < end:
        time.sleep(0.1)
