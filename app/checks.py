"""Checks of a valid config against this machine, for `--check-config` and the start.

`check_environment` raises ConfigError for what would stop the appliance at start (no GPIO
library for the relays, an InfluxDB spool directory that cannot be used) and returns warnings,
each with its fix, for what would only degrade it (a serial device this user cannot open, a CSV
or history directory that cannot be written). `check_online` asks the servers (`--online`).
Nothing is created or switched: directories are probed with a temporary file, pins are only parsed.
"""

from __future__ import annotations

import glob
import os
import pwd
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from app.config import Config
from app.errors import ConfigError

SERIAL_GLOBS = ("/dev/serial/by-id/*", "/dev/ttyUSB*", "/dev/ttyACM*", "/dev/serial0", "/dev/serial1",
                "/dev/ttyAMA*")


def user() -> str:
    """The name of the user these checks run as."""
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def dir_problem(path: str) -> str | None:
    """Why `path` cannot be used as a writable directory by this user (None when it can)."""
    p = Path(path)
    if p.exists():
        if not p.is_dir():
            return "exists but is not a directory"
        return _probe(p, "is not writable")
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"cannot be created: {str(parent)!r} is a file, not a directory"
    why = _probe(parent, "is not writable")
    return None if why is None else f"does not exist and cannot be created: {str(parent)!r} {why}"


def _probe(directory: Path, what: str) -> str | None:
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".smartmeter-check-"):
            return None
    except OSError as exc:
        return f"{what} by user {user()} ({exc.strerror or exc})"


def check_environment(cfg: Config) -> list[str]:
    """Raise ConfigError for what would stop the appliance; return warnings with their fix."""
    warnings: list[str] = []
    _check_gpio(cfg)
    if cfg.influxdb.enabled:
        why = dir_problem(cfg.influxdb.spool_dir)
        if why is not None:
            raise ConfigError(f"[influxdb] spool_dir = {cfg.influxdb.spool_dir!r}: {why}; "
                              f"{_mkdir_hint(cfg.influxdb.spool_dir)}", "influxdb", "spool_dir")
    if cfg.csv.enabled:
        why = dir_problem(cfg.csv.directory)
        if why is not None:
            warnings.append(f"[csv] directory = {cfg.csv.directory!r}: {why}; {_mkdir_hint(cfg.csv.directory)}")
    if cfg.history.enabled and cfg.history.path:
        parent = str(Path(cfg.history.path).parent)
        why = dir_problem(parent)
        if why is not None:
            warnings.append(f"[history] path = {cfg.history.path!r}: its directory {why}; {_mkdir_hint(parent)}")
    serial = serial_warning(cfg.meter.source)
    if serial is not None:
        warnings.append(serial)
    return warnings


def _check_gpio(cfg: Config) -> None:
    gpio = [r for r in cfg.relays if r.device is None]  # network relays need no GPIO library
    if not gpio or cfg.control.dry_run or cfg.meter.replay_path is not None:
        return
    from app.control.relays import gpio_library_problem

    problem = gpio_library_problem()
    if problem is not None:
        first = gpio[0]
        raise ConfigError(f"[relay:{first.name}] pin = {first.pin!r}: {problem}", f"relay:{first.name}", "pin")


def _mkdir_hint(path: str) -> str:
    return f"create it for the service user: sudo install -d -o smartmeter -g smartmeter {path}"


def serial_warning(source: str) -> str | None:
    """A warning with its fix when `source` is a device path this user cannot open, else None."""
    if source.startswith("replay:") or "://" in source:
        return None
    if os.path.exists(source):
        if os.access(source, os.R_OK | os.W_OK):
            return None
        return (f"[meter] source = {source!r}: user {user()} may not open it; add the user to the dialout "
                f"group (sudo usermod -aG dialout {user()}, then log in again)")
    ports = present_ports()
    found = f"ports present: {', '.join(ports)}" if ports else "no serial port is present (is the cable plugged in?)"
    return f"[meter] source = {source!r}: no such device; {found}"


def present_ports() -> list[str]:
    """Serial device paths that exist here, /dev/serial/by-id names first."""
    out: list[str] = []
    for pattern in SERIAL_GLOBS:
        out += [p for p in sorted(glob.glob(pattern)) if p not in out]
    return out


def check_online(cfg: Config, timeout_s: float = 5.0) -> list[str]:
    """Ask the enabled servers (InfluxDB ping, MQTT connect); return a warning per failure."""
    warnings: list[str] = []
    if cfg.influxdb.enabled:
        url, shown = _without_userinfo(cfg.influxdb.url)  # /ping needs no credentials; never show them
        try:
            with urllib.request.urlopen(f"{url}/ping", timeout=timeout_s) as resp:
                resp.read(0)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            warnings.append(f"[influxdb] url = {shown!r}: no answer to /ping ({reason}); "
                            "is InfluxDB running and the URL right?")
    if cfg.mqtt.enabled:
        why = _mqtt_problem(cfg, timeout_s)
        if why is not None:
            warnings.append(f"[mqtt] host = {cfg.mqtt.host!r}: {why}")
    return warnings


def _without_userinfo(url: str) -> tuple[str, str]:
    """(the URL without `user:password@`, the URL to show: its user info masked)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url, url
    host = parts.netloc.rsplit("@", 1)[1]
    return (urllib.parse.urlunsplit(parts._replace(netloc=host)),
            urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}")))


def _mqtt_problem(cfg: Config, timeout_s: float) -> str | None:
    import threading

    import paho.mqtt.client as mqtt

    m = cfg.mqtt
    result: list[str] = []
    done = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="", protocol=mqtt.MQTTv311)
    if m.username:
        client.username_pw_set(m.username, m.password or None)
    if m.tls:
        client.tls_set(ca_certs=m.ca_file or None, certfile=m.cert_file or None, keyfile=m.key_file or None)

    def on_connect(_c: object, _u: object, _flags: object, reason: object, _props: object = None) -> None:
        if getattr(reason, "is_failure", False):
            result.append(f"the broker refused the connection ({reason})")
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(m.host, m.port, keepalive=max(5, int(m.keepalive)))
    except OSError as exc:
        return f"cannot connect to port {m.port} ({exc.strerror or exc})"
    client.loop_start()
    try:
        if not done.wait(timeout_s):
            return f"no CONNACK from port {m.port} within {timeout_s:g} s"
    finally:
        client.disconnect()
        client.loop_stop()
    return result[0] if result else None
