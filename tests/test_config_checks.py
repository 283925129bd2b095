"""`--check-config` looks at the machine too: warnings with the fix on stderr, exit 0 (issue 16)."""

from __future__ import annotations

import dataclasses
import datetime
import os
import socket
from pathlib import Path

import pytest

from app import checks, config
from app.errors import ConfigError
from tests.fixtures_influx import InfluxV1Server
from tests.fixtures_mqtt import Broker
from tests.test_config_errors import check


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its unencrypted key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "smartmeter test CA")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_missing_serial_device_is_a_warning_listing_the_ports(tmp_path: Path) -> None:
    out = check(tmp_path, "[meter]\nsource = /dev/ttyNOSUCH7\n")
    assert out.returncode == 0, out.stderr
    line = "smartmeter: warning: [meter] source = '/dev/ttyNOSUCH7': no such device; "
    assert line in out.stderr
    assert "ports present: " in out.stderr or "no serial port is present" in out.stderr
    assert "1 warnings on stderr" in out.stdout


def test_a_device_this_user_cannot_open_gets_the_dialout_hint(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    dev = tmp_path / "ttyUSB0"
    dev.write_text("")
    monkeypatch.setattr(os, "access", lambda _p, _mode: False)  # as for a user outside `dialout`
    warning = checks.serial_warning(str(dev))
    assert warning is not None and "dialout group (sudo usermod -aG dialout" in warning
    monkeypatch.undo()
    assert checks.serial_warning(str(dev)) is None
    assert checks.serial_warning("socket://192.0.2.1:2000") is None


def test_present_ports_lists_what_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id" / "usb-FTDI_FT232R_USB_UART_A1-if00-port0").write_text("")
    (tmp_path / "ttyUSB0").write_text("")
    monkeypatch.setattr(checks, "SERIAL_GLOBS", (str(tmp_path / "by-id" / "*"), str(tmp_path / "ttyUSB*")))
    warning = checks.serial_warning("/dev/ttyUSB9")
    assert warning is not None
    assert warning.endswith(f"ports present: {tmp_path}/by-id/usb-FTDI_FT232R_USB_UART_A1-if00-port0, "
                            f"{tmp_path}/ttyUSB0")


def test_unusable_csv_and_history_directories_are_warnings(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = check(tmp_path, f"[meter]\nsource = socket://127.0.0.1:1\n[csv]\nenabled = yes\n"
                          f"directory = {blocker}/csv\n[history]\npath = {blocker}/db/history.sqlite\n")
    assert out.returncode == 0, out.stderr
    assert f"warning: [csv] directory = '{blocker}/csv': cannot be created: '{blocker}' is a file" in out.stderr
    assert f"warning: [history] path = '{blocker}/db/history.sqlite': its directory cannot be created" in out.stderr
    assert "sudo install -d -o smartmeter" in out.stderr
    out = check(tmp_path, f"[meter]\nsource = socket://127.0.0.1:1\n[csv]\nenabled = yes\n"
                          f"directory = {tmp_path}/csv\n[history]\npath = {tmp_path}/history.sqlite\n")
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr


def test_dir_problem_on_a_read_only_directory(tmp_path: Path) -> None:
    assert checks.dir_problem(str(tmp_path)) is None
    assert checks.dir_problem(str(tmp_path / "a" / "b")) is None
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        assert "is not writable by user" in str(checks.dir_problem(str(ro)))


def test_online_pings_influxdb_and_connects_to_mqtt(tmp_path: Path, mosquitto: Broker,
                                                    influxdb_v1: InfluxV1Server) -> None:
    influxdb_v1.create_database("smartmeter")  # --online also writes nothing into it (tests/test_checks_online.py)
    good = (f"[meter]\nsource = socket://127.0.0.1:1\n[influxdb]\nenabled = yes\napi = v1\n"
            f"url = http://127.0.0.1:{influxdb_v1.port}\nspool_dir = {tmp_path}/spool\n"
            f"[mqtt]\nenabled = yes\nhost = 127.0.0.1\nport = {mosquitto.port}\n")
    out = check(tmp_path, good, "--online")
    assert out.returncode == 0 and "warning" not in out.stderr, out.stderr
    port = closed_port()
    bad = (f"[meter]\nsource = socket://127.0.0.1:1\n[influxdb]\nenabled = yes\napi = v1\n"
           f"url = http://127.0.0.1:{port}\nspool_dir = {tmp_path}/spool\n"
           f"[mqtt]\nenabled = yes\nhost = 127.0.0.1\nport = {port}\n")
    out = check(tmp_path, bad, "--online")
    assert out.returncode == 0, out.stderr  # warnings only
    assert f"warning: [influxdb] url = 'http://127.0.0.1:{port}': no answer to /ping" in out.stderr
    assert f"warning: [mqtt] host = '127.0.0.1': cannot connect to port {port}" in out.stderr
    out = check(tmp_path, bad)
    assert "warning" not in out.stderr  # without --online nothing is asked


def test_online_never_shows_credentials_in_the_influxdb_url(tmp_path: Path) -> None:
    """Credentials in the URL are a config error now (urllib took them for the host name), shown masked;
    check_online still masks any that reach it."""
    port = closed_port()
    url = f"http://bob:s3cret@127.0.0.1:{port}"
    with pytest.raises(ConfigError) as err:
        config.loads(f"[influxdb]\nenabled = yes\napi = v1\nurl = {url}\nspool_dir = {tmp_path}/spool\n")
    assert "s3cret" not in str(err.value) and "http://***@127.0.0.1" in str(err.value)
    cfg = config.loads(f"[influxdb]\nenabled = yes\napi = v1\nurl = http://127.0.0.1:{port}\n"
                       f"spool_dir = {tmp_path}/spool\n")
    cfg = dataclasses.replace(cfg, influxdb=dataclasses.replace(cfg.influxdb, url=url))
    warnings = checks.check_online(cfg, timeout_s=5.0)
    assert len(warnings) == 1 and warnings[0].startswith(f"[influxdb] url = 'http://***@127.0.0.1:{port}': "
                                                         "no answer to /ping"), warnings
    assert "Name or service" not in warnings[0]  # the ping went to the host, not to "bob:s3cret@127.0.0.1"
    assert not any("s3cret" in w for w in warnings)


def test_check_environment_has_no_side_effects(tmp_path: Path) -> None:
    cfg = config.loads(f"[meter]\nsource = socket://127.0.0.1:1\n[influxdb]\nenabled = yes\n"
                       f"spool_dir = {tmp_path}/x/spool\n[csv]\nenabled = yes\ndirectory = {tmp_path}/y\n"
                       f"[history]\npath = {tmp_path}/z/h.sqlite\n")
    assert checks.check_environment(cfg) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []
