"""Checks of a valid config against this machine, for `--check-config` and the start.

`check_environment` raises ConfigError for what would stop the appliance at start (no GPIO
library for the relays, an InfluxDB spool directory that cannot be used) and returns warnings,
each with its fix, for what would only degrade it (a serial device this user cannot open, a CSV
or history directory that cannot be written). `check_online` asks the servers (`--online`).
Nothing is created or switched: directories are probed with a temporary file, pins are only parsed.
"""

from __future__ import annotations

import base64
import glob
import json
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
                "/dev/ttyAMA*", "/dev/ttyS*")
SYS_TTY = "/sys/class/tty"  # ttyS*/type: 0 = no UART behind the device node (most of a PC's ttyS0..31)
PI_UART = ("/dev/serial0", "/dev/serial1", "/dev/ttyAMA0", "/dev/ttyS0")


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
    hint = ""
    if source in PI_UART:
        hint = ("; the Pi's UART needs enabling: sudo raspi-config nonint do_serial_hw 0 && sudo raspi-config "
                "nonint do_serial_cons 1, then reboot")
    return f"[meter] source = {source!r}: no such device; {found}{hint}"


def present_ports() -> list[str]:
    """Serial device paths that exist here: /dev/serial/by-id names first, USB adapters, the Pi's UART
    (serial0/serial1 with the device they point to, ttyAMA*, ttyS*), built-in ttyS* with a UART behind them."""
    out: list[str] = []
    for pattern in SERIAL_GLOBS:
        for path in sorted(glob.glob(pattern), key=_natural):
            if path in out or not _has_uart(path):
                continue
            out.append(path)
    return [_with_target(p) for p in out]


def _natural(path: str) -> tuple[str, int]:
    """ttyS2 before ttyS10."""
    head = path.rstrip("0123456789")
    return head, int(path[len(head):] or -1)


def _has_uart(path: str) -> bool:
    """False for a ttyS* node whose sysfs type says no UART is there (a PC lists 32 of them)."""
    name = os.path.basename(path)
    if not name.startswith("ttyS"):
        return True
    try:
        return int(Path(SYS_TTY, name, "type").read_text(encoding="ascii").strip()) != 0
    except (OSError, ValueError):
        return True  # no sysfs to ask: list it


def _with_target(path: str) -> str:
    """/dev/serial0 shown with the UART it points to (ttyS0 on a Pi 3/4/5 with Bluetooth on, else ttyAMA0)."""
    if os.path.basename(path) in ("serial0", "serial1") and os.path.islink(path):
        return f"{path} (-> {os.path.realpath(path)})"
    return path


def check_online(cfg: Config, timeout_s: float = 5.0) -> list[str]:
    """Ask the enabled servers (InfluxDB ping, then an empty write with the credentials; MQTT connect);
    return a warning per failure."""
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
        else:
            why = influx_write_problem(cfg, url, timeout_s)
            if why is not None:
                warnings.append(why)
    if cfg.mqtt.enabled:
        why = _mqtt_problem(cfg, timeout_s)
        if why is not None:
            warnings.append(f"[mqtt] host = {cfg.mqtt.host!r}: {why}")
    return warnings


def influx_write_problem(cfg: Config, url: str, timeout_s: float) -> str | None:
    """Write nothing, as the sink writes (v2: token, org, bucket; v1: user, database, retention policy):
    the server checks the credentials and the target before it reads the (empty) body. None when accepted."""
    i = cfg.influxdb
    if i.api == "v1":
        params = {"db": i.database, "precision": "s", **({"rp": i.retention_policy} if i.retention_policy else {})}
        req = urllib.request.Request(f"{url}/write?{urllib.parse.urlencode(params)}", data=b"", method="POST")
        if i.username:
            pair = base64.b64encode(f"{i.username}:{i.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {pair}")
    else:
        params = {"org": i.org, "bucket": i.bucket, "precision": "s"}
        req = urllib.request.Request(f"{url}/api/v2/write?{urllib.parse.urlencode(params)}", data=b"",
                                     method="POST")
        if i.token:
            req.add_header("Authorization", f"Token {i.token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read(0)
            return None
    except urllib.error.HTTPError as exc:
        status, message = exc.code, _server_message(exc, (i.token, i.password))
    except (urllib.error.URLError, OSError) as exc:
        return f"[influxdb] url = {_without_userinfo(i.url)[1]!r}: a test write failed ({getattr(exc, 'reason', exc)})"
    return _influx_verdict(cfg, status, message)


def _influx_verdict(cfg: Config, status: int, message: str) -> str | None:
    i = cfg.influxdb
    said = f"HTTP {status}{': ' + message if message else ''}"
    if status == 400:
        return None  # past the credentials and the bucket: only the empty body was refused
    if i.api == "v1":
        who = f"username = {i.username!r}" if i.username else "username (none set)"
        if status == 401:
            return (f"[influxdb] {who}: the server refused the credentials ({said}); check username and "
                    "password (or INFLUXDB_PASSWORD)")
        if status == 403:
            return f"[influxdb] {who}: may not write to database {i.database!r} ({said}); GRANT WRITE to the user"
        if status == 404:
            return (f"[influxdb] database = {i.database!r}: no such database ({said}); create it: "
                    f"influx -execute 'CREATE DATABASE \"{i.database}\"'")
        if "retention policy" in message:
            return f"[influxdb] retention_policy = {i.retention_policy!r}: no such retention policy ({said})"
        return f"[influxdb] database = {i.database!r}: a test write failed ({said})"
    if status == 401:
        return (f"[influxdb] token = '***': the server refused the token ({said}); check the token "
                "(or INFLUXDB_TOKEN; InfluxDB 1.8: token = username:password)")
    if status == 403:
        return (f"[influxdb] token = '***': the token may not write to bucket {i.bucket!r} ({said}); give it "
                "write access to the bucket")
    if status == 404 and "page not found" in message:
        return (f"[influxdb] api = 'v2': the server has no /api/v2/write ({said}); InfluxDB 1.x before 1.8 "
                "needs api = v1 with database")
    if status == 404:
        return (f"[influxdb] bucket = {i.bucket!r}: no such bucket in org {i.org!r} ({said}); create it or fix "
                "bucket/org (InfluxDB 1.8: bucket = database/retention_policy)")
    return f"[influxdb] bucket = {i.bucket!r}: a test write failed ({said})"


def _server_message(exc: urllib.error.HTTPError, secrets: tuple[str, ...]) -> str:
    """The server's error text, short, on one line, with no secret in it."""
    try:
        raw = exc.read(2000).decode("utf-8", "replace")
    except OSError:
        return ""
    try:
        doc = json.loads(raw)
        text = str(doc.get("message") or doc.get("error") or raw) if isinstance(doc, dict) else raw
    except ValueError:
        text = raw
    text = " ".join(text.split())[:200]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


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
