"""Modbus meters (`protocol = modbus`): TCP, RTU on a serial port, RTU over TCP; register maps as data.

    [meter:pv]
    protocol = modbus
    source = tcp://192.168.1.50:502         ; or rtu:///dev/ttyUSB1?baudrate=9600&parity=N&stopbits=1
    unit_id = 1                              ;    or rtu+tcp://192.168.1.60:4196 (a serial gateway)
    preset = sdm630                          ; or register_* keys (below), which also override a preset's rows

pymodbus is imported by `open_poller`, and by main before the fork when a Modbus meter is configured (app.meters
SHARED_IMPORTS: the meter processes then share its pages); the map, its parsing and the decoding
(app.meters.registers) are pure.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from app.meters.registers import TABLES, TYPES, WORD_ORDERS, Register, check_register, plan_reads, value_of
from app.meters.sample import MeterError, Sample

if TYPE_CHECKING:
    from app.config import Section
    from app.meters import MeterSpec

log = logging.getLogger("app.meters.modbus")
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_ROLE = "building"

# quantity -> the WAGO guide's key stem
QUANTITY_KEYS: dict[str, str] = {
    "power_w": "power",
    "import_kwh": "energy",
    "export_kwh": "energy_export",
    "voltage_v": "voltage",
    "current_a": "current",
    "power_factor": "power_factor",
    "frequency_hz": "frequency",
}


def _rows(table: str, type_: str, order: str, rows: dict[str, tuple[int, float] | tuple[int, float, str]]
          ) -> tuple[Register, ...]:
    out = []
    for quantity, row in rows.items():
        address, scale = row[0], row[1]
        t = row[2] if len(row) > 2 else type_
        out.append(Register(quantity, address, t, scale, order, table))
    return tuple(out)


# Presets: 0-based protocol addresses. Sources: the vendors' register documents, cross-checked with
# volkszaehler/mbmd meters/rs485/{sdm,sdm120,abb,iem3000,carlogavazzi-em24}.go (see the README table).
PRESETS: dict[str, tuple[Register, ...]] = {
    # Eastron SDM630 Modbus protocol v1.x: input registers, IEEE 754 float, high word first; W, kWh, V, A, Hz
    "sdm630": _rows("input", "float32", "big", {
        "voltage_v": (0x0000, 1.0), "current_a": (0x0006, 1.0), "power_w": (0x0034, 1.0),
        "power_factor": (0x003E, 1.0), "frequency_hz": (0x0046, 1.0),
        "import_kwh": (0x0048, 1.0), "export_kwh": (0x004A, 1.0)}),
    # Eastron SDM120-Modbus: as the SDM630, single phase (power at 0x000C)
    "sdm120": _rows("input", "float32", "big", {
        "voltage_v": (0x0000, 1.0), "current_a": (0x0006, 1.0), "power_w": (0x000C, 1.0),
        "power_factor": (0x001E, 1.0), "frequency_hz": (0x0046, 1.0),
        "import_kwh": (0x0048, 1.0), "export_kwh": (0x004A, 1.0)}),
    # ABB B21/B23/B24 (B-series manual, 2CMC485003M0201): holding registers, integers, high word first
    "abb_b23": _rows("holding", "int32", "big", {
        "voltage_v": (0x5B00, 0.1, "uint32"), "current_a": (0x5B0C, 0.01, "uint32"),
        "power_w": (0x5B14, 0.01, "int32"), "frequency_hz": (0x5B2C, 0.01, "uint16"),
        "power_factor": (0x5B3A, 0.001, "int16"),
        "import_kwh": (0x5000, 0.01, "uint64"), "export_kwh": (0x5004, 0.01, "uint64")}),
    # Schneider iEM3150/3250/3350 (DOCA0005): holding registers, float32, power in kW, energy in kWh
    "iem3000": _rows("holding", "float32", "big", {
        "voltage_v": (0x5002, 1.0), "frequency_hz": (0x5008, 1.0), "current_a": (0x500C, 1.0),
        "power_w": (0x5012, 1000.0), "power_factor": (0x502A, 1.0),
        "import_kwh": (0x600C, 1.0), "export_kwh": (0x6018, 1.0)}),
    # Carlo Gavazzi EM24 (EM24 communication protocol): input registers, INT32 low word first
    "em24": _rows("input", "int32", "little", {
        "voltage_v": (0x0000, 0.1), "current_a": (0x000C, 0.001), "power_w": (0x0028, 0.1),
        "power_factor": (0x0035, 0.001, "int16"), "frequency_hz": (0x0037, 0.1, "int16"),
        "import_kwh": (0x0042, 0.1), "export_kwh": (0x005C, 0.1)}),
}


@dataclass(frozen=True)
class ModbusSettings:
    """The modbus keys of one [meter:NAME]."""

    source: str
    transport: str  # tcp | rtu | rtu+tcp
    host: str = ""
    port: int = 502
    device: str = ""
    baudrate: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    unit_id: int = 1
    timeout: float = 1.0
    preset: str = ""
    registers: tuple[Register, ...] = ()


KEYS = frozenset({"source", "unit_id", "timeout", "preset", "word_order", "register_table"}
                 | {f"register_{k}{s}" for k in QUANTITY_KEYS.values()
                    for s in ("", "_high", "_scale", "_type", "_word_order", "_table")})


def parse_source(text: str) -> dict[str, Any]:
    """`tcp://host:502`, `rtu+tcp://host:4196` or `rtu:///dev/ttyUSB1?baudrate=9600&parity=N&stopbits=1`."""
    u = urlsplit(text.strip())
    scheme = u.scheme.lower()
    if scheme in ("tcp", "rtu+tcp", "rtuovertcp"):
        if not u.hostname:
            raise ValueError(f"no host in {text!r} (e.g. tcp://192.168.1.50:502)")
        try:
            port = u.port or 502
        except ValueError:
            raise ValueError(f"bad port in {text!r}") from None
        return {"transport": "tcp" if scheme == "tcp" else "rtu+tcp", "host": u.hostname, "port": port}
    if scheme == "rtu":
        device = u.path
        if not device:
            raise ValueError(f"no serial device in {text!r} (e.g. rtu:///dev/ttyUSB1?baudrate=9600)")
        q = {k.lower(): v[-1] for k, v in parse_qs(u.query).items()}
        unknown = set(q) - {"baudrate", "parity", "stopbits", "bytesize"}
        if unknown:
            raise ValueError(f"unknown option {sorted(unknown)[0]!r} (use baudrate, parity, stopbits, bytesize)")
        out: dict[str, Any] = {"transport": "rtu", "device": device}
        try:
            out["baudrate"] = int(q.get("baudrate", "9600"))
            out["stopbits"] = int(q.get("stopbits", "1"))
            out["bytesize"] = int(q.get("bytesize", "8"))
        except ValueError:
            raise ValueError("baudrate, stopbits and bytesize are whole numbers") from None
        out["parity"] = q.get("parity", "N").upper()
        if out["parity"] not in ("N", "E", "O"):
            raise ValueError("parity is N, E or O")
        if out["stopbits"] not in (1, 2) or out["bytesize"] not in (7, 8):
            raise ValueError("stopbits is 1 or 2, bytesize 7 or 8")
        return out
    raise ValueError("expected tcp://HOST[:PORT], rtu+tcp://HOST:PORT or rtu:///dev/DEVICE?baudrate=9600")


def parse_settings(sec: Section, name: str) -> ModbusSettings:
    """The modbus keys of [meter:NAME]: source, unit_id, a preset and/or register_* rows."""
    from app.errors import ConfigError

    source = sec.text("source", "")
    if not source:
        raise ConfigError(f"[{sec.name}] source: missing (e.g. tcp://192.168.1.50:502)", sec.name, "source")
    where: dict[str, Any] = sec.get("source", {}, parse_source)
    preset = sec.choice("preset", "", ("", *PRESETS))
    default_order = sec.choice("word_order", "big", WORD_ORDERS)
    default_table = sec.choice("register_table", "holding", TABLES)
    rows = {r.quantity: r for r in PRESETS.get(preset, ())}
    for quantity, stem in QUANTITY_KEYS.items():
        key = f"register_{stem}"
        address = sec.get(key, None, _address)
        prev = rows.get(quantity)
        if address is None:
            for suffix in ("_high", "_scale", "_type", "_word_order", "_table"):
                if f"{key}{suffix}" in sec.items:
                    raise ConfigError(f"[{sec.name}] {key}{suffix}: needs {key} (the register's address)",
                                      sec.name, f"{key}{suffix}")
            continue
        reg = Register(
            quantity=quantity,
            address=address,
            type=sec.choice(f"{key}_type", prev.type if prev else ("uint16" if quantity != "power_w" else "int16"),
                            tuple(TYPES)),
            scale=sec.number(f"{key}_scale", prev.scale if prev else 1.0),
            word_order=sec.choice(f"{key}_word_order", prev.word_order if prev and "word_order" not in sec.items
                                  else default_order, WORD_ORDERS),
            table=sec.choice(f"{key}_table", prev.table if prev and "register_table" not in sec.items
                             else default_table, TABLES),
            high=sec.get(f"{key}_high", None, _address),
        )
        if reg.high is not None and reg.type in ("int16", "uint16"):
            reg = Register(reg.quantity, reg.address, "uint32" if reg.type == "uint16" else "int32", reg.scale,
                           reg.word_order, reg.table, reg.high)
        try:
            check_register(reg)
        except ValueError as exc:
            raise ConfigError(f"[{sec.name}] {key} = {address}: {exc}", sec.name, key) from None
        rows[quantity] = reg
    if not rows:
        raise ConfigError(f"[{sec.name}] preset: missing (use one of {', '.join(PRESETS)}, or register_power = "
                          "ADDRESS and friends)", sec.name, "preset")
    return ModbusSettings(
        source=source,
        unit_id=sec.integer("unit_id", 1, lo=0, hi=247),
        timeout=sec.duration("timeout", 1.0, lo=0.05, hi=1.0),  # a stop waits at most this (main: 1.9 s)
        preset=preset,
        registers=tuple(rows.values()),
        **where,
    )


def _address(text: str) -> int:
    """A register address: decimal or 0x hex, 0..65535 (the protocol address, not 30001/40001 style)."""
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError("expected a register address (e.g. 20480 or 0x5000)") from None
    if not 0 <= value <= 0xFFFF:
        raise ValueError("a register address is 0..65535")
    return value


def sample_from(registers: dict[int, int], regs: tuple[Register, ...]) -> Sample:
    """The Sample that a map of address -> register value gives (pure)."""
    values: dict[str, float] = {}
    for reg in regs:
        v = value_of(reg, registers)
        if v is not None and not math.isnan(v):
            values[reg.quantity] = v
    return Sample(**values)  # type: ignore[arg-type]


class ModbusPoller:
    """One meter over pymodbus's synchronous client: every poll reads the planned blocks."""

    def __init__(self, spec: MeterSpec) -> None:
        from pymodbus.client import ModbusSerialClient, ModbusTcpClient
        from pymodbus.framer import FramerType

        logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # our own lines carry the reason, rate-limited
        s: ModbusSettings = spec.settings
        self.s = s
        self.plan = plan_reads(s.registers)
        self.client: Any
        if s.transport == "rtu":
            self.client = ModbusSerialClient(s.device, baudrate=s.baudrate, parity=s.parity, stopbits=s.stopbits,
                                             bytesize=s.bytesize, timeout=s.timeout, retries=0)
        else:
            framer = FramerType.SOCKET if s.transport == "tcp" else FramerType.RTU
            self.client = ModbusTcpClient(s.host, port=s.port, framer=framer, timeout=s.timeout, retries=0)

    def poll(self) -> Sample:
        """Read every block; MeterError with the reason on no connection, no answer or an exception."""
        from pymodbus.exceptions import ModbusException

        c = self.client
        if not c.connected and not c.connect():
            where = self.s.device or f"{self.s.host}:{self.s.port}"
            raise MeterError(f"cannot connect to {where}")
        words: dict[int, int] = {}
        for table, start, count in self.plan:
            read: Callable[..., Any] = c.read_input_registers if table == "input" else c.read_holding_registers
            try:
                rr = read(start, count=count, device_id=self.s.unit_id)
            except ModbusException as exc:
                c.close()  # a fresh connection next time: a half-read answer must not be taken for the next
                raise MeterError(f"no answer reading {table} registers {start}..{start + count - 1}: "
                                 f"{_short(exc)}") from None
            if rr.isError():
                raise MeterError(f"unit {self.s.unit_id} answered {table} registers {start}..{start + count - 1} "
                                 f"with an exception ({_short(rr)})")
            regs = list(rr.registers)
            if len(regs) < count:
                raise MeterError(f"short answer: {len(regs)} of {count} registers from {start}")
            words.update(zip(range(start, start + count), regs, strict=False))
        return sample_from(words, self.s.registers)

    def close(self) -> None:
        """Release the connection or port."""
        self.client.close()


def _short(obj: object) -> str:
    return " ".join(str(obj).split())[:160]


def open_poller(spec: MeterSpec) -> ModbusPoller:
    """The poller for [meter:NAME] (pymodbus is imported here unless main imported it before the fork)."""
    return ModbusPoller(spec)
