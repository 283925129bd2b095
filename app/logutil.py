"""Logging set-up and a rate limiter for repeated warnings."""

from __future__ import annotations

import gc
import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def setup(level: str) -> None:
    """Log to stderr (journald and supervisor capture it)."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())


def settle_gc() -> None:
    """Call once a process has imported and built what it keeps: move all of that out of the
    collector's way (gc.freeze) and collect young objects less often. Readings hold no cycles,
    so reference counting frees them; without this, collections walking the imported modules
    cost more than unpickling the readings themselves. Before a fork it also keeps the collector
    from touching (and so copying) the pages the children share."""
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


MAX_KEYS = 1024  # distinct keys a RateLimited remembers


class RateLimited:
    """Log a message per key at most once per `interval_s`, saying how many were held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 60.0) -> None:
        self.logger = logger
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> bool:
        """Log now if this key was quiet long enough; return whether it was logged."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        held = self._held.pop(key, 0)
        if len(self._last) >= MAX_KEYS and key not in self._last:
            self._forget(now)
        self._last[key] = now
        if held:
            msg += f" ({held} more like this in the last {self.interval_s:g} s)"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def _forget(self, now: float) -> None:
        """Bound the keys (a corrupt stream can make a new one per frame): drop the quiet ones, else the oldest."""
        quiet = [k for k, t in self._last.items() if now - t >= self.interval_s and k not in self._held]
        for k in quiet or sorted(self._last, key=self._last.__getitem__)[: MAX_KEYS // 2]:
            self._last.pop(k, None)
            self._held.pop(k, None)

    def warning(self, key: str, msg: str, *args: object) -> bool:
        """Rate-limited warning."""
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        """Rate-limited error."""
        return self.log(logging.ERROR, key, msg, *args)
