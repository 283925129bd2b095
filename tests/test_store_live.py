"""The history sink in the running appliance: a SIGKILL of the post-processor (power cut) loses at most the
uncommitted detail, never kWh; a restart goes on from the committed counters."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from datetime import datetime
from pathlib import Path

from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import Appliance, Pty, wait_for


def _state_t(db: Path) -> float | None:
    """The meter time the committed counters are from."""
    if not db.exists():
        return None
    con = sqlite3.connect(db, timeout=5)
    try:
        row = con.execute("SELECT state FROM meters WHERE state IS NOT NULL").fetchone()
    except sqlite3.OperationalError:
        return None
    finally:
        con.close()
    return None if row is None else float(json.loads(row[0])["t"])


def _counters(meter: SimulatedMeter) -> float:
    s = meter.state
    return sum(round(v, 3) for v in (s.import_t1_kwh, s.import_t2_kwh, s.export_t1_kwh, s.export_t2_kwh))


def _send(pty: Pty | None, meter: SimulatedMeter, n: int) -> tuple[float, float, float]:
    """`n` telegrams (None: the meter goes on, nobody reads); the first one's counters, the last one's
    meter time and counters."""
    first = last_t = 0.0
    for i in range(n):
        last_t = meter.t.timestamp()
        data = meter.next()
        if i == 0:
            first = _counters(meter)
        if pty is not None:
            pty.write(data)
            time.sleep(0.02)
    return first, last_t, _counters(meter)


def test_a_killed_post_processor_loses_no_kwh(tmp_path: Path) -> None:
    pty = Pty(tmp_path / "ttyUSB0")
    db = tmp_path / "history.sqlite"
    ini = tmp_path / "live.ini"
    ini.write_text(f"[meter]\nsource = {tmp_path / 'ttyUSB0'}\nprotocol = dsmr\n[control]\nstale_after = 1 h\n"
                   f"[history]\npath = {db}\ncommit_interval = 1 s\n")
    meter = SimulatedMeter(datetime(2026, 6, 21, 11, 50, tzinfo=BRUSSELS), step_s=10)
    app = Appliance(ini)
    try:
        app.wait_log(r"ttyUSB0")
        time.sleep(1.0)
        first, last_t, _ = _send(pty, meter, 60)
        assert wait_for(lambda: (_state_t(db) or 0) >= last_t, 30), app.log()
        _send(pty, meter, 20)  # read, perhaps not committed
        os.kill(app.pid_of("post-processor"), signal.SIGKILL)
        app.stop(timeout_s=20)
    finally:
        app.kill()
    _send(None, meter, 30)  # the appliance is down
    app = Appliance(ini)
    try:
        app.wait_log(r"ttyUSB0")
        time.sleep(1.0)
        _, last_t, last = _send(pty, meter, 40)
        assert wait_for(lambda: (_state_t(db) or 0) >= last_t, 30), app.log()
        assert app.stop() == 0, app.log()
    finally:
        app.kill()
        pty.close()
    con = sqlite3.connect(db)
    total = con.execute("SELECT SUM(imp1 + imp2 + exp1 + exp2) FROM quarters").fetchone()[0]
    con.close()
    assert abs(total - (last - first)) < 1e-6
