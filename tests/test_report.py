"""A simulated month through the whole appliance: `--report` matches an independent computation from the
telegrams (counters at each local midnight), across the day summer time ends; table, JSON and CSV."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from app.simulator import BRUSSELS, SimulatedMeter
from tests.appliance import Appliance
from tests.conftest import ROOT


def _run(ini: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*Appliance.command(ini), *args], capture_output=True, text=True, timeout=600, cwd=ROOT)


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, tuple[float, float, float]]]:
    """October 2026 at one telegram per 2 min replayed through the appliance; the meter's counters at
    every local midnight (import kWh, export kWh, gas m3), read from what it sent."""
    tmp = tmp_path_factory.mktemp("month")
    meter = SimulatedMeter(datetime(2026, 10, 1, tzinfo=BRUSSELS), step_s=120, seed=3)
    chunks = []
    midnights: dict[str, tuple[float, float, float]] = {}
    while meter.t < datetime(2026, 11, 1, 0, 2, tzinfo=BRUSSELS):
        t = meter.t
        chunks.append(meter.next())
        if t.hour == 0 and t.minute == 0:
            s = meter.state
            midnights[t.date().isoformat()] = (round(s.import_t1_kwh, 3) + round(s.import_t2_kwh, 3),
                                               round(s.export_t1_kwh, 3) + round(s.export_t2_kwh, 3),
                                               round(s.gas_m3, 3))
    capture = tmp / "october.txt"
    capture.write_bytes(b"".join(chunks))
    ini = tmp / "m.ini"
    ini.write_text(f"[meter]\nprotocol = dsmr\ntimezone = Europe/Brussels\n[history]\npath = {tmp / 'h.sqlite'}\n"
                   "[csv]\ndelimiter = semicolon\ndecimal = ,\n"
                   "[tariff]\nimport_price = 0.30\nexport_price = 0.05\ngas_price = 1.10\nfixed_per_month = 31\n"
                   "[tariff:cheap]\nimport_price = 0.20\nexport_price = 0.05\n")
    out = _run(ini, "--replay", str(capture), "--replay-speed", "0")
    assert out.returncode == 0, out.stderr + out.stdout
    return ini, midnights


def test_daily_report_matches_the_meters_counters(month: tuple[Path, dict[str, tuple[float, float, float]]]) -> None:
    ini, midnights = month
    out = _run(ini, "--report", "day", "--from", "2026-10-01", "--to", "2026-11-01", "--json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(rows) == 31
    days = sorted(midnights)
    for row, day, nxt in zip(rows, days, days[1:], strict=False):
        assert row["start"][:10] == day
        want = [b - a for a, b in zip(midnights[day], midnights[nxt], strict=True)]
        assert row["import_kwh"] == pytest.approx(want[0], abs=2e-3), day
        assert row["export_kwh"] == pytest.approx(want[1], abs=2e-3), day
        assert row["gas_m3"] == pytest.approx(want[2], abs=2e-3), day
    assert rows[24]["start"] == "2026-10-25T00:00:00+02:00" and rows[24]["end"] == "2026-10-26T00:00:00+01:00"
    months = _run(ini, "--report", "month", "--from", "2026-10-01", "--to", "2026-11-01", "--json")
    total = json.loads(months.stdout.splitlines()[0])
    assert total["import_kwh"] == pytest.approx(midnights["2026-11-01"][0] - midnights["2026-10-01"][0], abs=2e-3)
    assert total["peak_kw"] == max(r["peak_kw"] for r in rows)
    c = total["cost"]
    assert c["import"] == pytest.approx(total["import_kwh"] * 0.30, abs=1e-3)
    assert c["export"] == pytest.approx(-total["export_kwh"] * 0.05, abs=1e-3)
    assert c["gas"] == pytest.approx(total["gas_m3"] * 1.10, abs=1e-3)
    assert c["fixed"] == pytest.approx(31.0)
    assert sum(r["cost"]["total"] for r in rows) == pytest.approx(c["total"], abs=1e-2)


def test_table_and_csv_reports(month: tuple[Path, dict[str, tuple[float, float, float]]]) -> None:
    ini, _ = month
    table = _run(ini, "--report", "day", "--from", "2026-10-01", "--to", "2026-10-08")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["period", "import", "kWh"] and lines[-1].startswith("total")
    assert len(lines) == 1 + 7 + 1
    csv = _run(ini, "--report", "hour", "--from", "2026-10-25", "--to", "2026-10-26", "--csv")
    head, *body = csv.stdout.splitlines()
    assert head.startswith("start;end;import (kWh);export (kWh)") and "gas (m3)" in head
    assert len(body) == 25 and "," in body[12]  # the [csv] decimal mark
    cost = _run(ini, "--report", "cost", "--from", "2026-10-01", "--to", "2026-11-01", "--json")
    c = json.loads(cost.stdout)
    assert [t["tariff"] for t in c["compare"]] == ["cheap", "default"]
    assert c["compare"][1]["total"] == pytest.approx(c["total"]["total"], abs=1e-2)
    assert {"month", "year", "method"} <= set(c["projection"])
    table = _run(ini, "--report", "cost", "--from", "2026-10-01", "--to", "2026-11-01", "--compare")
    assert "cheapest first" in table.stdout and table.stdout.index("cheap ") < table.stdout.index("default")
    bad = _run(ini, "--report", "day", "--from", "1st of May")
    assert bad.returncode == 2 and "not a date" in bad.stderr


def test_the_meters_month_peak_is_kept(month: tuple[Path, dict[str, tuple[float, float, float]]]) -> None:
    from app.config import load
    from app.store.query import HistoryQuery

    ini, _ = month
    q = HistoryQuery(load(ini))
    try:
        months = {m["month"]: m for m in q.capacity()["months"]}
        assert months["2026-10"]["source"] == "meter" and months["2026-10"]["kw"] >= 2.5
    finally:
        q.close()


def test_report_needs_no_gpio_library(month: tuple[Path, dict[str, tuple[float, float, float]]]) -> None:
    """`--report` drives no pin: a relay in the config must not make it demand a GPIO library (off-Pi use)."""
    ini, _ = month
    with_relay = ini.with_name("relay.ini")
    with_relay.write_text(ini.read_text() + "[relay:boiler]\npin = GPIO17\non_when = export > 1500 W for 60 s\n")
    env = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    out = subprocess.run([*Appliance.command(with_relay), "--report", "month", "--json"], capture_output=True,
                         text=True, timeout=600, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr
    assert "GPIO" not in out.stderr
