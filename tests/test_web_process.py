"""The web process inside the whole appliance: started by main with [web] enabled, fed by a real
pty, relays switched over HTTP, stopped cleanly, and its death stops the appliance."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.appliance import MAIN, Appliance, Pty, free_port, ini_template, process_alive, simulated_meter, wait_for
from tests.conftest import ROOT

TOKEN = "lan-token-123"
INI = ini_template("30 s", csv=False, extra="""[history]
enabled = no
[web]
enabled = yes
host = 0.0.0.0
port = {port}
token = {token}
""")


def call(port: int, method: str, path: str, body: Any = None, token: str = TOKEN) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                 headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, None


@pytest.fixture()
def setup(tmp_path: Path) -> Iterator[tuple[Path, Pty, int]]:
    pty = Pty(tmp_path / "ttyP1")
    port = free_port()
    ini = tmp_path / "app.ini"
    ini.write_text(INI.format(source=tmp_path / "ttyP1", port=port, token=TOKEN))
    yield ini, pty, port
    pty.close()


def test_the_appliance_serves_live_readings_and_takes_relay_commands(setup: tuple[Path, Pty, int]) -> None:
    ini, pty, port = setup
    app = Appliance(ini)
    try:
        web_pid = app.pid_of("web")
        app.wait_log(r"web: serving http://0\.0\.0\.0:\d+/")
        app.wait_log(r"reading .*ttyP1")
        assert call(port, "GET", "/api/energy/smart-meter/current")[0] == 503
        meter = simulated_meter(3)  # night: no export
        for _ in range(3):
            pty.write(meter.next())
        cur = wait_for(lambda: (r := call(port, "GET", "/api/energy/smart-meter/current"))[0] == 200 and r[1])
        assert cur and cur["meter_id"] and cur["relays"] == {"boiler": "off"}
        status, body = call(port, "POST", "/api/relays/boiler", {"mode": "on"})
        assert status == 202 and body["outcome"] == "applied" and body["state"]["state"] == "on"
        app.wait_log(r"relay boiler -> on \(manual override ON\)")
        app.wait_log(r"relay boiler: mode ON requested over the web API")
        assert call(port, "GET", "/api/energy/smart-meter/status", token="wrong")[0] == 401
        code = app.stop()
        assert code == 0
        assert wait_for(lambda: not process_alive(web_pid), 5.0)
    finally:
        app.kill()
    log = app.log()
    assert TOKEN not in log
    assert "401" in log and "missing or wrong token" in log


def _autogroup(pid: int) -> str | None:
    """The process's autogroup as "/autogroup-N nice K", or None where the kernel has none (no file, or an
    empty one: CI's container kernel gives an empty file)."""
    try:
        text = Path(f"/proc/{pid}/autogroup").read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"/autogroup-\d+ nice -?\d+", text) else None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux scheduling")
def test_the_web_process_runs_below_relay_control_in_a_session_of_its_own(setup: tuple[Path, Pty, int]) -> None:
    """A busy web process must not share the appliance's autogroup (it would keep it always runnable,
    and a woken reader would wait for every other session's turn instead of preempting at once)."""
    ini, _pty, _port = setup
    app = Appliance(ini)
    try:
        web_pid, pp_pid = app.pid_of("web"), app.pid_of("post-processor")
        app.wait_log(r"web: serving")
        assert os.getsid(web_pid) == web_pid != os.getsid(pp_pid)
        assert os.getpriority(os.PRIO_PROCESS, web_pid) >= os.getpriority(os.PRIO_PROCESS, pp_pid) + 10
        assert os.sched_getscheduler(web_pid) == os.SCHED_IDLE
        assert os.sched_getscheduler(pp_pid) == os.SCHED_OTHER
        web_group, pp_group = _autogroup(web_pid), _autogroup(pp_pid)
        if web_group is not None and pp_group is not None:  # a kernel with autogroup scheduling
            assert web_group.split()[0] != pp_group.split()[0]
            assert web_group.endswith("nice 10")
        assert app.stop() == 0
    finally:
        app.kill()


def test_the_death_of_the_web_process_stops_the_appliance(setup: tuple[Path, Pty, int]) -> None:
    ini, _pty, port = setup
    app = Appliance(ini)
    try:
        web_pid = app.pid_of("web")
        app.wait_log(r"web: serving")
        os.kill(web_pid, signal.SIGKILL)
        assert app.proc.wait(timeout=15) == 1
    finally:
        app.kill()
    assert "web exited (code -9); stopping" in app.log()


def test_a_taken_port_stops_the_appliance_with_a_clear_message(setup: tuple[Path, Pty, int]) -> None:
    ini, _pty, port = setup
    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", port))
        blocker.listen(1)
        app = Appliance(ini)
        try:
            assert app.proc.wait(timeout=15) == 1
        finally:
            app.kill()
    assert f"web: cannot listen on [web] host = 0.0.0.0, port = {port}" in app.log()


def test_beyond_loopback_without_a_token_is_a_config_error(tmp_path: Path) -> None:
    ini = tmp_path / "app.ini"
    ini.write_text(INI.format(source="/dev/null", port=8080, token=""))
    env = {k: v for k, v in Appliance.environment().items() if k != "SMARTMETER_WEB_TOKEN"}
    out = subprocess.run([sys.executable, MAIN, "-c", str(ini), "--check-config"], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=60)
    assert out.returncode == 2
    assert "[web] host = '0.0.0.0': listening beyond loopback needs a token" in out.stderr
    ok = subprocess.run([sys.executable, MAIN, "-c", str(ini), "--check-config"], capture_output=True, text=True,
                        cwd=ROOT, env=dict(env, SMARTMETER_WEB_TOKEN="from-env"), timeout=60)
    assert ok.returncode == 0 and "from-env" not in ok.stdout
