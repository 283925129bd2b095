"""What a replay's sink queues may hold: a sink that falls behind in a fast replay makes the loop wait
(nothing is dropped) once its queue is full, and a full queue is a few MB, not the 15 MB per queue
that the soak benchmark's post-processor kept after such a burst."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Mapping
from datetime import UTC, datetime

from gpiozero.pins.mock import MockFactory

from app.config import loads
from app.framing.auto import make_framer
from app.pipeline import PostProcessor
from app.protocols.dsmr import DsmrDecoder
from app.records import Reading
from app.simulator import BRUSSELS, SimulatedMeter
from app.sinks import Sink

QUEUE_BUDGET_B = 3_000_000  # per sink queue, full of simulated Fluvius readings


class Stuck(Sink):
    """A lossless sink that takes nothing until released."""

    name = "stuck"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.written = 0

    def write(self, reading: Reading, relays: Mapping[str, bool]) -> None:
        self.release.wait(30)
        self.written += 1


def readings(n: int) -> list[Reading]:
    meter = SimulatedMeter(datetime(2026, 6, 21, tzinfo=BRUSSELS), step_s=1.0, seed=3)
    frames = make_framer("dsmr").feed(b"".join(meter.telegrams(n)))
    decoder = DsmrDecoder(BRUSSELS)
    return [decoder.decode(f, datetime.now(UTC), i + 1) for i, f in enumerate(frames)]


def test_a_replay_sink_queue_full_of_readings_stays_within_budget(tmp_path: object) -> None:
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        sample = readings(200)
        per_reading_b = (tracemalloc.get_traced_memory()[0] - before) / len(sample)
    finally:
        tracemalloc.stop()
    cfg = loads("[meter]\nsource = replay:/dev/null\nreplay_speed = 0\n[history]\nenabled = no\n")
    stuck = Stuck()
    pp = PostProcessor(cfg, sinks=[stuck], pin_factory=MockFactory())
    pp.start()
    (worker,) = pp.workers
    fed = threading.Thread(target=lambda: [pp.dispatch(r) for r in readings(worker.q.maxsize + 50)])
    try:
        assert worker.q.maxsize * per_reading_b <= QUEUE_BUDGET_B, (worker.q.maxsize, per_reading_b)
        fed.start()
        fed.join(2.0)
        assert fed.is_alive()  # the replay waits for the sink: nothing dropped, nothing more held
        assert worker.q.qsize() <= worker.q.maxsize
    finally:
        stuck.release.set()
        if fed.is_alive():
            fed.join(30)
        pp.close(timeout_s=30)
    assert stuck.written == worker.q.maxsize + 50
