"""The history sink: readings -> quarter-hours in the SQLite store (app/store), in its own thread.

Commits at most every `[history] commit_interval` (SD-card wear) and at close. A SIGKILL or power
cut loses at most the detail since the last commit, never kWh: the committed state holds the
counters the committed quarters were computed up to, and the next reading's counters carry the rest.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping
from zoneinfo import ZoneInfo

from app.errors import ConfigError
from app.logutil import RateLimited
from app.records import Reading
from app.sinks import Sink, SinkIncomplete
from app.store.recorder import Recorder
from app.store.settings import HistoryConfig

log = logging.getLogger("app.sinks.history")


class HistorySink(Sink):
    """Writes quarters; a failing disk is retried at the next interval (the accumulator keeps the kWh)."""

    name = "history"

    def __init__(self, cfg: HistoryConfig, tz: ZoneInfo, replay: bool = False) -> None:
        self.cfg = cfg
        self.replay = replay  # a replay fills the store like --import: it never touches the live counters' state
        try:
            self.rec = Recorder(cfg.path, tz, live=not replay)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"[history] path = {cfg.path!r}: cannot open the store: {exc}", "history",
                              "path") from None
        self.last_commit = time.monotonic()
        self.limited = RateLimited(log, 60.0)
        self.failing = False
        self._closed = False

    def write(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        """Fold one reading in (no I/O here until a peak changes)."""
        self.rec.add(reading)

    def tick(self, now: float) -> None:
        """Commit every commit_interval."""
        if now - self.last_commit >= self.cfg.commit_interval:
            self.last_commit = now
            self._commit()

    def _commit(self, final: bool = False) -> bool:
        try:
            self.rec.commit(final=final, retention_s=self.cfg.retention, snapshot=not self.replay)
        except (OSError, sqlite3.Error) as exc:
            self.failing = True
            self.limited.error("commit", "cannot write the history store %s: %s; retrying", self.cfg.path, exc)
            return False
        if self.failing:
            log.info("history store writable again: %s", self.cfg.path)
            self.failing = False
        return True

    def close(self) -> None:
        """Commit everything and close the file."""
        if self._closed:
            return
        self._closed = True
        ok = self._commit(final=self.replay)
        self.rec.writer.con.close()
        if not ok:
            raise SinkIncomplete(f"history store {self.cfg.path}: the last {self.cfg.commit_interval:.0f} s "
                                 "of detail could not be written (kWh are kept by the meter's counters)")
