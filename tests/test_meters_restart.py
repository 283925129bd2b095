"""Main restarts a [meter:NAME] process that died or hung: backoff doubling to a cap, reset after a
process that lived a while, one log line per restart with its count; the other children go on."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from app import supervision
from app.supervision import METER, SERVICE, Child, Supervisor, restart_delay
from tests.appliance import wait_for


def _dies(log_path: str, heartbeat: Any) -> None:
    """A meter process that fails at once (after noting its start)."""
    with open(log_path, "a") as fh:
        fh.write(f"{os.getpid()} {time.monotonic()}\n")
    heartbeat.beat()
    os._exit(3)


def _hangs(log_path: str, heartbeat: Any) -> None:
    """A meter process that beats once, then never again."""
    with open(log_path, "a") as fh:
        fh.write(f"{os.getpid()} {time.monotonic()}\n")
    heartbeat.beat()
    time.sleep(3600)


def _service(stop: Any, heartbeat: Any) -> None:
    """Another child that ticks until stopped."""
    while not stop.is_set():
        heartbeat.beat()
        time.sleep(0.05)


def _starts(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    return [(int(p), float(t)) for p, t in (line.split() for line in path.read_text().splitlines())]


def _supervise(target: Any, path: Path, until: int, monkeypatch: pytest.MonkeyPatch,
               caplog: pytest.LogCaptureFixture, code: int = 0) -> tuple[list[tuple[int, float]], Supervisor]:
    monkeypatch.setattr(supervision, "RESTART_FIRST_S", 0.2)
    monkeypatch.setattr(supervision, "RESTART_MAX_S", 0.8)
    ctx = multiprocessing.get_context("fork")
    stop = ctx.Event()
    children = [Child("meter-pv", METER, target, (str(path),)), Child("web", SERVICE, _service, (stop,))]
    sup = Supervisor(ctx, children, stop, ctx.Event())
    codes: list[int] = []

    def stopper() -> None:
        wait_for(lambda: len(_starts(path)) >= until, 60)
        sup.request_stop("test")

    t = threading.Thread(target=stopper, daemon=True)
    with caplog.at_level(logging.INFO, logger="app.main"):
        sup.start()
        t.start()
        codes.append(sup.run())
    t.join(5)
    assert codes == [code]  # the meter's failures never stopped the appliance (a hung one fails the stop)
    return _starts(path), sup


def test_restart_delay_doubles_to_the_cap() -> None:
    assert [restart_delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert restart_delay(10_000) == 60


def test_a_dying_meter_is_restarted_with_backoff_and_the_rest_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    starts, sup = _supervise(_dies, tmp_path / "starts", 6, monkeypatch, caplog)
    assert len(starts) >= 6 and len({pid for pid, _ in starts}) == len(starts)  # a new process each time
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(starts)]
    for n, gap in enumerate(gaps[:5], start=1):  # lower bounds only: a loaded machine is only ever slower
        assert gap >= min(0.8, 0.2 * 2 ** (n - 1)) * 0.95, gaps
    text = caplog.text
    for n in range(1, 6):
        assert f"meter-pv restarted (restart {n} in a row, {n} since the start)" in text
        assert text.count(f"(restart {n} in a row,") == 1  # one line per restart
    assert "meter-pv exited (code 3); its meter is offline until restart 1 in 0.2 s (1 in a row)" in text
    assert "until restart 5 in 0.8 s (5 in a row)" in text  # capped
    web = next(c for c in sup.children if c.name == "web")
    assert web.restarts_total == 0 and web.proc.exitcode == 0  # the other child ran on and stopped cleanly


def test_a_hung_meter_is_killed_and_restarted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(supervision, "HUNG_S", 0.5)
    starts, _ = _supervise(_hangs, tmp_path / "starts", 3, monkeypatch, caplog, code=1)
    assert len(starts) >= 3
    assert "meter-pv hung (no heartbeat for" in caplog.text
    assert "meter-pv restarted (restart 2 in a row, 2 since the start)" in caplog.text
    for pid, _ in starts:
        assert wait_for(lambda p=pid: not os.path.exists(f"/proc/{p}") or _zombie(p), 10)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped between open() and read()
        return True


def test_a_meter_that_lived_a_minute_starts_the_backoff_afresh(monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = multiprocessing.get_context("fork")
    c = Child("meter-pv", METER, _service)
    sup = Supervisor(ctx, [c], ctx.Event(), ctx.Event())
    now = time.monotonic()
    for n in range(1, 5):  # quick deaths: the delay doubles
        c.started_at = now
        assert sup._failed(c, "exited (code 1)", 1) is None
        assert c.restarts == n and c.restart_at is not None
        assert c.restart_at - now == pytest.approx(restart_delay(n), abs=1.0)
    c.started_at = now - supervision.RESTART_RESET_S - 1  # then a minute of health
    sup._failed(c, "exited (code 1)", 1)
    assert c.restarts == 1 and c.restarts_total == 5
