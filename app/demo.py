"""`make demo`: the whole appliance on the built-in simulated meter, no hardware, with the dashboard.

A simulated Fluvius meter (sunny days with passing clouds and a household load) writes into a
pseudo-terminal; the appliance reads the other end like a P1 cable, switches two relays on
gpiozero's mock pins, writes CSV and the history store under ./demo-data and serves the dashboard.
The last two days are replayed fast first (one telegram per 144 s of meter time, ~20 per second),
so the day and month bars have something to show; then the meter runs in real time (one telegram
a second) until DEMO_SECONDS (default 90) have passed, and the demo stops by itself.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import tty
from datetime import datetime, timedelta
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
currency = EUR
import_price_t1 = 0.32
import_price_t2 = 0.26
export_price = 0.04
fixed_per_year = 120
capacity_price = 53.0
capacity_floor = 2.5 kW
gas_price = 1.10

[web]
enabled = yes
host = 127.0.0.1
port = {web_port}
"""

DEFAULT_SECONDS = 90.0
FAST_S = 60.0  # wall seconds for the two simulated days before the meter runs in real time
FAST_STEP_S = 144.0
DAYS = 2


def demo_seconds(environ: dict[str, str] | None = None) -> float:
    """DEMO_SECONDS from the environment (default 90); SystemExit(2) naming it when it is not a number."""
    text = (environ if environ is not None else os.environ).get("DEMO_SECONDS", "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 5.0 <= value <= 7 * 86400:
        print(f"demo: DEMO_SECONDS = {text!r}: expected seconds between 5 and 604800", file=sys.stderr)
        raise SystemExit(2)
    return value


def web_port(wanted: int = 8080) -> int:
    """`wanted` when it is free on loopback, else any free port."""
    for port in (wanted, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise OSError("no free port on 127.0.0.1")


def main(seconds: float | None = None, out_dir: str = "demo-data", port: int | None = None,
         fast_s: float = FAST_S) -> int:
    """Run the demo; return the appliance's exit code."""
    total_s = demo_seconds() if seconds is None else seconds
    fast_s = min(fast_s, total_s)
    port = web_port(int(os.environ.get("DEMO_PORT", "8080"))) if port is None else port
    url = f"http://127.0.0.1:{port}/"
    print(f"demo: dashboard at {url} (open it now; the demo runs {total_s:.0f} s)", flush=True)
    out = Path(out_dir).resolve()
    (out / "csv").mkdir(parents=True, exist_ok=True)
    for old in out.glob("history.sqlite*"):  # each demo starts a fresh store
        old.unlink()
    master, slave = os.openpty()
    tty.setraw(slave)  # a P1 cable is a raw 8-bit line: no CR/LF translation
    tty_name = os.ttyname(slave)
    ini = out / "demo.ini"
    ini.write_text(DEMO_INI.format(port=tty_name, csv_dir=out / "csv", history=out / "history.sqlite",
                                   web_port=port))
    log_path = out / "smartmeter.log"
    env = dict(os.environ, GPIOZERO_PIN_FACTORY="mock", PYTHONUNBUFFERED="1")
    root = Path(__file__).resolve().parent.parent
    print(f"demo: simulated Fluvius meter on {tty_name}; config {ini}; log {log_path}", flush=True)
    telegrams = int(DAYS * 86400 / FAST_STEP_S)
    # the fast replay ends at the wall clock, so "today" on the dashboard is today
    end = datetime.now(BRUSSELS) + timedelta(seconds=fast_s + 1.5)
    first = end - timedelta(seconds=telegrams * FAST_STEP_S)
    with log_path.open("w") as log_fh:
        proc = subprocess.Popen([sys.executable, str(root / "app" / "main.py"), "-c", str(ini)],
                                env=env, stderr=log_fh, stdout=log_fh, cwd=root)
        meter = SimulatedMeter(first, step_s=FAST_STEP_S, seed=7)
        count = 0
        time.sleep(1.5)  # let the appliance open the port
        start = time.monotonic()
        interval = fast_s / telegrams
        for n in range(telegrams):  # two days, fast
            os.write(master, meter.next())
            count += 1
            if proc.poll() is not None:
                break
            time.sleep(max(0.0, start + (n + 1) * interval - time.monotonic()))
        meter.step = timedelta(seconds=1)
        meter.t = datetime.now(BRUSSELS).replace(microsecond=0)
        print(f"demo: two simulated days sent; the meter now runs in real time until {total_s:.0f} s", flush=True)
        while proc.poll() is None and time.monotonic() - start < total_s:  # then one telegram a second
            meter.t = max(meter.t, datetime.now(BRUSSELS).replace(microsecond=0))
            os.write(master, meter.next())
            count += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - start) % 1.0))
        time.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
    os.close(master)
    os.close(slave)
    switches = [line.split(": ", 1)[1] for line in log_path.read_text().splitlines()
                if "relay " in line and " -> " in line]
    files = sorted((out / "csv").glob("*.csv"))
    rows = sum(max(0, len(f.read_text().splitlines()) - 1) for f in files)
    print(f"demo: sent {count} telegrams (two simulated days, then real time), appliance exit code {code}")
    print(f"demo: {len(switches)} relay switches, e.g.:")
    for line in switches[:6]:
        print(f"  {line}")
    print(f"demo: {rows} CSV rows in {', '.join(str(f) for f in files) or '(none)'}")
    print(f"demo: history in {out / 'history.sqlite'}: GPIOZERO_PIN_FACTORY=mock python app/main.py -c {ini} "
          f"--report day --from {first.date().isoformat()}")
    print(f"demo: output is in {out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
