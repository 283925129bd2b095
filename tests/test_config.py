"""Config: every key of config.sample.ini, set wrong, is exit 2 with a message naming it."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

from app import config
from app.errors import ConfigError
from app.main import main
from tests.conftest import ROOT

SAMPLE = ROOT / "config.sample.ini"
RELAY = """
[relay:boiler]
pin = GPIO17
on_when = export > 1500 W for 60 s
off_when = export < 200 W for 30 s
"""

# A wrong value for every key that has a type or a range.
BAD: dict[tuple[str, str], str] = {
    ("general", "log_level"): "loud",
    ("general", "log_interval"): "often",
    ("general", "stats_interval"): "0 s",
    ("meter", "source"): "replay:/nonexistent/capture.bin",
    ("meter", "protocol"): "modbus",
    ("meter", "baudrate"): "fast",
    ("meter", "serial_format"): "9X1",
    ("meter", "timezone"): "Europe/Atlantis",
    ("meter", "replay_speed"): "-1",
    ("meter", "key"): "00112233",
    ("meter", "auth_key"): "zz112233445566778899AABBCCDDEEFF",
    ("meter", "profile"): "no-such-meter",
    ("meter", "queue_size"): "0",
    ("meter", "reconnect_max"): "forever",
    ("meter", "read_timeout"): "1 day",
    ("meter", "max_frame"): "12",
    ("meter", "max_power"): "lots",
    ("meter", "name"): "Grid Meter",
    ("meter", "role"): "roof",
    ("control", "settle"): "-5 s",
    ("control", "stale_after"): "soon",
    ("control", "dry_run"): "maybe",
    ("control", "state_file"): "control-state.json",
    ("control", "override_min_interval"): "2 h",
    ("relay:boiler", "pin"): "",
    ("relay:boiler", "active_high"): "perhaps",
    ("relay:boiler", "safe_state"): "half",
    ("relay:boiler", "priority"): "first",
    ("relay:boiler", "on_when"): "export >> 1500 W",
    ("relay:boiler", "off_when"): "export < 200 V",
    ("relay:boiler", "min_on"): "5 parsecs",
    ("relay:boiler", "min_off"): "x",
    ("relay:boiler", "max_switches"): "many",
    ("relay:boiler", "hours"): "25:00-26:00",
    ("relay:boiler", "sheddable"): "maybe",
    ("relay:boiler", "min_daily"): "2 h",
    ("capacity", "enabled"): "perhaps",
    ("capacity", "target"): "lots",
    ("capacity", "follow_peak"): "sometimes",
    ("capacity", "margin"): "-1 kW",
    ("capacity", "restore_after"): "soon",
    ("csv", "enabled"): "2",
    ("csv", "directory"): "",
    ("csv", "interval"): "2 d",
    ("csv", "delimiter"): "ab",
    ("csv", "decimal"): "x",
    ("csv", "flush_interval"): "2 h",
    ("history", "enabled"): "2",
    ("history", "path"): "",
    ("history", "retention"): "forever",
    ("history", "commit_interval"): "0 s",
    ("influxdb", "enabled"): "sure",
    ("influxdb", "url"): "influx.local:8086",
    ("influxdb", "api"): "v3",
    ("influxdb", "measurement"): "",
    ("influxdb", "batch_size"): "0",
    ("influxdb", "flush_interval"): "0 s",
    ("influxdb", "timeout"): "x",
    ("influxdb", "spool_dir"): "",
    ("influxdb", "spool_max"): "1 KB",
    ("influxdb", "status_interval"): "0",
    ("mqtt", "enabled"): "y3s",
    ("mqtt", "host"): "",
    ("mqtt", "port"): "70000",
    ("mqtt", "tls"): "tls1.3",
    ("mqtt", "ca_file"): "/nonexistent/ca.pem",
    ("mqtt", "cert_file"): "/nonexistent/cert.pem",
    ("mqtt", "key_file"): "/nonexistent/key.pem",
    ("mqtt", "prefix"): "smartmeter/#",
    ("mqtt", "publish_interval"): "-1",
    ("mqtt", "retain"): "2",
    ("mqtt", "qos"): "3",
    ("mqtt", "state_qos"): "-1",
    ("mqtt", "discovery"): "auto",
    ("mqtt", "discovery_prefix"): "/ha/",
    ("mqtt", "keepalive"): "1 s",
    ("mqtt", "reconnect_max"): "0 s",
    ("mqtt_translate", "enabled"): "1x",
    ("mqtt_translate", "datacollector_topics"): "smartmeter/#/x",
    ("mqtt_translate", "tasmota_topics"): "tele/+x/SENSOR",
    ("mqtt_translate", "tasmota_map"): "Pi",
    ("web", "enabled"): "maybe",
    ("web", "host"): "0.0.0.0",  # beyond loopback without a token
    ("web", "port"): "0",
}
# Free text: any value is valid (names, credentials), so they have no wrong value.
FREE_TEXT = {("influxdb", k) for k in ("token", "org", "bucket", "database", "username", "password",
                                       "retention_policy")} | {("mqtt", k) for k in ("username", "password",
                                                                                       "client_id")}


def _sample_with_relay() -> str:
    return SAMPLE.read_text() + RELAY


def _sample_keys() -> set[tuple[str, str]]:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.read_string(_sample_with_relay())
    keys = {(s, k) for s in parser.sections() for k in parser[s]}
    section = ""
    for line in SAMPLE.read_text().splitlines():  # the commented-out relay example documents them all
        if line.startswith(("[", ";[")):
            section = line.lstrip(";")
        elif section == "[relay:boiler]" and line.startswith(";") and "=" in line and not line.startswith("; "):
            keys.add(("relay:boiler", line[1:].split("=")[0].strip()))
    return keys


def test_sample_is_valid_and_every_key_is_covered() -> None:
    cfg = config.loads(_sample_with_relay())
    assert cfg.relays[0].name == "boiler"
    assert _sample_keys() - FREE_TEXT == set(BAD), "a sample key has no wrong-value test (or vice versa)"


@pytest.mark.parametrize(("section", "key"), sorted(BAD), ids=lambda x: str(x))
def test_every_bad_key_exits_2_naming_it(section: str, key: str, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    parser.read_string(_sample_with_relay())
    parser[section][key] = BAD[(section, key)]
    if section == "mqtt" and key.endswith("_file"):
        parser["mqtt"]["tls"] = "yes"
    path = tmp_path / "bad.ini"
    with path.open("w") as fh:
        parser.write(fh)
    assert main(["-c", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert f"[{section}] {key}" in err
    if key not in config.SECRET_KEYS:
        assert repr(BAD[(section, key)]) in err or BAD[(section, key)] == ""


def test_unknown_key_and_section_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match=r"\[csv\] colour = 'blue': unknown key \(known keys: decimal"):
        config.loads("[csv]\ncolour = blue\n")
    with pytest.raises(ConfigError, match=r"\[serial\]: unknown section"):
        config.loads("[serial]\nport = x\n")
    assert main(["-c", str(tmp_path / "nope.ini")]) == 2
    assert "not found" in capsys.readouterr().err


def test_durations_sizes_and_env_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.parse_duration("30 s") == 30
    assert config.parse_duration("5 min") == 300
    assert config.parse_duration("1 h") == 3600
    assert config.parse_duration("500 ms") == 0.5
    assert config.parse_size("200 MB") == 200_000_000
    monkeypatch.setenv("INFLUXDB_TOKEN", "from-env")
    cfg = config.loads("[influxdb]\ntoken = from-file\n")
    assert cfg.influxdb.token == "from-env"


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    path = tmp_path / "s.ini"
    path.write_text("[influxdb]\ntoken = sup3rs3cret\n[mqtt]\npassword = hunter2\n"
                    "[meter]\nkey = 00112233445566778899AABBCCDDEEFF\n")
    out = subprocess.run([sys.executable, str(ROOT / "app" / "main.py"), "-c", str(path), "--check-config"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for secret in ("sup3rs3cret", "hunter2", "00112233445566778899AABBCCDDEEFF", "0011223344"):
        assert secret not in out.stdout + out.stderr
    assert '"token": "***"' in out.stdout


def test_secret_in_a_bad_value_is_masked(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "k.ini"
    path.write_text("[meter]\nkey = 00112233445566778899AABBCCDDEEFFAA\n")
    assert main(["-c", str(path), "--check-config"]) == 2
    err = capsys.readouterr().err
    assert "[meter] key = '***'" in err and "0011" not in err


def test_source_urls_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"\[meter\] source = 'sockt://meter:2000': unknown URL scheme"):
        config.loads("[meter]\nsource = sockt://meter:2000\n")
    with pytest.raises(ConfigError, match=r"replay: needs a path"):
        config.loads("[meter]\nsource = replay:\n")
    assert config.loads("[meter]\nsource = socket://192.0.2.1:2000\n").meter.source.startswith("socket://")
