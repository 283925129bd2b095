"""The rate limiter stays bounded whatever keys it is given, and still holds back repeats."""

from __future__ import annotations

import logging

from app import logutil


def test_rate_limiter_keys_stay_bounded() -> None:
    limited = logutil.RateLimited(logging.getLogger("test.logutil"), interval_s=3600.0)
    for i in range(10 * logutil.MAX_KEYS):  # a corrupt stream: a new key per frame
        limited.warning(f"shape-{i}", "odd shape %d", i)
    assert len(limited._last) <= logutil.MAX_KEYS
    assert limited.warning("again", "x") is True
    assert limited.warning("again", "x") is False  # still rate-limited
