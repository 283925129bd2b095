"""`make demo`: prints the dashboard's URL first, serves it while it runs, fills two simulated days
of history, and stops by itself; DEMO_SECONDS is checked."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.appliance import wait_for
from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
            return json.loads(body) if resp.headers.get_content_type() == "application/json" else body.decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def test_demo_serves_the_dashboard_with_two_days_and_stops(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "DEMO_SECONDS": "25", "DEMO_PORT": str(port), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "app.demo"], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith(f"demo: dashboard at http://127.0.0.1:{port}/"), first
        page = wait_for(lambda: _get(f"http://127.0.0.1:{port}/"), 30.0)
        assert isinstance(page, str) and "/static/app.js" in page
        base = f"http://127.0.0.1:{port}/api/energy/smart-meter"
        days = wait_for(lambda: (d := _get(f"{base}/history?resolution=day")) and len(d["rows"]) >= 2 and d, 40.0)
        assert days, "two simulated days never reached the history"
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert proc.returncode == 0, rest
    assert "two simulated days sent" in rest and "appliance exit code 0" in rest
    assert len(list((tmp_path / "demo-data" / "csv").glob("*.csv"))) >= 2


def test_demo_seconds_must_be_a_number(tmp_path: Path) -> None:
    env = {**os.environ, "DEMO_SECONDS": "soon", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "app.demo"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "DEMO_SECONDS = 'soon'" in out.stderr
    assert not (tmp_path / "demo-data").exists()
