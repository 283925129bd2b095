"""The whole appliance replays an evening with peak shaving: its CSV relay columns are what the pure policy
decides on the same telegrams, and the history store keeps the month's peak that a second run starts from."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from app import config as config_mod
from app.control.policy import Policy
from app.protocols.dsmr import parse_telegram
from app.simulator import BRUSSELS, SimulatedMeter
from app.store.query import HistoryQuery
from tests.appliance import Appliance

INI = """
[meter]
timezone = Europe/Brussels
[control]
settle = 15 s
stale_after = 1 min
[capacity]
enabled = yes
target = 1.5 kW
follow_peak = no
margin = 0.1 kW
restore_after = 60 s
[relay:heat_pump]
pin = GPIO17
priority = 1
on_when = import >= 0 W
min_off = 5 min
sheddable = yes
[relay:ev]
pin = GPIO22
priority = 3
on_when = import >= 0 W
sheddable = yes
[csv]
enabled = yes
directory = {csv}
interval = 0
[history]
enabled = yes
path = {db}
"""


def test_replayed_evening_sheds_like_the_pure_policy_and_keeps_the_month_peak(tmp_path: Path) -> None:
    now = datetime.now(BRUSSELS)
    start = datetime(now.year, now.month, 1, 17, 0, tzinfo=BRUSSELS)  # this month: the store seeds from it
    meter = SimulatedMeter(start, step_s=10.0, seed=5, pv_peak_w=0.0)
    telegrams = list(meter.telegrams(6 * 60 * 3))  # 17:00 to 20:00, every 10 s
    capture = tmp_path / "evening.bin"
    capture.write_bytes(b"".join(telegrams))
    ini = tmp_path / "p.ini"
    ini.write_text(INI.format(csv=tmp_path / "csv", db=tmp_path / "h.sqlite"))
    out = subprocess.run([*Appliance.command(ini), "--replay", str(capture), "--replay-speed", "0"],
                         env=Appliance.environment(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "shed: quarter forecast" in out.stderr and "restore: quarter forecast" in out.stderr

    # The pure policy on the same telegrams: the states after each reading
    cfg = config_mod.load(ini)
    tz = ZoneInfo("Europe/Brussels")
    pol = Policy(cfg.control, cfg.relays, tz, capacity=cfg.capacity)
    pol.start(datetime.now(UTC))
    want = []
    for i, raw in enumerate(telegrams):
        r = parse_telegram(raw, datetime.now(UTC), tz, seq=i)
        pol.step(r)
        st = pol.states
        want.append((r.time.isoformat(timespec="seconds"), "1" if st["heat_pump"] else "0",
                     "1" if st["ev"] else "0"))
    lines = next((tmp_path / "csv").glob("*.csv")).read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    got = [(row["timestamp"], row["relay_heat_pump"], row["relay_ev"]) for row in rows]
    assert got == want
    assert {g[2] for g in got} == {"0", "1"}  # the EV was shed and restored

    # The month's peak in the store: the meter's own 1-0:1.6.0 (the simulator's maximum demand)
    cap = HistoryQuery(cfg).capacity()
    assert cap["month"] == start.strftime("%Y-%m")
    assert cap["month_peak_kw"] == round(meter.state.max_demand_kw, 3)
    # A second run starts from that peak (peak shaving's follow_peak reads it from the store)
    again = subprocess.run([*Appliance.command(ini), "--replay", str(capture), "--replay-speed", "0"],
                           env=Appliance.environment(), capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"peak shaving: {start:%Y-%m} peak so far {meter.state.max_demand_kw:.3f} kW (history)" in again.stderr
