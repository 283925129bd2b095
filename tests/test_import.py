"""`--import`: captures and CSV day files fill the store; importing twice changes nothing."""

from __future__ import annotations

import sqlite3
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import Appliance
from tests.conftest import FIXTURES, ROOT


def _dump(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute("SELECT * FROM quarters ORDER BY start, meter").fetchall() + \
            con.execute("SELECT * FROM month_peaks ORDER BY month").fetchall()
    finally:
        con.close()


def _ini(tmp_path: Path, extra: str = "") -> Path:
    ini = tmp_path / "h.ini"
    ini.write_text(f"[meter]\nprotocol = dsmr\n[history]\npath = {tmp_path / 'h.sqlite'}\n{extra}")
    return ini


def _run(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*Appliance.command(ini), *args], capture_output=True, text=True, timeout=300, cwd=ROOT)


def test_a_capture_imported_twice_changes_nothing(tmp_path: Path) -> None:
    meter = SimulatedMeter(datetime(2026, 6, 21, 10, 7, tzinfo=BRUSSELS), step_s=5)
    capture = tmp_path / "cap.txt"
    capture.write_bytes(b"".join(meter.telegrams(2000)))
    ini = _ini(tmp_path)
    first = _run(ini, "--import", str(capture))
    assert first.returncode == 0, first.stderr
    assert "imported 2000 readings" in first.stdout
    once = _dump(tmp_path / "h.sqlite")
    assert len(once) > 10
    again = _run(ini, "--import", str(capture))
    assert again.returncode == 0, again.stderr
    assert _dump(tmp_path / "h.sqlite") == once


def test_overlapping_captures_give_the_same_quarters_as_one(tmp_path: Path) -> None:
    meter = SimulatedMeter(datetime(2026, 6, 21, 10, 0, tzinfo=BRUSSELS), step_s=10)
    tele = list(meter.telegrams(1500))
    (tmp_path / "all.txt").write_bytes(b"".join(tele))
    (tmp_path / "a.txt").write_bytes(b"".join(tele[:900]))
    (tmp_path / "b.txt").write_bytes(b"".join(tele[600:]))
    whole = _ini(tmp_path)
    assert _run(whole, "--import", str(tmp_path / "all.txt")).returncode == 0
    split = tmp_path / "split"
    split.mkdir()
    ini = _ini(split)
    assert _run(ini, "--import", str(tmp_path / "a.txt"), str(tmp_path / "b.txt")).returncode == 0
    assert _dump(split / "h.sqlite") == _dump(tmp_path / "h.sqlite")


def test_this_appliances_csv_day_files_import(tmp_path: Path) -> None:
    start = datetime(2026, 6, 21, 0, 0, tzinfo=BRUSSELS)
    meter = SimulatedMeter(start, step_s=60)
    first = meter.state.import_t1_kwh + meter.state.import_t2_kwh
    capture = tmp_path / "cap.txt"
    capture.write_bytes(b"".join(meter.telegrams(24 * 60 + 1)))
    last = meter.state.import_t1_kwh + meter.state.import_t2_kwh
    csv_dir = tmp_path / "csv"
    writer = tmp_path / "writer.ini"  # the appliance that wrote the CSV (no store)
    writer.write_text(f"[meter]\nprotocol = dsmr\n[history]\nenabled = no\n[csv]\nenabled = yes\n"
                      f"directory = {csv_dir}\ninterval = 15 min\ndelimiter = semicolon\ndecimal = ,\n")
    out = _run(writer, "--replay", str(capture), "--replay-speed", "0")
    assert out.returncode == 0, out.stderr
    res = _run(_ini(tmp_path), "--import", str(csv_dir))
    assert res.returncode == 0, res.stderr
    con = sqlite3.connect(tmp_path / "h.sqlite")
    total, days = con.execute("SELECT SUM(imp1 + imp2), COUNT(DISTINCT day) FROM quarters").fetchone()
    con.close()
    # a CSV row holds the counters at the end of its 15 min: the first row's own quarter is not counted
    assert abs(total - (last - first)) < 0.2
    assert days == 2  # 00:00 of the next day closes the last quarter


def test_decoding_in_parallel_pieces_gives_the_same_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Telegrams cut at any piece boundary are decoded once, in file order (with 0-0:98.1.0 peaks)."""
    from app.config import load
    from app.store import importer

    fluvius = (FIXTURES / "dsmr" / "fluvius_be_p1v50217_2.txt").read_bytes()
    meter = SimulatedMeter(datetime(2026, 6, 21, 10, 0, tzinfo=BRUSSELS), step_s=7)
    capture = tmp_path / "cap.txt"
    capture.write_bytes(fluvius + b"".join(meter.telegrams(3000)))
    dumps = []
    for workers in (1, 2):
        ini = _ini(tmp_path / f"w{workers}" if (tmp_path / f"w{workers}").mkdir() is None else tmp_path)
        monkeypatch.setattr(importer, "PIECE", 100_003)  # pieces end mid-telegram
        stats = importer.run_import(load(ini), [str(capture)], workers=workers)
        assert stats.readings == 3001 and stats.rejected == 0
        dumps.append(_dump(ini.parent / "h.sqlite"))
    assert dumps[0] == dumps[1]
    assert any(row[-1] == "p1-history" for row in dumps[0])


def test_a_replay_fills_the_store_like_an_import(tmp_path: Path) -> None:
    """Same capture, same quarters, at any batching; a replay leaves the live writer's counters alone."""
    meter = SimulatedMeter(datetime(2026, 6, 21, 10, 3, tzinfo=BRUSSELS), step_s=3)
    capture = tmp_path / "cap.txt"
    capture.write_bytes(b"".join(meter.telegrams(3000)))
    dumps = []
    for how in ("import", "replay"):
        (tmp_path / how).mkdir()
        ini = _ini(tmp_path / how)
        out = _run(ini, "--import", str(capture)) if how == "import" else \
            _run(ini, "--replay", str(capture), "--replay-speed", "0")
        assert out.returncode == 0, out.stderr
        dumps.append(_dump(tmp_path / how / "h.sqlite"))
        con = sqlite3.connect(tmp_path / how / "h.sqlite")
        assert con.execute("SELECT state FROM meters").fetchall() == [(None,)]
        con.close()
    assert dumps[0] == dumps[1]
