"""The reader loop on its own: live drops the oldest, replay waits and paces, statuses and the end mark."""

from __future__ import annotations

import multiprocessing
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from app import config
from app.reader import Reader, queue_putter
from app.records import END, ReaderStatus, Reading
from app.simulator import BRUSSELS, SimulatedMeter


def _telegrams(n: int, step_s: float = 1.0) -> bytes:
    return b"".join(SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=step_s).telegrams(n))


def test_live_full_queue_drops_the_oldest_and_counts() -> None:
    q: multiprocessing.Queue[Any] = multiprocessing.get_context("fork").Queue(maxsize=2)
    cfg = config.loads("[meter]\nprotocol = dsmr\n")
    reader = Reader(cfg, queue_putter(q), lambda: False)
    reader.handle(reader.framer.feed(_telegrams(5)))
    time.sleep(0.2)  # the queue's feeder thread
    got = [q.get(timeout=2), q.get(timeout=2)]
    assert [r.seq for r in got] == [4, 5]  # the newest two survive
    assert reader.counters.dropped == 3 and reader.counters.frames_ok == 5


def test_replay_waits_paces_by_meter_time_and_ends(tmp_path: Path) -> None:
    capture = tmp_path / "c.bin"
    capture.write_bytes(_telegrams(6, step_s=1.0))
    cfg = config.loads(f"[meter]\nprotocol = dsmr\nsource = replay:{capture}\nreplay_speed = 20\n")
    items: list[Any] = []
    t0 = time.monotonic()
    assert Reader(cfg, lambda item, wait: items.append(item) or True, lambda: False).run() == 0
    took = time.monotonic() - t0
    readings = [i for i in items if isinstance(i, Reading)]
    assert [r.seq for r in readings] == [1, 2, 3, 4, 5, 6]
    assert 5 / 20 * 0.9 <= took < 2.0  # 5 s of meter time at 20x
    assert items[-1] is END and any(isinstance(i, ReaderStatus) for i in items)


def test_fast_replay_batches_and_loses_nothing(tmp_path: Path) -> None:
    capture = tmp_path / "c.bin"
    capture.write_bytes(_telegrams(300))
    cfg = config.loads(f"[meter]\nprotocol = dsmr\nsource = replay:{capture}\n")
    items: list[Any] = []
    Reader(cfg, lambda item, wait: items.append(item) or True, lambda: False).run()
    batches = [i for i in items if isinstance(i, list)]
    assert sum(len(b) for b in batches) == 300 and len(batches) < 300
    assert items[-1] is END
