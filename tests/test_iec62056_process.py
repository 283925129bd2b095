"""An IEC 62056-21 meter in its own reader process (app.meters.runner) against the pty simulator: its
readings come out named and with the meter's role, the P1 named fields intact."""

from __future__ import annotations

import multiprocessing
import queue
import time
from typing import Any

import pytest

from app.meters import MeterSpec
from app.meters.iec62056 import IecSettings
from app.meters.runner import run
from app.records import MeterState, Reading
from tests.test_iec62056 import SimMeter


def _collect(q: Any, want: int, timeout: float = 30.0) -> list[Any]:
    got: list[Any] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end and sum(isinstance(x, Reading) for x in got) < want:
        try:
            got.append(q.get(timeout=0.2))
        except queue.Empty:
            pass
    return got


@pytest.mark.parametrize("behaviour", ["normal", "silent"])
def test_reader_process_delivers_named_readings(behaviour: str) -> None:
    sim = SimMeter(behaviour)
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue(100)
    stop = ctx.Event()
    spec = MeterSpec(name="wien", role="grid", protocol="iec62056-21", poll_interval=0.5, offline_after=5.0,
                     settings=IecSettings(port=sim.path, timeout=0.5, timezone="Europe/Vienna", bytesize=8,
                                          parity="N"))
    p = ctx.Process(target=run, args=(spec, q, stop, "WARNING", 60.0), daemon=True)
    p.start()
    try:
        if behaviour == "silent":
            got = _collect(q, 1, timeout=4.0)
            errors = [x for x in got if isinstance(x, MeterState) and x.state == "error"]
            assert errors and "no identification" in errors[0].reason
            sim.behaviour = "normal"  # the meter answers again: the process retries on its own
        got = _collect(q, 2)
        readings = [x for x in got if isinstance(x, Reading)]
        assert len(readings) >= 2
        r = readings[-1]
        assert (r.meter, r.role, r.protocol) == ("wien", "grid", "iec62056-21")
        assert r.fields["total_consumption"] == pytest.approx(12345.678)
        assert r.seq > readings[0].seq
        assert any(isinstance(x, MeterState) and x.state == "online" for x in got)
    finally:
        stop.set()
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
        sim.close()
    assert p.exitcode == 0
