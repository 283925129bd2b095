"""`--list-ports [--probe] [--port URL]`: the serial ports present and what each one receives.

A probe opens a port at each usual setting in turn, feeds what arrives to the same framer and
decoder as the reader (app.framing.auto, app.protocols.route) and stops at the first frame that
decodes, or that is an encrypted push we cannot open without the key:

    DSMR 115200 8N1 / 9600 7E1, M-Bus 2400 8E1, HDLC 2400 8N1 / 9600 8N1
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from app.errors import DecryptionError, ProtocolError
from app.framing.auto import AutoFramer
from app.protocols.route import FrameDecoder
from app.protocols.security import split
from app.records import Reading
from app.transport.source import SerialSource, SourceError

PROBE_SETTINGS: tuple[tuple[int, str, str], ...] = (
    (115200, "8N1", "DSMR 4/5, Fluvius, Luxembourg"),
    (9600, "7E1", "DSMR 2.2/3"),
    (2400, "8E1", "M-Bus / HDLC customer port (Austria, Switzerland, Nordic HAN)"),
    (2400, "8N1", "HDLC (Kamstrup HAN)"),
    (9600, "8N1", "HDLC"),
)
MAX_PROBE_BYTES = 1 << 16  # per setting: enough for a few frames, bounded


@dataclass(frozen=True)
class PortInfo:
    """One serial port: its device, the stable /dev/serial/by-id names, what USB says it is."""

    device: str
    by_id: tuple[str, ...] = ()
    description: str = ""
    usb: str = ""  # "0403:6001 FTDI FT232R USB UART serial A10K..." for USB ports

    @property
    def best_name(self) -> str:
        """The name to put in the config: a by-id link survives re-plugging, /dev/ttyUSB0 may not."""
        return self.by_id[0] if self.by_id else self.device


def _by_id_links(pattern: str = "/dev/serial/by-id/*") -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for link in sorted(glob.glob(pattern)):
        out.setdefault(os.path.realpath(link), []).append(link)
    return out


def list_ports() -> list[PortInfo]:
    """The serial ports present (USB adapters, the Pi's UART as /dev/serial0), USB ones first."""
    from serial.tools import list_ports as lp

    links = _by_id_links()
    seen: set[str] = set()
    ports: list[PortInfo] = []
    for p in lp.comports():
        real = os.path.realpath(p.device)
        if real in seen:
            continue
        seen.add(real)
        usb = ""
        if p.vid is not None and p.pid is not None:
            parts = [f"{p.vid:04x}:{p.pid:04x}", p.manufacturer or "", p.product or "",
                     f"serial {p.serial_number}" if p.serial_number else ""]
            usb = " ".join(x for x in parts if x)
        desc = p.description if p.description and p.description != "n/a" else ""
        ports.append(PortInfo(p.device, tuple(links.get(real, ())), desc, usb))
    for alias in ("/dev/serial0", "/dev/serial1"):  # the Pi's UART aliases (see the README's cable section)
        if os.path.exists(alias):
            real = os.path.realpath(alias)
            ports = [PortInfo(q.device, (alias, *q.by_id), q.description, q.usb)
                     if os.path.realpath(q.device) == real else q for q in ports]
            if real not in seen:
                seen.add(real)
                ports.append(PortInfo(real, (alias,), "Raspberry Pi UART"))
    # ttyS* with no hardware behind them are listed by the kernel on most PCs: keep them last
    ports.sort(key=lambda q: (not q.usb, not q.by_id, q.device))
    return ports


@dataclass
class ProbeResult:
    """What one port received: the setting that worked, a one-line verdict, the config to paste."""

    url: str
    verdict: str = ""
    baudrate: int | None = None
    serial_format: str = ""
    protocol: str = ""
    encrypted: bool = False
    received_bytes: int = 0
    tried: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        """A meter was recognised."""
        return self.baudrate is not None

    def config_lines(self) -> list[str]:
        """The [meter] lines for this port."""
        if not self.found:
            return []
        lines = ["[meter]", f"source = {self.url}", f"protocol = {self.protocol}",
                 f"baudrate = {self.baudrate}", f"serial_format = {self.serial_format}"]
        if self.encrypted:
            lines.append("key = <32 hex digits from your grid operator>   ; or SMARTMETER_KEY")
            if "(SAG…)" in self.verdict and self.baudrate == 115200:
                lines.append("; a Sagemcom on a P1 port: in Luxembourg (Smarty) also  profile = smarty")
        return lines


def describe(reading: Reading, link: str = "") -> str:
    """'DSMR 5.0 telegram from FLU5\\253769484_A (meter 3153414733313030373231333236), CRC ok'."""
    if reading.protocol == "dsmr":
        version = reading.values.get("1-3:0.2.8") or reading.values.get("0-0:96.1.4")
        ver = ""
        digits = "" if version is None else (version.text or _digits(version.value))
        if digits:
            ver = f" {digits[0]}.{digits[1]}" if len(digits) >= 2 and digits.isdigit() else f" {digits}"
        crc = {True: "CRC ok", False: "CRC failed", None: "no CRC (DSMR 2/3)"}[reading.crc_ok]
        who = f" (meter {reading.meter_id})" if reading.meter_id else ""
        return f"DSMR{ver} telegram from {reading.header}{who}, {crc}"
    who = f" from meter {reading.meter_id}" if reading.meter_id else ""
    via = f" ({link})" if link else ""
    return f"DLMS push{via}{who} with {len(reading.values)} values"


def _digits(v: object) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v) if v is not None else ""


def _encrypted_title(data: bytes) -> str | None:
    """The system title in hex, with its maker's letters where printable: '4B464D6750000009 (KFM…)'."""
    try:
        title = split(data).system_title
    except ProtocolError:
        return None
    maker = title[:3].decode("ascii", "replace")
    return title.hex().upper() + (f" ({maker}…)" if maker.isalpha() and maker.isupper() else "")


def probe_setting(url: str, baudrate: int, serial_format: str, seconds: float,
                  key: bytes | None = None, auth_key: bytes | None = None,
                  tz: str = "Europe/Brussels") -> tuple[str, str, bool, int]:
    """Listen at one setting; (verdict or '', link kind, encrypted, bytes received)."""
    src = SerialSource(url, baudrate, serial_format, 0.2)
    framer = AutoFramer(16384)
    decoder = FrameDecoder(ZoneInfo(tz), key, auth_key)
    received = 0
    bad: list[str] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and received < MAX_PROBE_BYTES:
            chunk = src.read_some()
            received += len(chunk)
            for frame in framer.feed(chunk):
                if not frame.ok:
                    bad.append(frame.reason)
                    continue
                try:
                    reading = decoder.decode(frame, datetime.now(UTC))
                except DecryptionError as exc:
                    title = _encrypted_title(frame.data)
                    if title is not None and key is None:
                        return (f"encrypted DLMS push ({frame.link}) from system title {title}"
                                " — set [meter] key", frame.link, True, received)
                    return f"DLMS push ({frame.link}) that does not decrypt: {exc}", frame.link, True, received
                except ProtocolError as exc:
                    bad.append(str(exc))
                    continue
                return describe(reading, frame.link), frame.link, False, received
    finally:
        src.close()
    if bad:
        return "", f"{len(bad)} bad frames (first: {bad[0]})", False, received
    return "", "", False, received


def probe(url: str, seconds: float = 12.0,
          settings: tuple[tuple[int, str, str], ...] = PROBE_SETTINGS) -> ProbeResult:
    """Try each usual setting on one port until a meter is recognised."""
    res = ProbeResult(url)
    for baudrate, fmt, _what in settings:
        try:
            verdict, link, encrypted, n = probe_setting(url, baudrate, fmt, seconds)
        except SourceError as exc:
            res.verdict = f"cannot open: {exc}{_permission_hint(url, exc)}"
            return res
        res.received_bytes += n
        res.tried.append(f"{baudrate} {fmt}: {n} bytes" + (f", {link}" if link and not verdict else ""))
        if verdict:
            res.verdict, res.baudrate, res.serial_format, res.encrypted = verdict, baudrate, fmt, encrypted
            res.protocol = "dsmr" if link == "dsmr" else "dlms"
            return res
        if n == 0:  # silence is silence at any speed: the other settings would not help
            res.verdict = (f"nothing arrived in {seconds:g} s: is the meter's port enabled (Fluvius: "
                           "open it on the operator's portal), the cable plugged in, RX inverted?")
            return res
    res.verdict = "bytes arrive but no setting gives a good frame: wrong cable (RX not inverted?) or noise"
    return res


def _permission_hint(url: str, exc: BaseException) -> str:
    if "ermission" in str(exc) or isinstance(exc, PermissionError):
        user = _user()
        return f" — add {user} to the dialout group: sudo usermod -aG dialout {user}, then log in again"
    return ""


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def run_cli(probe_ports: bool, port: str | None, seconds: float | None) -> int:
    """Print the ports (and with --probe what each receives); exit 0 if a meter was found (or just listing)."""
    if port:
        targets = [PortInfo(port)]
    else:
        targets = list_ports()
        if not targets:
            print("no serial ports found: plug in the P1/USB cable, or enable the Pi's UART "
                  "(see the README's cable section)")
            return 1
    found = 0
    for info in targets:
        if not port:
            extra = ", ".join(x for x in (info.usb, info.description) if x)
            print(f"{info.device}{'  ' + extra if extra else ''}")
            for link in info.by_id:
                print(f"    {link}")
        if not probe_ports and not port:
            continue
        print(f"probing {info.best_name} ...", flush=True)
        res = probe(info.best_name, 12.0 if seconds is None else seconds)
        for t in res.tried:
            print(f"    {t}")
        print(f"  {res.verdict}")
        if res.found:
            found += 1
            print("  config:")
            for line in res.config_lines():
                print(f"    {line}")
    if probe_ports or port:
        return 0 if found else 1
    return 0
