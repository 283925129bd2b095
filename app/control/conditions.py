"""Relay conditions: `<quantity> <op> <number> [unit] [for <duration>]` (placeholder; see issue 3)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Condition:
    """A parsed condition; threshold in the quantity's base unit (W, A, V)."""

    text: str
    quantity: str
    op: str
    threshold: float
    duration_s: float = 0.0
    mean_window_s: float | None = None


def parse_condition(text: str) -> Condition:
    """Parse a condition; raise ValueError saying what is wrong."""
    raise ValueError("conditions are not implemented yet")
