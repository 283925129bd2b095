"""`--import` applies the plausibility gate the live path and a replay use: a telegram or CSV row whose
counter jumps (or whose power is impossible) is not stored, counted and reported; the store holds exactly
what the same capture without those readings gives."""

from __future__ import annotations

import re
import sqlite3
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.config import load
from app.framing.dsmr import crc16_arc
from app.simulator import BRUSSELS, SimulatedMeter
from app.store import importer

N = 120  # telegrams, one a minute: eight quarters


def _telegrams() -> list[bytes]:
    meter = SimulatedMeter(datetime(2026, 6, 21, 10, 0, tzinfo=BRUSSELS), step_s=60)
    return list(meter.telegrams(N))


TELEGRAMS = _telegrams()


def _spike(telegram: bytes) -> bytes:
    """The same telegram with its tariff-1 import counter 50 MWh up and a valid CRC (only the gate can tell)."""
    body = telegram[:telegram.index(b"!") + 1]

    def up(m: re.Match[bytes]) -> bytes:
        return b"1-0:1.8.1(%010.3f*kWh)" % (float(m.group(1)) + 50_000.0)

    body = re.sub(rb"1-0:1\.8\.1\((\d+\.\d+)\*kWh\)", up, body)
    return body + f"{crc16_arc(body):04X}\r\n".encode("ascii")


def _quarters(db: Path) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT * FROM quarters ORDER BY start, meter").fetchall()
    finally:
        con.close()


def _import(d: Path, files: list[Path], workers: int = 1) -> tuple[importer.ImportStats, list[tuple[object, ...]]]:
    ini = d / "h.ini"
    ini.write_text(f"[meter]\nprotocol = dsmr\n[history]\npath = {d / 'h.sqlite'}\n")
    stats = importer.run_import(load(ini), [str(f) for f in files], workers=workers)
    return stats, _quarters(d / "h.sqlite")


def _clean(tmp_path: Path) -> list[tuple[object, ...]]:
    d = tmp_path / "clean"
    d.mkdir(exist_ok=True)
    cap = d / "cap.txt"
    cap.write_bytes(b"".join(TELEGRAMS))
    return _import(d, [cap])[1]


# the first reading is the gate's reference (believed, as live); spikes apart, so none is taken for a new normal
spikes = st.sets(st.integers(1, N - 1), max_size=8).filter(lambda s: all(a + 1 not in s for a in s))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spikes)
def test_spiked_telegrams_are_not_stored_and_the_rest_is_as_without_them(tmp_path: Path, at: set[int]) -> None:
    clean = _clean(tmp_path)
    d = Path(tempfile.mkdtemp(prefix="spiked-", dir=tmp_path))  # hypothesis may try one set twice
    cap = d / "cap.txt"
    cap.write_bytes(b"".join(_spike(t) if i in at else t for i, t in enumerate(TELEGRAMS)))
    stats, got = _import(d, [cap])
    assert (stats.implausible, stats.readings, stats.rejected) == (len(at), N - len(at), 0)
    if not at:
        assert got == clean
    else:  # the store as if the spiked telegrams had not been there (a quarter may lose readings, not kWh)
        without = tmp_path / f"without-{'-'.join(map(str, sorted(at)))}"
        without.mkdir()
        cap2 = without / "cap.txt"
        cap2.write_bytes(b"".join(t for i, t in enumerate(TELEGRAMS) if i not in at))
        assert got == _import(without, [cap2])[1]


def test_parallel_pieces_gate_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer, "PIECE", 20_000)  # several pieces
    cap = tmp_path / "cap.txt"
    cap.write_bytes(b"".join(_spike(t) if i in (30, 90) else t for i, t in enumerate(TELEGRAMS)))
    stats, _ = _import(tmp_path, [cap], workers=2)
    assert (stats.implausible, stats.readings) == (2, N - 2)


def _csv_rows(start: datetime, n: int, spike_at: set[int]) -> str:
    lines = ["timestamp;total_consumption;total_injection;actual_total_consumption;actual_total_injection"]
    for i in range(n):
        t = start + timedelta(minutes=15 * i)
        imp = 1000.0 + 0.25 * i + (40_000.0 if i in spike_at else 0.0)
        power = 1.0 if i != 7 else 900.0  # 900 kW: over [meter] max_power (43.47 kW)
        lines.append(f"{t.isoformat()};{imp:.3f};{500.0:.3f};{power};0")
    return "\n".join(lines) + "\n"


def test_csv_rows_pass_the_gate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from app.store.report import run_import_cli

    start = datetime(2026, 6, 21, 0, 0, tzinfo=BRUSSELS)
    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    (csv_dir / "2026-06-21.csv").write_text(_csv_rows(start, 20, {3, 12}))
    ini = tmp_path / "h.ini"
    ini.write_text(f"[meter]\nprotocol = dsmr\n[history]\npath = {tmp_path / 'h.sqlite'}\n")
    assert run_import_cli(load(ini), [str(csv_dir)]) == 0
    out = capsys.readouterr().out
    assert "imported 17 readings" in out and "3 implausible readings not stored" in out
    con = sqlite3.connect(tmp_path / "h.sqlite")
    (total,) = con.execute("SELECT SUM(imp1 + imp2) FROM quarters").fetchone()
    con.close()
    assert abs(total - 0.25 * 19) < 1e-6  # no 40 MWh step anywhere
