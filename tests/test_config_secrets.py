"""No config error ever echoes a secret (issue 11 item 10): stderr goes to journald."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app import config
from app.errors import ConfigError
from app.main import main
from tests.test_config_errors import check

SECRET = "Hunter2-s3cr3t-Value"


@pytest.mark.parametrize(("ini", "says"), [
    # a typo of a secret key
    (f"[mqtt]\nenabled = yes\npasword = {SECRET}\n", "[mqtt] pasword = '***': unknown key (did you mean password?)"),
    # a secret key in the wrong section
    (f"[mqtt]\ntoken = {SECRET}\n", "[mqtt] token = '***': unknown key (it belongs in [influxdb]"),
    (f"[csv]\npassword = {SECRET}\n", "[csv] password = '***': unknown key (it belongs in [influxdb] or [mqtt]"),
    # a first line before any section: configparser's MissingSectionHeaderError quotes the line
    (f"token = {SECRET}\n[mqtt]\n", "line 1: `token = …` comes before the first [section] header"),
    (f"{SECRET}\n[mqtt]\n", "line 1: a line (the line is not shown: it may hold a secret) comes before"),
    # a bare secret line with no `=`: configparser's ParsingError quotes it
    (f"[mqtt]\nusername = bob\n{SECRET}\n", "line 3: neither `key = value` nor a [section] header"),
    # an indented secret line is joined to the value above it
    (f"[mqtt]\nusername = bob\n  password = {SECRET}\n", "[mqtt] username: the value runs over 2 lines"),
    (f"[mqtt]\nhost = broker.lan\n    {SECRET}\n", "[mqtt] host: the value runs over 2 lines"),
    (f"[influxdb]\norg = home\n\ttoken = {SECRET}\n", "[influxdb] org: the value runs over 2 lines"),
    # an indented secret joined to a list value, and an unknown key with a joined line
    (f"[mqtt]\nenabled = yes\n[mqtt_translate]\ntasmota_map = Pi=power/power_in\n  password = {SECRET}\n",
     "[mqtt_translate] tasmota_map: an indented line below it sets a secret-looking key"),
    (f"[csv]\ncolour = blue\n  {SECRET}\n", "[csv] colour = <2 lines, not shown>: unknown key"),
    # a bad value of a known secret key
    (f"[meter]\nkey = {SECRET}\n", "[meter] key = '***': expected 32 hex digits"),
    (f"[meter]\nauth_key = {SECRET}\n", "[meter] auth_key = '***'"),
    # a secret twice in one section
    (f"[mqtt]\npassword = a\npassword = {SECRET}\n", "line 3: [mqtt] password: set twice"),
])
def test_no_error_echoes_a_secret(tmp_path: Path, ini: str, says: str) -> None:
    out = check(tmp_path, ini)
    assert out.returncode == 2, out
    assert says in out.stderr
    assert SECRET not in out.stderr + out.stdout
    assert "Hunter2" not in out.stderr + out.stdout
    with pytest.raises(ConfigError) as info:
        config.loads(ini)
    assert SECRET not in str(info.value)


def test_a_valid_secret_is_masked_in_the_effective_config(tmp_path: Path) -> None:
    out = check(tmp_path, f"[mqtt]\npassword = {SECRET}\n[influxdb]\ntoken = {SECRET}\n")
    assert out.returncode == 0, out.stderr
    assert SECRET not in out.stdout + out.stderr
    assert '"password": "***"' in out.stdout and '"token": "***"' in out.stdout


@pytest.mark.parametrize("key", ["password", "passwd", "pasword", "token", "tokn", "secret", "api_key", "auth",
                                 "auth_token", "Password", "apiKey", "credentials", "private_key", "pw", "kye"])
def test_secret_looking_names(key: str) -> None:
    assert config.looks_secret(key)


def test_no_ordinary_key_looks_secret() -> None:
    known = {(name, key) for name, keys in config._section_keys().items() for key in keys}
    flagged = {(s, k) for s, k in known if config.is_secret_key(k)}
    assert flagged == {("influxdb", "password"), ("influxdb", "token"), ("meter", "auth_key"), ("meter", "key"),
                       ("mqtt", "password")} | {(s, k) for s, k in flagged if s not in
                                                ("influxdb", "meter", "mqtt", "general", "control", "csv")}
    for key in ("pin", "on_when", "host", "path", "port", "api", "prefix", "database", "keepalive", "key_file"):
        assert not config.is_secret_key(key), key


SECTIONS = ["general", "meter", "control", "csv", "influxdb", "mqtt", "mqtt_translate", "relay:boiler", "history"]
BASES = ["password", "passwd", "passphrase", "token", "secret", "key", "auth", "apikey", "credentials", "private"]
PREFIXES = ["", "mqtt_", "influx_", "my_", "api_", "old-"]
SUFFIXES = ["", "_2", "_old", "s", "_value"]


@st.composite
def secret_names(draw: st.DrawFn) -> str:
    """A secret-looking key name: a secret word with at most one typo, maybe a prefix or suffix."""
    word = draw(st.sampled_from(BASES))
    typo = draw(st.sampled_from(["none", "drop", "double", "swap"]))
    i = draw(st.integers(0, len(word) - 2))
    if typo == "drop":
        word = word[:i] + word[i + 1:]
    elif typo == "double":
        word = word[:i] + word[i] + word[i:]
    elif typo == "swap":
        word = word[:i] + word[i + 1] + word[i] + word[i + 2:]
    prefix = draw(st.sampled_from(PREFIXES))
    suffix = draw(st.sampled_from(SUFFIXES))
    return prefix + word + suffix


VALUES = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=";#=:[\\"),
                 min_size=4, max_size=40).map(lambda s: "Zq" + s.strip() + "Zq")


def _typos(word: str) -> set[str]:
    out = {word}
    for i in range(len(word) - 1):
        out |= {word[:i] + word[i + 1:], word[:i] + word[i] + word[i:], word[:i] + word[i + 1] + word[i] + word[i + 2:]}
    return out


def test_every_name_the_property_draws_looks_secret() -> None:
    names = {p + w + s for base in BASES for w in _typos(base) for p in PREFIXES for s in SUFFIXES}
    assert len(names) > 5000
    assert [n for n in sorted(names) if not config.is_secret_key(n)] == []


@settings(max_examples=150)
@given(name=secret_names(), value=VALUES, section=st.sampled_from(SECTIONS),
       place=st.sampled_from(["key", "top", "bare", "indented", "indented-key"]))
def test_property_no_secret_value_in_any_output(name: str, value: str, section: str, place: str) -> None:
    head = f"[{section}]\n" + ("pin = GPIO17\non_when = export > 1 kW\n" if section == "relay:boiler" else "")
    line = f"{name} = {value}"
    ini = {
        "key": head + line + "\n",
        "top": line + "\n" + head,
        "bare": head + value + "\n",
        "indented": "[mqtt]\nusername = bob\n    " + value + "\n",
        "indented-key": "[mqtt]\nusername = bob\n    " + line + "\n",
    }[place]
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"GPIOZERO_PIN_FACTORY": "mock"}):
        path = Path(tmp) / "s.ini"
        path.write_text(ini, encoding="utf-8")
        err, out = io.StringIO(), io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            code = main(["-c", str(path), "--check-config"])
        assert value not in err.getvalue() + out.getvalue()
        assert code in (0, 2)
        try:
            config.load(path)
        except ConfigError as exc:
            assert value not in str(exc)
            assert value not in repr(exc.args)


def test_credentials_in_a_url_are_refused_and_never_shown() -> None:
    """urllib would take `user:pass@host` for the host name: the sink never connects. Say so, without the password."""
    with pytest.raises(ConfigError) as err:
        config.loads("[influxdb]\nenabled = yes\nurl = http://admin:s3cr3tpw@localhost:8086\n")
    assert "s3cr3tpw" not in str(err.value)
    assert "[influxdb] url = 'http://***@localhost:8086'" in str(err.value)
    assert "username and password" in str(err.value)
