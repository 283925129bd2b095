"""End to end: bytes into a real pty -> reader process -> post-processor -> CSV, relays on mock pins."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from tests.appliance import Appliance, Pty, csv_rows, ini_template, process_alive, simulated_meter, wait_for
from tests.conftest import FIXTURES

INI = ini_template("3 s")


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[Path, Path, Pty]:
    pty = Pty(tmp_path / "ttyP1")
    ini = tmp_path / "app.ini"
    ini.write_text(INI.format(source=tmp_path / "ttyP1", csv=tmp_path / "csv"))
    yield ini, tmp_path / "csv", pty
    pty.close()


def test_pty_to_csv_survives_unplug_and_sigterm(setup: tuple[Path, Path, Pty]) -> None:
    ini, csv_dir, pty = setup
    app = Appliance(ini)
    try:
        app.wait_log(r"reading .*ttyP1")
        meter = simulated_meter()
        for _ in range(5):
            pty.write(meter.next())
        assert wait_for(lambda: len(csv_rows(csv_dir)) == 5, 15), app.log()
        # USB pulled: the reader logs it, retries with backoff, carries on once it is back.
        pty.unplug()
        app.wait_log(r"lost .*ttyP1|cannot open .*ttyP1")
        time.sleep(1.0)
        pty.plug()
        app.wait_log(r"reading .*ttyP1.*\n(.*\n)*.*reading .*ttyP1", 15)
        for _ in range(5):
            pty.write(meter.next())
        assert wait_for(lambda: len(csv_rows(csv_dir)) == 10, 15), app.log()
        t0 = time.monotonic()
        code = app.stop(signal.SIGTERM)
        assert code == 0, app.log()
        assert time.monotonic() - t0 < 2.5
    finally:
        app.kill()
    rows = csv_rows(csv_dir)
    assert len(rows) == 10 and all(len(r) == len(rows[0]) for r in rows)
    header = next(csv_dir.glob("*.csv")).read_text().splitlines()[0].split(";")
    assert header[0] == "timestamp" and header[-1] == "relay_boiler"
    assert rows[0][0] == "2026-06-21T12:00:00+02:00"
    log = app.log()
    assert "relay boiler -> on" in log  # noon: the simulated house exports
    assert "relay boiler -> off (shutdown" in log or "already in its safe state" in log


def test_replay_drains_flushes_and_exits_0(tmp_path: Path) -> None:
    ini = tmp_path / "r.ini"
    ini.write_text(INI.format(source="/dev/null", csv=tmp_path / "csv"))
    app = Appliance(ini, "--replay", str(FIXTURES / "dsmr" / "iskra_am550-stream_dsmr5.0_1.txt"),
                    "--replay-speed", "0")
    code = app.proc.wait(timeout=30)
    app.kill()
    assert code == 0, app.log()
    rows = csv_rows(tmp_path / "csv")
    assert len(rows) == 5
    assert rows[0][0] == "2019-03-24T15:05:19+01:00"


def test_reader_sigkill_puts_relays_safe_and_exits_non_zero(setup: tuple[Path, Path, Pty]) -> None:
    ini, csv_dir, pty = setup
    app = Appliance(ini)
    try:
        reader = app.pid_of("reader")
        app.wait_log(r"reading .*ttyP1")
        meter = simulated_meter()
        for _ in range(3):
            pty.write(meter.next())
        app.wait_log(r"relay boiler -> on")
        t0 = time.monotonic()
        os.kill(reader, signal.SIGKILL)
        code = app.proc.wait(timeout=10)
        assert code != 0
        assert time.monotonic() - t0 < 3.0
    finally:
        app.kill()
    log = app.log()
    assert "reader exited" in log
    assert "relay boiler -> off (reader process died" in log


def test_postprocessor_sigkill_stops_the_reader_and_exits_non_zero(setup: tuple[Path, Path, Pty]) -> None:
    ini, _csv, _pty = setup
    app = Appliance(ini)
    try:
        post = app.pid_of("post-processor")
        reader = app.pid_of("reader")
        os.kill(post, signal.SIGKILL)
        code = app.proc.wait(timeout=10)
        assert code == 1
        assert wait_for(lambda: not process_alive(reader), 5)
    finally:
        app.kill()
    assert "post-processor exited" in app.log()


def test_stale_data_puts_relays_safe(setup: tuple[Path, Path, Pty]) -> None:
    ini, _csv, pty = setup
    app = Appliance(ini)
    try:
        app.wait_log(r"reading .*ttyP1")
        meter = simulated_meter()
        for _ in range(3):
            pty.write(meter.next())
        app.wait_log(r"relay boiler -> on")
        app.wait_log(r"relay boiler -> off \(.*stale", 10)  # stale_after = 3 s of wall clock
    finally:
        app.stop()
        app.kill()


def test_replay_twice_over_the_same_csv_adds_no_duplicates(tmp_path: Path) -> None:
    ini = tmp_path / "r.ini"
    ini.write_text(INI.format(source="/dev/null", csv=tmp_path / "csv"))
    for _ in range(2):
        app = Appliance(ini, "--replay", str(FIXTURES / "dsmr" / "iskra_am550-stream_dsmr5.0_1.txt"),
                        "--replay-speed", "0")
        code = app.proc.wait(timeout=30)
        app.kill()
        assert code == 0, app.log()
    stamps = [r[0] for r in csv_rows(tmp_path / "csv")]
    assert len(stamps) == 5 and len(set(stamps)) == 5
    assert "5 rows not written again" in app.log()


def test_demo_shows_no_lag_and_a_rerun_adds_no_duplicate_rows(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    from app import demo

    out = tmp_path / "demo"
    assert demo.main(seconds=6.0, out_dir=str(out)) == 0
    first = csv_rows(out / "csv")
    log = (out / "smartmeter.log").read_text()
    assert not re.search(r"lag -?\d", log)  # a simulated meter 144x faster than real time has no transport lag
    assert "x real time (a simulated or sped-up source)" in log
    assert "first telegram from meter" in log
    assert demo.main(seconds=6.0, out_dir=str(out)) == 0  # `make demo` again over the same data
    stamps = [r[0] for r in csv_rows(out / "csv")]
    assert len(stamps) == len(set(stamps)) >= len(first) > 0
    assert "rows not written again" in (out / "smartmeter.log").read_text()
