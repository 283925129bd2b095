"""Modbus register maps as data, and their decoding (pure: words in, numbers out).

A register holds 16 bits, sent big-endian. Wider values span consecutive registers; which word
comes first is the meter's `word_order`:

    float32 / int32 / uint32   2 registers   big: [high, low] (ABCD)   little: [low, high] (CDAB)
    uint64 / int64             4 registers   big: most significant word first; little: least first
    int16 / uint16             1 register

`value = raw * scale` (a register holding 0.1 V steps has scale 0.1). A 32-bit value split over
two registers that are not neighbours (`register_energy_high` + `register_energy`) is read as
[high, low] from its two addresses.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

TYPES: dict[str, tuple[int, str]] = {  # type -> (registers, struct format of its big-endian bytes)
    "int16": (1, ">h"),
    "uint16": (1, ">H"),
    "int32": (2, ">i"),
    "uint32": (2, ">I"),
    "float32": (2, ">f"),
    "int64": (4, ">q"),
    "uint64": (4, ">Q"),
}
WORD_ORDERS = ("big", "little")
TABLES = ("input", "holding")
MAX_READ = 125  # registers per Modbus read request (the protocol's limit)
MAX_GAP = 16  # unused registers a read may span to save a request


@dataclass(frozen=True, slots=True)
class Register:
    """One quantity in a meter's register map."""

    quantity: str  # power_w | import_kwh | export_kwh | voltage_v | current_a | power_factor | frequency_hz
    address: int  # 0-based protocol address (the PDU's), not the 30001/40001 document number
    type: str = "float32"
    scale: float = 1.0
    word_order: str = "big"
    table: str = "input"
    high: int | None = None  # a 32-bit value split over two separate registers: the high word's address

    @property
    def count(self) -> int:
        """Registers this value spans at `address` (1 for the low word of a split value)."""
        return 1 if self.high is not None else TYPES[self.type][0]

    def addresses(self) -> tuple[int, ...]:
        """Every register address this value reads."""
        own = tuple(range(self.address, self.address + self.count))
        return own if self.high is None else (self.high, *own)


def decode(words: Sequence[int], type_: str, word_order: str = "big") -> float:
    """The raw number in `words` (16-bit register values, in address order)."""
    n, fmt = TYPES[type_]
    if len(words) != n:
        raise ValueError(f"{type_} needs {n} registers, got {len(words)}")
    ordered = words if word_order == "big" else tuple(reversed(words))
    raw = b"".join((w & 0xFFFF).to_bytes(2, "big") for w in ordered)
    return float(struct.unpack(fmt, raw)[0])


def encode(value: float, type_: str, word_order: str = "big") -> list[int]:
    """The registers holding raw `value` (the inverse of `decode`; used by simulators and tests)."""
    n, fmt = TYPES[type_]
    raw = struct.pack(fmt, value if type_ == "float32" else int(value))
    words = [int.from_bytes(raw[i:i + 2], "big") for i in range(0, 2 * n, 2)]
    return words if word_order == "big" else list(reversed(words))


def value_of(reg: Register, registers: Mapping[int, int]) -> float | None:
    """The scaled value of `reg` from a map address -> register value (None: a NaN the meter sends
    for "not available", e.g. ABB's all-ones)."""
    if reg.high is not None:
        words: Sequence[int] = (registers[reg.high], registers[reg.address])
        raw = decode(words, "int32" if reg.type.startswith("int") else "uint32", "big")
    else:
        words = [registers[a] for a in reg.addresses()]
        raw = decode(words, reg.type, reg.word_order)
    if math.isnan(raw) or math.isinf(raw):
        return None
    return raw * reg.scale


def encode_into(reg: Register, value: float, registers: dict[int, int]) -> None:
    """Write scaled `value` into a map address -> register value the way `value_of` reads it."""
    raw = value / reg.scale
    if reg.type != "float32":
        raw = round(raw)
    if reg.high is not None:
        hi, lo = encode(raw, "int32" if reg.type.startswith("int") else "uint32", "big")
        registers[reg.high], registers[reg.address] = hi, lo
        return
    for a, w in zip(reg.addresses(), encode(raw, reg.type, reg.word_order), strict=True):
        registers[a] = w


def plan_reads(regs: Iterable[Register]) -> list[tuple[str, int, int]]:
    """The few read requests (table, start, count) that cover every register: neighbours and small
    gaps are merged, no request longer than MAX_READ."""
    by_table: dict[str, set[int]] = {}
    for reg in regs:
        by_table.setdefault(reg.table, set()).update(reg.addresses())
    out: list[tuple[str, int, int]] = []
    for table in TABLES:
        addrs = sorted(by_table.get(table, ()))
        start = end = -1
        for a in addrs:
            if start < 0:
                start = end = a
            elif a - end <= MAX_GAP + 1 and a - start < MAX_READ:
                end = a
            else:
                out.append((table, start, end - start + 1))
                start = end = a
        if start >= 0:
            out.append((table, start, end - start + 1))
    return out


def check_register(reg: Register) -> None:
    """ValueError for a map row that cannot work (unknown type, order or table; bad address)."""
    if reg.type not in TYPES:
        raise ValueError(f"unknown type {reg.type!r} (use {', '.join(TYPES)})")
    if reg.word_order not in WORD_ORDERS:
        raise ValueError(f"unknown word order {reg.word_order!r} (use big or little)")
    if reg.table not in TABLES:
        raise ValueError(f"unknown register table {reg.table!r} (use input or holding)")
    for a in reg.addresses():
        if not 0 <= a <= 0xFFFF:
            raise ValueError(f"register address {a} outside 0..65535")
    if reg.high is not None and TYPES[reg.type][0] != 2:
        raise ValueError(f"a split value (register_*_high) is 32 bits: type {reg.type!r} does not fit")
    if reg.scale == 0 or math.isnan(reg.scale):
        raise ValueError("scale must be a non-zero number")
