"""`make demo`: the whole appliance on the built-in simulated meter, no hardware.

A simulated Fluvius meter (a sunny day with passing clouds and a household load, one telegram
every 144 s of meter time, about 10 per second of wall time) writes into a pseudo-terminal;
the appliance reads the other end like a P1 cable, switches two relays on gpiozero's mock pins
and writes CSV and the history store under ./demo-data. It stops by itself after about a minute.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import tty
from datetime import datetime
from pathlib import Path

from app.simulator import BRUSSELS, SimulatedMeter

DEMO_INI = """\
[general]
log_level = info
stats_interval = 20 s

[meter]
source = {port}
protocol = dsmr
baudrate = 115200
timezone = Europe/Brussels

[control]
settle = 4 min
stale_after = 5 min          ; longer than the 144 s between simulated telegrams

[relay:boiler]
pin = GPIO17
priority = 1
on_when = export > 1500 W for 6 min
off_when = export < 200 W for 4 min
min_on = 30 min
min_off = 20 min

[relay:heatpump]
pin = GPIO27
priority = 2
on_when = mean(export, 15 min) > 2500 W
off_when = mean(export, 15 min) < 500 W
min_on = 1 h
min_off = 30 min
max_switches = 3 per h
hours = 09:00-18:00

[csv]
enabled = yes
directory = {csv_dir}
interval = 15 min
delimiter = semicolon
decimal = ,
flush_interval = 5 s

[history]
path = {history}
commit_interval = 5 s

[tariff]
import_price_t1 = 0.32
import_price_t2 = 0.26
export_price = 0.04
fixed_per_year = 120
capacity_price = 53.0
gas_price = 1.10
"""


def main(seconds: float = 60.0, step_s: float = 144.0, out_dir: str = "demo-data") -> int:
    """Run the demo; return the appliance's exit code."""
    out = Path(out_dir).resolve()
    (out / "csv").mkdir(parents=True, exist_ok=True)
    for old in out.glob("history.sqlite*"):  # each demo day starts a fresh store
        old.unlink()
    master, slave = os.openpty()
    tty.setraw(slave)  # a P1 cable is a raw 8-bit line: no CR/LF translation
    port = os.ttyname(slave)
    ini = out / "demo.ini"
    ini.write_text(DEMO_INI.format(port=port, csv_dir=out / "csv", history=out / "history.sqlite"))
    log_path = out / "smartmeter.log"
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
    root = Path(__file__).resolve().parent.parent
    print(f"demo: simulated Fluvius meter on {port}; config {ini}; log {log_path}")
    with log_path.open("w") as log_fh:
        proc = subprocess.Popen([sys.executable, str(root / "app" / "main.py"), "-c", str(ini)],
                                env=env, stderr=log_fh, stdout=log_fh, cwd=root)
        meter = SimulatedMeter(datetime(2026, 6, 21, 0, 0, tzinfo=BRUSSELS), step_s=step_s, seed=7)
        count = 0
        telegrams = int(86400 / step_s)
        interval = seconds / telegrams
        time.sleep(1.5)  # let the appliance open the port
        start = time.monotonic()
        for n in range(telegrams):
            os.write(master, meter.next())
            count = n + 1
            if proc.poll() is not None:
                break
            time.sleep(max(0.0, start + (n + 1) * interval - time.monotonic()))
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
    os.close(master)
    os.close(slave)
    switches = [line.split(": ", 1)[1] for line in log_path.read_text().splitlines()
                if "relay " in line and " -> " in line]
    files = sorted((out / "csv").glob("*.csv"))
    rows = sum(max(0, len(f.read_text().splitlines()) - 1) for f in files)
    print(f"demo: sent {count} telegrams (one simulated day), appliance exit code {code}")
    print(f"demo: {len(switches)} relay switches, e.g.:")
    for line in switches[:6]:
        print(f"  {line}")
    print(f"demo: {rows} CSV rows in {', '.join(str(f) for f in files) or '(none)'}")
    print(f"demo: history in {out / 'history.sqlite'}: GPIOZERO_PIN_FACTORY=mock python app/main.py -c {ini} "
          "--report hour --from 2026-06-21")
    print(f"demo: output is in {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
