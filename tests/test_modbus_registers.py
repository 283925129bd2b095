"""Register decoding (pure): any type, word order and scale round-trips; read plans cover every register."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.meters.registers import (
    MAX_READ,
    TYPES,
    Register,
    check_register,
    decode,
    encode,
    encode_into,
    plan_reads,
    value_of,
)

RANGES = {"int16": (-(1 << 15), (1 << 15) - 1), "uint16": (0, (1 << 16) - 1), "int32": (-(1 << 31), (1 << 31) - 1),
          "uint32": (0, (1 << 32) - 1), "int64": (-(1 << 63), (1 << 63) - 1), "uint64": (0, (1 << 64) - 1)}


@st.composite
def raw_values(draw: st.DrawFn) -> tuple[str, float]:
    t = draw(st.sampled_from(sorted(TYPES)))
    if t == "float32":
        v = draw(st.floats(width=32, allow_nan=False, allow_infinity=False))
    else:
        lo, hi = RANGES[t]
        v = draw(st.integers(lo, hi))
    return t, v


@given(raw_values(), st.sampled_from(["big", "little"]))
def test_decode_inverts_encode_for_any_type_and_word_order(tv: tuple[str, float], order: str) -> None:
    t, v = tv
    words = encode(v, t, order)
    assert len(words) == TYPES[t][0] and all(0 <= w <= 0xFFFF for w in words)
    assert decode(words, t, order) == float(v)  # 64-bit counters beyond 2**53 round like any float


@given(raw_values())
def test_little_word_order_is_the_big_one_reversed(tv: tuple[str, float]) -> None:
    t, v = tv
    assert encode(v, t, "little") == list(reversed(encode(v, t, "big")))


@given(st.sampled_from(["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64"]),
       st.sampled_from(["big", "little"]), st.sampled_from([1.0, 0.1, 0.01, 0.001, 10.0, 1000.0]),
       st.integers(0, 60000), st.floats(-30000, 30000, allow_nan=False), st.booleans())
def test_scaled_values_round_trip_to_one_step(t: str, order: str, scale: float, address: int, value: float,
                                              split: bool) -> None:
    if t.startswith("uint"):
        value = abs(value)
    if t.endswith("16"):
        value = max(min(value, 32767 * scale), -32768 * scale) if t == "int16" else min(value, 65535 * scale)
    high = address + 100 if split and TYPES[t][0] == 2 and address + 100 <= 0xFFFF else None
    if high is not None and t == "float32":
        high = None
    reg = Register("power_w", address, t, scale, order, "holding", high)
    check_register(reg)
    regs: dict[int, int] = {}
    encode_into(reg, value, regs)
    got = value_of(reg, regs)
    assert got is not None
    step = 0.0 if t == "float32" else scale
    assert math.isclose(got, value, rel_tol=1e-6, abs_tol=step / 2 + 1e-9)


@given(st.lists(st.tuples(st.integers(0, 2000), st.sampled_from(sorted(TYPES)), st.sampled_from(["input", "holding"])),
                min_size=1, max_size=20))
def test_the_read_plan_covers_every_register_within_the_protocol_limit(rows: list[tuple[int, str, str]]) -> None:
    regs = [Register("power_w", a, t, 1.0, "big", table) for a, t, table in rows]
    plan = plan_reads(regs)
    covered = {(table, a) for table, start, count in plan for a in range(start, start + count)}
    for reg in regs:
        for a in reg.addresses():
            assert (reg.table, a) in covered
    assert all(1 <= count <= MAX_READ for _t, _s, count in plan)


def test_ten_neighbouring_registers_are_one_request() -> None:
    regs = [Register(f"q{i}", 2 * i, "float32") for i in range(5)]
    assert plan_reads(regs) == [("input", 0, 10)]


def test_nan_from_the_meter_is_no_value() -> None:
    reg = Register("power_w", 0, "float32")
    regs: dict[int, int] = {}
    encode_into(reg, float("nan"), regs)
    assert value_of(reg, regs) is None


@pytest.mark.parametrize(("reg", "why"), [
    (Register("power_w", 0, "int8"), "unknown type"),
    (Register("power_w", 0, word_order="middle"), "unknown word order"),
    (Register("power_w", 0, table="coils"), "unknown register table"),
    (Register("power_w", 65535, "float32"), "outside"),
    (Register("power_w", 0, "float32", 0.0), "non-zero"),
])
def test_bad_rows_say_why(reg: Register, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        check_register(reg)
