"""CSV sink: day files, intervals, restart, torn lines, Excel formats, disk trouble."""

from __future__ import annotations

import logging
import resource
import signal
import tempfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import CsvConfig
from app.records import Reading
from app.sinks.csv_sink import CsvSink, format_number

TZ_NAME = "Europe/Brussels"


def _reading(t: datetime, **fields: float) -> Reading:
    return Reading(seq=1, protocol="dsmr", meter_id="m", header="h", meter_time=t,
                   received=t, values={}, fields=dict(fields))


def _sink(tmp_path: Path, **kw: object) -> CsvSink:
    from zoneinfo import ZoneInfo

    cfg = CsvConfig(enabled=True, directory=str(tmp_path), **kw)  # type: ignore[arg-type]
    return CsvSink(cfg, ZoneInfo(TZ_NAME), ["boiler"])


T0 = datetime(2026, 6, 21, 10, 0, 0, tzinfo=timezone(timedelta(hours=2)))


def test_interval_rows_mean_and_last(tmp_path: Path) -> None:
    s = _sink(tmp_path, interval=60.0)
    for i, (kw, kwh) in enumerate([(1.0, 10.0), (3.0, 10.5), (2.0, 11.0)]):
        s.write(_reading(T0 + timedelta(seconds=20 * i), actual_total_consumption=kw,
                         total_consumption_day=kwh), {"boiler": i == 2})
    s.write(_reading(T0 + timedelta(seconds=60), actual_total_consumption=5.0, total_consumption_day=12.0),
            {"boiler": False})
    s.close()
    lines = (tmp_path / "2026-06-21.csv").read_text().splitlines()
    assert lines[0] == "timestamp,total_consumption_day,actual_total_consumption,relay_boiler"
    assert lines[1] == "2026-06-21T10:00:00+02:00,11,2,1"
    assert lines[2] == "2026-06-21T10:01:00+02:00,12,5,0"


def test_restart_appends_without_second_header_and_repairs_torn_row(tmp_path: Path) -> None:
    s = _sink(tmp_path, interval=0.0)
    s.write(_reading(T0, actual_total_consumption=1.0), {"boiler": True})
    s.close()
    path = tmp_path / "2026-06-21.csv"
    with path.open("a") as fh:
        fh.write("2026-06-21T10:00:01+02:00,1.")  # a power cut mid-row
    s2 = _sink(tmp_path, interval=0.0)
    s2.write(_reading(T0 + timedelta(seconds=2), actual_total_consumption=2.0), {"boiler": False})
    s2.close()
    assert path.read_text().splitlines() == [
        "timestamp,actual_total_consumption,relay_boiler",
        "2026-06-21T10:00:00+02:00,1,1",
        "2026-06-21T10:00:02+02:00,2,0",
    ]


def test_excel_format_and_day_files_by_local_date(tmp_path: Path) -> None:
    s = _sink(tmp_path, interval=0.0, delimiter=";", decimal=",")
    late = datetime(2026, 6, 21, 21, 59, 59, tzinfo=UTC)  # 23:59:59 local
    s.write(_reading(late, l1_voltage=230.25), {"boiler": False})
    s.write(_reading(late + timedelta(seconds=2), l1_voltage=229.5), {"boiler": False})
    s.close()
    assert (tmp_path / "2026-06-21.csv").read_text().splitlines()[1] == "2026-06-21T23:59:59+02:00;230,25;0"
    assert (tmp_path / "2026-06-22.csv").read_text().splitlines()[1] == "2026-06-22T00:00:01+02:00;229,5;0"
    assert format_number(0.30000000000000004, ".") == "0.3"


def test_dst_change_keeps_one_day_file_in_order(tmp_path: Path) -> None:
    s = _sink(tmp_path, interval=3600.0)
    t = datetime(2026, 10, 24, 22, 0, tzinfo=UTC)  # 00:00 CEST on the 25th, the long day
    for i in range(26 * 4):
        s.write(_reading(t + timedelta(minutes=15 * i), actual_total_consumption=1.0), {})
    s.close()
    lines = (tmp_path / "2026-10-25.csv").read_text().splitlines()[1:]
    assert len(lines) == 25  # 25 hours on the day summer time ends
    assert lines[2].startswith("2026-10-25T02:00:00+02:00") and lines[3].startswith("2026-10-25T02:00:00+01:00")


def test_file_size_limit_is_logged_held_and_resumed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    s = _sink(tmp_path, interval=0.0, flush_interval=0.0)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (200, hard))
        for i in range(10):
            s.write(_reading(T0 + timedelta(seconds=i), actual_total_consumption=float(i)), {"boiler": True})
            s.flush()
        assert "cannot write CSV" in caplog.text
        assert s.pending  # held, not lost
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)
    s.flush()
    assert not s.pending and "CSV writing resumed" in caplog.text
    s.close()
    lines = (tmp_path / "2026-06-21.csv").read_text().splitlines()
    assert len(lines) == 11 and all(line.count(",") == 2 for line in lines)


def test_one_flush_spanning_many_days_writes_every_day_once(tmp_path: Path) -> None:
    s = _sink(tmp_path, interval=3600.0, flush_interval=3600.0)
    for h in range(24 * 6):  # six days of hourly rows in one flush (a fast replay)
        s.write(_reading(T0 + timedelta(hours=h), total_consumption_day=float(h)), {"boiler": False})
    s.close()
    files = sorted(tmp_path.glob("*.csv"))
    assert len(files) == 7
    rows = [line for f in files for line in f.read_text().splitlines()[1:]]
    assert len(rows) == 24 * 6 and len(set(rows)) == len(rows)


def test_a_flush_failing_on_the_second_day_does_not_repeat_the_first(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    s = _sink(tmp_path, interval=0.0)
    late = datetime(2026, 6, 21, 21, 59, 58, tzinfo=UTC)  # 23:59:58 local
    s.write(_reading(late, l1_voltage=230.0), {})
    s.write(_reading(late + timedelta(seconds=4), l1_voltage=231.0), {})  # the next local day
    real_append = CsvSink._append

    def failing_append(self: CsvSink, day: str, lines: list[str], sync: bool) -> None:
        if day == "2026-06-22":
            raise OSError(28, "No space left on device")
        real_append(self, day, lines, sync)

    monkeypatch.setattr(CsvSink, "_append", failing_append)
    s.flush()
    assert [row[0] for row in s.pending] == ["2026-06-22"]  # the first day is written and gone
    monkeypatch.setattr(CsvSink, "_append", real_append)
    s.close()
    assert len((tmp_path / "2026-06-21.csv").read_text().splitlines()) == 2
    assert len((tmp_path / "2026-06-22.csv").read_text().splitlines()) == 2


def _timestamps(path: Path) -> list[str]:
    return [line.split(",")[0] for line in path.read_text().splitlines()[1:]]


def test_rerun_over_the_same_data_writes_no_duplicate_rows(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for run in range(2):  # a replay (or `make demo`) run twice, the second going 5 s further
        s = _sink(tmp_path, interval=0.0)
        for i in range(10 + 5 * run):
            s.write(_reading(T0 + timedelta(seconds=i), actual_total_consumption=float(i)), {"boiler": False})
        s.close()
    stamps = _timestamps(tmp_path / "2026-06-21.csv")
    assert len(stamps) == 15 and len(set(stamps)) == 15
    assert s.skipped == 10
    warnings = [r.getMessage() for r in caplog.records if "not written again" in r.getMessage()]
    assert len(warnings) == 2  # once when it starts skipping, once with the total at close
    assert "10 rows not written again" in warnings[1]


def test_clean_restart_inside_an_interval_writes_one_row_per_timestamp(tmp_path: Path) -> None:
    s = _sink(tmp_path, interval=60.0)
    for sec in (0, 20):
        s.write(_reading(T0 + timedelta(seconds=sec), actual_total_consumption=1.0), {"boiler": True})
    s.close()  # the partial 10:00 row is written at stop
    s2 = _sink(tmp_path, interval=60.0)
    for sec in (40, 60, 80, 120):
        s2.write(_reading(T0 + timedelta(seconds=sec), actual_total_consumption=2.0), {"boiler": True})
    s2.close()
    assert _timestamps(tmp_path / "2026-06-21.csv") == [
        "2026-06-21T10:00:00+02:00", "2026-06-21T10:01:00+02:00", "2026-06-21T10:02:00+02:00"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(-30, 60), st.integers(0, 40)), min_size=1, max_size=5),
       st.sampled_from([0.0, 10.0]))
def test_any_sequence_of_runs_leaves_strictly_increasing_rows(runs: list[tuple[int, int]], interval: float) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d)
        newest: datetime | None = None
        for offset, n in runs:  # each run: a new sink (restart/replay) writing n seconds from offset
            s = _sink(path, interval=interval)
            for i in range(n):
                s.write(_reading(T0 + timedelta(seconds=offset + i), actual_total_consumption=1.0), {})
            s.close()
            if n:
                last = s._bucket(T0 + timedelta(seconds=offset + n - 1))
                newest = last if newest is None else max(newest, last)
        files = list(path.glob("*.csv"))
        stamps = [datetime.fromisoformat(t) for f in files for t in _timestamps(f)]
        assert stamps == sorted(set(stamps))  # strictly increasing: no duplicate, nothing out of order
        if newest is not None:
            assert stamps[-1] == newest  # whatever is newer than the file is written
