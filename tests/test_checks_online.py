"""`--check-config --online` checks InfluxDB's credentials and target, not only /ping: an empty write as the
sink would write, against a real influxd 1.x with authentication on and a real VictoriaMetrics."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import checks, config
from tests.fixtures_influx import InfluxV1Server, VictoriaMetricsServer, require_binary
from tests.fixtures_influx import http as http_call
from tests.test_config_errors import check

ADMIN, ADMIN_PW = "admin", "adm1n-s3cret"
READER, READER_PW = "reader", "r3ader-s3cret"


class AuthInfluxV1Server(InfluxV1Server):
    """influxd 1.x as a production server runs it: authentication on."""

    def _config(self) -> str:
        return super()._config().replace("auth-enabled = false", "auth-enabled = true")

    def admin_query(self, q: str, user: str = ADMIN, password: str = ADMIN_PW) -> None:
        params = urllib.parse.urlencode({"q": q, "u": user, "p": password})
        status, body = http_call("POST", f"{self.url}/query?{params}")
        assert status == 200 and b'"error"' not in body, body


@pytest.fixture(scope="module")
def influxd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthInfluxV1Server]:
    """An influxd with an admin, a database `meter` and a user who may only read it."""
    server = AuthInfluxV1Server(tmp_path_factory.mktemp("influxd-auth"), require_binary("influxd"))
    server.start()
    try:
        server.admin_query(f"CREATE USER {ADMIN} WITH PASSWORD '{ADMIN_PW}' WITH ALL PRIVILEGES", "", "")
        server.admin_query('CREATE DATABASE "meter"')
        server.admin_query(f"CREATE USER {READER} WITH PASSWORD '{READER_PW}'")
        server.admin_query(f'GRANT READ ON "meter" TO {READER}')
        yield server
    finally:
        server.stop()


def _v1(tmp_path: Path, port: int, **keys: str) -> config.Config:
    settings = {"database": "meter", "username": ADMIN, "password": ADMIN_PW, **keys}
    lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
    return config.loads(f"[influxdb]\nenabled = yes\napi = v1\nurl = http://127.0.0.1:{port}\n"
                        f"spool_dir = {tmp_path}/spool\n{lines}")


def _only(warnings: list[str]) -> str:
    assert len(warnings) == 1, warnings
    assert not any(s in warnings[0] for s in (ADMIN_PW, READER_PW, "s3cret")), warnings
    return warnings[0]


def test_v1_good_credentials_and_database_pass(tmp_path: Path, influxd_auth: AuthInfluxV1Server) -> None:
    assert checks.check_online(_v1(tmp_path, influxd_auth.port)) == []
    # the empty write stored nothing
    status, body = http_call("POST", f"{influxd_auth.url}/query?" + urllib.parse.urlencode(
        {"q": "SHOW MEASUREMENTS", "db": "meter", "u": ADMIN, "p": ADMIN_PW}))
    assert status == 200 and "series" not in json.loads(body)["results"][0]


def test_v1_wrong_password_is_refused_credentials(tmp_path: Path, influxd_auth: AuthInfluxV1Server) -> None:
    w = _only(checks.check_online(_v1(tmp_path, influxd_auth.port, password="wr0ng-s3cret")))
    assert w.startswith("[influxdb] username = 'admin': the server refused the credentials (HTTP 401"), w
    w = _only(checks.check_online(_v1(tmp_path, influxd_auth.port, username="", password="")))
    assert "refused the credentials" in w


def test_v1_missing_database_and_retention_policy_are_named(tmp_path: Path,
                                                            influxd_auth: AuthInfluxV1Server) -> None:
    w = _only(checks.check_online(_v1(tmp_path, influxd_auth.port, database="nodb")))
    assert w.startswith("[influxdb] database = 'nodb': no such database"), w
    assert "CREATE DATABASE" in w
    w = _only(checks.check_online(_v1(tmp_path, influxd_auth.port, retention_policy="norp")))
    assert w.startswith("[influxdb] retention_policy = 'norp': no such retention policy"), w


def test_v1_a_user_without_write_access_is_told(tmp_path: Path, influxd_auth: AuthInfluxV1Server) -> None:
    w = _only(checks.check_online(_v1(tmp_path, influxd_auth.port, username=READER, password=READER_PW)))
    assert w.startswith("[influxdb] username = 'reader': may not write to database 'meter'"), w


def test_v2_against_influxdb_before_1_8_says_use_v1(tmp_path: Path, influxd_auth: AuthInfluxV1Server) -> None:
    cfg = config.loads(f"[influxdb]\nenabled = yes\napi = v2\nurl = http://127.0.0.1:{influxd_auth.port}\n"
                       f"token = {ADMIN}:{ADMIN_PW}\nbucket = meter/autogen\nspool_dir = {tmp_path}/spool\n")
    w = _only(checks.check_online(cfg))
    assert w.startswith("[influxdb] api = 'v2': the server has no /api/v2/write"), w


def test_v2_victoria_metrics_accepts(tmp_path: Path, victoria_metrics: VictoriaMetricsServer) -> None:
    cfg = config.loads(f"[influxdb]\nenabled = yes\napi = v2\nurl = http://127.0.0.1:{victoria_metrics.port}\n"
                       f"token = t0ken-s3cret\norg = home\nbucket = meter\nspool_dir = {tmp_path}/spool\n")
    assert checks.check_online(cfg) == []


def test_the_cli_warns_and_never_prints_the_password(tmp_path: Path, influxd_auth: AuthInfluxV1Server) -> None:
    ini = (f"[meter]\nsource = socket://127.0.0.1:1\n[influxdb]\nenabled = yes\napi = v1\n"
           f"url = http://127.0.0.1:{influxd_auth.port}\ndatabase = meter\nusername = {ADMIN}\n"
           f"password = wr0ng-s3cret\nspool_dir = {tmp_path}/spool\n")
    out = check(tmp_path, ini, "--online")
    assert out.returncode == 0, out.stderr
    assert "warning: [influxdb] username = 'admin': the server refused the credentials" in out.stderr
    assert "wr0ng-s3cret" not in out.stderr + out.stdout


class _InfluxV2Like(http.server.BaseHTTPRequestHandler):
    """InfluxDB 2.x's answers to a write (no InfluxDB 2 server is packaged for the tests): 401 for another
    token, 404 for another bucket, 204 otherwise."""

    def do_POST(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if self.headers.get("Authorization") != "Token g00d-t0ken":
            self._send(401, {"code": "unauthorized", "message": "unauthorized access"})
        elif query.get("bucket") != ["meter"]:
            self._send(404, {"code": "not found", "message": f'bucket "{query["bucket"][0]}" not found'})
        else:
            self.send_response(204)
            self.end_headers()

    def do_GET(self) -> None:
        self.send_response(204)  # /ping
        self.end_headers()

    def _send(self, status: int, doc: dict[str, str]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


def test_v2_token_and_bucket_verdicts(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _InfluxV2Like)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        def run(token: str, bucket: str) -> list[str]:
            return checks.check_online(config.loads(
                f"[influxdb]\nenabled = yes\nurl = http://127.0.0.1:{server.server_port}\ntoken = {token}\n"
                f"org = home\nbucket = {bucket}\nspool_dir = {tmp_path}/spool\n"))

        assert run("g00d-t0ken", "meter") == []
        w = _only(run("bad-t0ken-s3cret", "meter"))
        assert w.startswith("[influxdb] token = '***': the server refused the token (HTTP 401: unauthorized"), w
        w = _only(run("g00d-t0ken", "nobucket"))
        assert w.startswith("[influxdb] bucket = 'nobucket': no such bucket in org 'home'"), w
    finally:
        server.shutdown()
        server.server_close()
