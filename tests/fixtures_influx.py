"""Pytest fixtures that run real time-series servers on loopback ephemeral ports in temp dirs.

`influxdb_v1`: Debian's `influxd` (InfluxDB 1.x) with a generated config; read back with InfluxQL.
`victoria_metrics`: Debian's `victoria-metrics`, which accepts the InfluxDB v2 `/api/v2/write` API;
read back with `/api/v1/export` after `/internal/force_flush`.
Both yield a server object with `url`, `stop()` and `start()` (same port and data dir, for outage
tests). A missing binary fails the test under CI=true and skips it elsewhere, naming the apt-get command.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = "apt-get install -y influxdb victoria-metrics"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def require_binary(name: str) -> str:
    """Path of `name`, or fail (CI) / skip (elsewhere) naming the install command."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found; install it with: {INSTALL_HINT}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def http(method: str, url: str, body: bytes | None = None, timeout_s: float = 10.0) -> tuple[int, bytes]:
    """One HTTP request -> (status, body); HTTP errors are returned, not raised."""
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), bytes(exc.read())


class ServerProcess:
    """A server child process that can be stopped and started again on the same port and data dir."""

    name = "server"

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        """The argv that starts the server."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server answers its health endpoint."""
        raise NotImplementedError

    def start(self) -> None:
        """Start the server and wait until it answers."""
        if self.proc is not None and self.proc.poll() is None:
            return
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.ready():
                    return
            except OSError:
                pass  # not listening yet; poll again below
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer within {START_TIMEOUT_S:g} s: {self.log_tail()}")

    def stop(self, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL with kill=True) and wait for it; idempotent."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    @property
    def running(self) -> bool:
        """True while the child process lives."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n_bytes: int = 2000) -> str:
        """The end of the server log, for error messages."""
        try:
            return self.log_path.read_bytes()[-n_bytes:].decode("utf-8", "replace")
        except OSError:
            return ""


class InfluxV1Server(ServerProcess):
    """Debian's influxd 1.x with meta, data and wal under a temp dir, HTTP and RPC on loopback ports."""

    name = "influxd"

    def __init__(self, workdir: Path, binary: str) -> None:
        super().__init__(workdir, free_port())
        self.binary = binary
        self.rpc_port = free_port()
        self.config_path = workdir / "influxdb.conf"
        self.config_path.write_text(self._config(), encoding="utf-8")

    def _config(self) -> str:
        d = self.workdir
        return f"""\
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"

[meta]
  dir = "{d / 'meta'}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{d / 'data'}"
  wal-dir = "{d / 'wal'}"
  wal-fsync-delay = "0s"
  query-log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[shard-precreation]
  enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = false
  log-enabled = false
  pprof-enabled = false
  unix-socket-enabled = false
"""

    def command(self) -> list[str]:
        return [self.binary, "-config", str(self.config_path)]

    def ready(self) -> bool:
        status, _ = http("GET", f"{self.url}/ping", timeout_s=1.0)
        return status == 204

    def query(self, q: str, db: str | None = None) -> list[dict[str, Any]]:
        """Run InfluxQL; the series of the first statement (epoch seconds), raising on an error."""
        params = {"q": q, "epoch": "s"}
        if db:
            params["db"] = db
        status, body = http("POST", f"{self.url}/query?{urllib.parse.urlencode(params)}")
        doc = json.loads(body)
        result = doc.get("results", [{}])[0]
        if status != 200 or "error" in doc or "error" in result:
            raise RuntimeError(f"InfluxQL {q!r} failed ({status}): {body.decode(errors='replace')}")
        return list(result.get("series", []))

    def create_database(self, db: str) -> None:
        """CREATE DATABASE (idempotent)."""
        self.query(f'CREATE DATABASE "{db}"')

    def rows(self, db: str, measurement: str, where: str = "") -> list[dict[str, Any]]:
        """Every row of `measurement` as dicts (column -> value), time in epoch seconds."""
        q = f'SELECT * FROM "{measurement}"' + (f" WHERE {where}" if where else "")
        out: list[dict[str, Any]] = []
        for series in self.query(q, db):
            cols = series["columns"]
            out.extend(dict(zip(cols, values, strict=True)) for values in series.get("values", []))
        return out


class VictoriaMetricsServer(ServerProcess):
    """Debian's victoria-metrics single-node, storage in a temp dir, retention long enough for replays."""

    name = "victoria-metrics"

    def __init__(self, workdir: Path, binary: str) -> None:
        super().__init__(workdir, free_port())
        self.binary = binary

    def command(self) -> list[str]:
        return [
            self.binary,
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.workdir / 'data'}",
            "-retentionPeriod=100y",
            "-loggerLevel=WARN",
        ]

    def ready(self) -> bool:
        status, _ = http("GET", f"{self.url}/health", timeout_s=1.0)
        return status == 200

    def export(self, match: str, start_s: int = 0) -> list[dict[str, Any]]:
        """Every series matching `match` after a force flush: dicts with metric, values, timestamps (ms)."""
        http("GET", f"{self.url}/internal/force_flush")
        params = urllib.parse.urlencode({"match[]": match, "start": str(start_s)})
        status, body = http("GET", f"{self.url}/api/v1/export?{params}")
        if status != 200:
            raise RuntimeError(f"export {match!r} failed ({status}): {body.decode(errors='replace')}")
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def samples(self, metric: str, **labels: str) -> list[tuple[int, float]]:
        """(epoch seconds, value) of every stored sample of one metric name, sorted, duplicates kept."""
        sel = ",".join([f'__name__="{metric}"', *(f'{k}="{v}"' for k, v in labels.items())])
        out: list[tuple[int, float]] = []
        for series in self.export("{" + sel + "}"):
            pairs = zip(series["timestamps"], series["values"], strict=True)
            out.extend((int(ts) // 1000, float(v)) for ts, v in pairs)
        return sorted(out)


@pytest.fixture(scope="module")
def influxdb_v1(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InfluxV1Server]:
    """A running InfluxDB 1.x on 127.0.0.1:<ephemeral>; stop()/start() keep port and data."""
    binary = require_binary("influxd")
    server = InfluxV1Server(tmp_path_factory.mktemp("influxd"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def victoria_metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VictoriaMetricsServer]:
    """A running VictoriaMetrics on 127.0.0.1:<ephemeral>; stop()/start() keep port and data."""
    binary = require_binary("victoria-metrics")
    server = VictoriaMetricsServer(tmp_path_factory.mktemp("vm"), binary)
    server.start()
    try:
        yield server
    finally:
        server.stop()
