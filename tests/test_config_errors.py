"""Config errors that used to surface only at runtime (traceback, exit 1, a restart every 2 s) are
`--check-config` errors, exit 2, naming `[section] key = value` and the fix (issues 10, 11, 16)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import config
from app.errors import ConfigError
from tests.conftest import ROOT

MAIN = ROOT / "app" / "main.py"
RELAY = "[relay:{name}]\npin = {pin}\non_when = export > 1500 W for 60 s\n"


def check(tmp_path: Path, ini: str, *extra: str, env: dict[str, str] | None = None,
          factory: str | None = "mock") -> subprocess.CompletedProcess[str]:
    """`python app/main.py -c FILE --check-config` on `ini`, as a user would run it."""
    path = tmp_path / "smartmeter.ini"
    path.write_text(ini)
    full = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    if factory is not None:
        full["GPIOZERO_PIN_FACTORY"] = factory
    full.update(env or {})
    return subprocess.run([sys.executable, str(MAIN), "-c", str(path), "--check-config", *extra],
                          capture_output=True, text=True, timeout=120, env=full)


def relays(*pins: str) -> str:
    return "".join(RELAY.format(name=f"r{i}", pin=pin) for i, pin in enumerate(pins))


# ---------------------------------------------------------------- relay pins (issue 10, issue 11 item 11)


@pytest.mark.parametrize(("pin", "why"), [
    ("GPIO99", "no GPIO line 99 on the header"),
    ("pin11", "not a pin name: write BOARD11 for physical pin 11"),
    ("NOTAPIN", "not a pin name"),
    ("BOARD6", "physical pin 6 is ground"),
    ("BOARD41", "the header has physical pins 1-40 only"),
])
def test_a_bad_pin_exits_2_naming_it(tmp_path: Path, pin: str, why: str) -> None:
    out = check(tmp_path, relays(pin))
    assert out.returncode == 2, out
    assert f"[relay:r0] pin = '{pin}': {why}" in out.stderr
    assert "valid: GPIO17, BCM17, 17, BOARD11, J8:11" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("alias", ["BCM17", "BOARD11", "gpio17", "17", "J8:11", "bcm17", "WPI0"])
def test_two_names_for_one_line_exit_2(tmp_path: Path, alias: str) -> None:
    out = check(tmp_path, relays("GPIO17", alias))
    assert out.returncode == 2, out
    assert f"[relay:r1] pin = '{alias}': the same line (GPIO17) as [relay:r0] pin = 'GPIO17'" in out.stderr


def test_distinct_lines_in_any_spelling_are_fine(tmp_path: Path) -> None:
    out = check(tmp_path, relays("GPIO17", "BOARD13", "gpio22", "23", "J8:18"))
    assert out.returncode == 0, out.stderr


def _no_lgpio(tmp_path: Path) -> dict[str, str]:
    """An environment where `import lgpio` fails, as on a Pi without python3-lgpio."""
    fake = tmp_path / "fake-site"
    fake.mkdir(exist_ok=True)
    (fake / "lgpio.py").write_text("raise ImportError(\"No module named 'lgpio'\")\n")
    return {"PYTHONPATH": str(fake)}


def test_a_missing_gpio_library_exits_2_with_the_fix(tmp_path: Path) -> None:
    out = check(tmp_path, relays("GPIO17"), env=_no_lgpio(tmp_path), factory="lgpio")
    assert out.returncode == 2, out
    assert "[relay:r0] pin = 'GPIO17': no GPIO library could be loaded (lgpio)" in out.stderr
    assert "sudo apt install python3-lgpio" in out.stderr and "pip install lgpio" in out.stderr
    # dry run touches no pin, so it needs no library
    out = check(tmp_path, "[control]\ndry_run = yes\n" + relays("GPIO17"), env=_no_lgpio(tmp_path),
                factory="lgpio")
    assert out.returncode == 0, out.stderr


def test_a_missing_gpio_library_stops_the_start_with_exit_2_not_a_restart_loop(tmp_path: Path) -> None:
    path = tmp_path / "smartmeter.ini"
    path.write_text("[meter]\nsource = /dev/ttyNOSUCH0\n" + relays("GPIO17"))
    env = {k: v for k, v in os.environ.items() if k != "GPIOZERO_PIN_FACTORY"}
    env |= _no_lgpio(tmp_path) | {"GPIOZERO_PIN_FACTORY": "lgpio"}
    out = subprocess.run([sys.executable, str(MAIN), "-c", str(path)], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 2, out  # systemd's RestartPreventExitStatus=2: no restart every 2 s
    assert "python3-lgpio" in out.stderr and "Traceback" not in out.stderr


# ---------------------------------------------------------------- paths, URLs, TLS (issue 11 item 11)


@pytest.mark.parametrize(("section", "key"), [
    ("csv", "directory"), ("influxdb", "spool_dir"), ("history", "path"), ("mqtt", "ca_file"),
    ("meter", "source"),
])
def test_a_nul_byte_in_a_path_exits_2(tmp_path: Path, section: str, key: str) -> None:
    out = check(tmp_path, f"[{section}]\n{key} = /var/lib/smart\x00meter\n")
    assert out.returncode == 2, out
    assert f"[{section}] {key} = '/var/lib/smart\\x00meter': contains a NUL byte" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize(("url", "why"), [
    ("http://localhost:99999", "the port must be a number from 1 to 65535"),
    ("http://localhost:abc", "the port must be a number from 1 to 65535"),
    ("http://localhost:0", "the port must be a number from 1 to 65535"),
    ("http://:8086", "the URL has no host name"),
])
def test_influxdb_url_with_a_bad_port_exits_2(tmp_path: Path, url: str, why: str) -> None:
    out = check(tmp_path, f"[influxdb]\nurl = {url}\n")
    assert out.returncode == 2, out
    assert f"[influxdb] url = '{url}': {why}" in out.stderr


def test_an_unwritable_spool_directory_exits_2(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    spool = blocker / "spool"
    out = check(tmp_path, f"[influxdb]\nenabled = yes\nspool_dir = {spool}\n")
    assert out.returncode == 2, out
    assert f"[influxdb] spool_dir = '{spool}': cannot be created: '{blocker}' is a file" in out.stderr
    out = check(tmp_path, f"[influxdb]\nenabled = yes\nspool_dir = {blocker}\n")
    assert out.returncode == 2 and "exists but is not a directory" in out.stderr
    out = check(tmp_path, f"[influxdb]\nenabled = yes\nspool_dir = {tmp_path / 'new' / 'spool'}\n")
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "new").exists()  # checking creates nothing


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_read_only_spool_directory_exits_2(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    out = check(tmp_path, f"[influxdb]\nenabled = yes\nspool_dir = {ro / 'spool'}\n")
    assert out.returncode == 2 and "cannot be created" in out.stderr


def test_a_bad_tls_ca_file_exits_2(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("this is not a certificate\n")
    out = check(tmp_path, f"[mqtt]\ntls = yes\nca_file = {ca}\n")
    assert out.returncode == 2, out
    assert f"[mqtt] ca_file = '{ca}': not a PEM CA certificate" in out.stderr


def test_a_real_ca_file_and_client_certificate_pass(tmp_path: Path) -> None:
    cryptography = pytest.importorskip("cryptography")
    assert cryptography
    from tests.test_config_checks import make_cert

    cert, key = make_cert(tmp_path)
    out = check(tmp_path, f"[mqtt]\ntls = yes\nca_file = {cert}\ncert_file = {cert}\nkey_file = {key}\n")
    assert out.returncode == 0, out.stderr
    out = check(tmp_path, f"[mqtt]\ntls = yes\ncert_file = {key}\nkey_file = {key}\n")
    assert out.returncode == 2 and "[mqtt] cert_file = " in out.stderr
    out = check(tmp_path, f"[mqtt]\ntls = yes\nkey_file = {key}\n")
    assert out.returncode == 2 and "needs cert_file" in out.stderr


# ---------------------------------------------------------------- typos (issue 16)


def test_an_unknown_key_is_named_before_the_missing_one_with_a_hint(tmp_path: Path) -> None:
    out = check(tmp_path, "[relay:boiler]\npin = GPIO17\non_wen = export > 1500 W for 60 s\n")
    assert out.returncode == 2, out
    assert "[relay:boiler] on_wen = 'export > 1500 W for 60 s': unknown key (did you mean on_when?)" in out.stderr
    assert "on_when: missing" not in out.stderr


def test_unknown_key_hints() -> None:
    with pytest.raises(ConfigError, match=r"\[mqtt\] prot = '1883': unknown key \(did you mean port\?\)"):
        config.loads("[mqtt]\nprot = 1883\n")
    with pytest.raises(ConfigError, match=r"\[csv\] spool_dir = '/tmp': unknown key \(it belongs in \[influxdb\]\)"):
        config.loads("[csv]\nspool_dir = /tmp\n")
    with pytest.raises(ConfigError, match=r"\[general\] zzz = '1': unknown key \(known keys: log_interval, log_level"):
        config.loads("[general]\nzzz = 1\n")


@pytest.mark.parametrize("cond", ["export > 1,5 kW", "export > 1, 5 kW for 60 s", "import >= 0,5 kW"])
def test_a_decimal_comma_in_a_condition_gets_a_hint(tmp_path: Path, cond: str) -> None:
    out = check(tmp_path, f"[relay:boiler]\npin = GPIO17\non_when = {cond}\n")
    assert out.returncode == 2, out
    assert f"[relay:boiler] on_when = '{cond}': decimal comma in" in out.stderr
    assert ": write 1.5" in out.stderr or ": write 0.5" in out.stderr


def test_a_decimal_comma_in_a_duration_gets_a_hint() -> None:
    with pytest.raises(ConfigError, match=r"\[relay:b\] min_on = '1,5 min': decimal comma: write '1.5 min'"):
        config.loads("[relay:b]\npin = GPIO17\non_when = export > 1 kW\nmin_on = 1,5 min\n")
    with pytest.raises(ConfigError, match=r"decimal comma in duration '1,5 min': write '1.5 min'"):
        config.loads("[relay:b]\npin = GPIO17\non_when = export > 1 kW for 1,5 min\n")


def test_list_values_may_still_run_over_lines() -> None:
    cfg = config.loads("[mqtt]\nenabled = yes\n[mqtt_translate]\nenabled = yes\n"
                       "tasmota_topics = tele/a/SENSOR,\n  tele/b/SENSOR\n")
    assert cfg.mqtt_translate.tasmota_topics == ("tele/a/SENSOR", "tele/b/SENSOR")
    with pytest.raises(ConfigError, match=r"\[csv\] colour = <2 lines, not shown>: unknown key"):
        config.loads("[csv]\ncolour = blue\n  green\n")
