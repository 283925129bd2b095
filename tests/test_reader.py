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
from tests.conftest import FIXTURES


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


def test_auto_baud_rate_finds_a_dsmr22_meter_on_a_real_pty(tmp_path: Path, monkeypatch: Any) -> None:
    import termios
    import threading

    from app import reader as reader_mod
    from tests.appliance import Pty

    monkeypatch.setattr(reader_mod, "AUTO_BAUD_WINDOW_S", 0.6)
    pty = Pty(tmp_path / "ttyUSB0")
    cfg = config.loads(f"[meter]\nsource = {tmp_path / 'ttyUSB0'}\nprotocol = dsmr\nbaudrate = auto\n")
    got: list[Any] = []
    stop = threading.Event()
    reader = Reader(cfg, lambda item, wait: got.append(item) or True, stop.is_set)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    telegram = (FIXTURES / "dsmr" / "iskra_mt382_dsmr2.2_1.txt").read_bytes()
    deadline = time.monotonic() + 10
    try:
        # The "meter" only makes sense at 9600 baud, as a DSMR 2.2 meter; at other settings the line is noise.
        while not any(isinstance(i, Reading) for i in got) and time.monotonic() < deadline:
            speed = termios.tcgetattr(pty.slave)[4]
            pty.write(telegram if speed == termios.B9600 else b"\x00\xff" * 100)
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(5)
        pty.close()
    readings = [i for i in got if isinstance(i, Reading)]
    assert readings and readings[0].header == "ISk5\\2MT382-1003"
    assert reader.meter.baudrate == "auto"
