"""The meter registry's write side: the WAGO guide's JSON body <-> a `[meter:NAME]` INI file in `meters_dir`.

    POST /api/energy-meters
    {"name": "PV inverter", "location": "garage", "protocol": "modbus", "meterType": "solar",
     "pollInterval": 5000, "communication": {"ipAddress": "192.168.1.50", "port": 502, "unitId": 1,
                                               "registers": {"power": 20480, "energy": 20482}}}
      -> meters_dir/pv_inverter.ini
         [meter:pv_inverter]
         role = solar
         location = garage
         protocol = modbus
         poll_interval = 5000 ms
         source = tcp://192.168.1.50:502
         unit_id = 1
         register_power = 20480
         register_energy = 20482

The section is validated by the same parser as the main INI (app.meters.parse_meter), so a bad body gets the
message a bad INI gets. The INI files stay the one source of truth: a person may edit them. Pure except
`write_file` / `remove_file` / `read_dir`.
"""

from __future__ import annotations

import configparser
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from app.errors import ConfigError

ROLE_OF_TYPE = {"grid": "grid", "main": "grid", "building": "building", "consumer": "building", "load": "building",
                "consumption": "building", "solar": "solar", "pv": "solar", "production": "solar",
                "generator": "solar", "zone": "zone", "sub": "zone", "submeter": "zone", "plug": "zone"}
PROTOCOL_ALIASES = {"modbus_tcp": "modbus", "modbus-tcp": "modbus", "modbus_rtu": "modbus", "modbus-rtu": "modbus",
                    "iec62056": "iec62056-21", "iec-62056-21": "iec62056-21", "d0": "iec62056-21",
                    "kasa": "tapo", "rest": "http", "https": "http"}
KEY_ALIASES = {"ip_address": "host", "ip": "host", "slave_id": "unit_id", "device_id": "unit_id",
               "baud_rate": "baudrate", "serial_port": "port", "auth_token": "auth_token", "token": "auth_token",
               "template": "preset", "register_type": "register_table"}
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_TOP_KEYS = {"id", "name", "location", "protocol", "meterType", "pollInterval", "communication", "offlineAfter",
             "enabled"}


def snake(key: str) -> str:
    """`ipAddress` -> `ip_address`, `register-power` -> `register_power`."""
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).replace("-", "_").lower()


def meter_id(name: str) -> str:
    """A meter id usable as `[meter:NAME]` and in conditions from a display name (`PV Inverter` -> `pv_inverter`)."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")[:32]
    if slug and not slug[0].isalpha():
        slug = f"m_{slug}"[:32]
    return slug


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ConfigError(f"expected a number or text, got {type(value).__name__}", "")


def section_items(body: Any, fixed_id: str | None = None) -> tuple[str, dict[str, str]]:
    """The body -> (meter id, the [meter:NAME] keys); ConfigError saying what is wrong with the body."""
    if not isinstance(body, dict):
        raise ConfigError("the body must be a JSON object", "")
    unknown = sorted(set(body) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})", "")
    name = body.get("id") or body.get("name")
    if fixed_id is not None:
        ident = fixed_id
    elif not isinstance(name, str) or not name.strip():
        raise ConfigError("name: missing (e.g. \"PV inverter\")", "")
    else:
        ident = name if _NAME_RE.match(name) else meter_id(name)
    items: dict[str, str] = {}
    protocol = body.get("protocol")
    if not isinstance(protocol, str) or not protocol:
        raise ConfigError("protocol: missing (modbus, mqtt, http, iec62056-21, tapo)", "")
    items["protocol"] = PROTOCOL_ALIASES.get(protocol.lower(), protocol.lower())
    if body.get("meterType") is not None:
        mt = _text(body["meterType"]).lower()
        items["role"] = ROLE_OF_TYPE.get(mt, mt)
    if body.get("location"):
        items["location"] = _text(body["location"])
    if body.get("pollInterval") is not None:
        items["poll_interval"] = f"{_text(body['pollInterval'])} ms"
    if body.get("offlineAfter") is not None:
        items["offline_after"] = f"{_text(body['offlineAfter'])} ms"
    comm = body.get("communication") or {}
    if not isinstance(comm, dict):
        raise ConfigError("communication must be a JSON object", "")
    items.update(_communication(items["protocol"], comm))
    return ident, items


def _communication(protocol: str, comm: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in comm.items():
        k = KEY_ALIASES.get(snake(key), snake(key))
        if isinstance(value, dict):
            if k in ("registers", "topics", "paths"):
                prefix = {"registers": "register_", "topics": "topic_", "paths": "path_"}[k]
                for sub, v in value.items():
                    sk = snake(sub)
                    out[prefix + ("energy_high" if sk == "energy_high" else sk)] = _text(v)
                continue
            if k == "headers":
                out["headers"] = "\n".join(f"{h}: {_text(v)}" for h, v in value.items())
                continue
            raise ConfigError(f"communication.{key}: expected a number or text", "")
        if isinstance(value, list):
            raise ConfigError(f"communication.{key}: expected a number or text", "")
        out[k] = _text(value)
    if protocol == "modbus" and "source" not in out:
        if "host" in out:
            out["source"] = f"tcp://{out.pop('host')}:{out.pop('port', '502')}"
        elif "port" in out:
            query = "&".join(f"{k}={out.pop(k)}" for k in ("baudrate", "parity", "stopbits") if k in out)
            out["source"] = f"rtu://{out.pop('port')}" + (f"?{query}" if query else "")
    if protocol == "mqtt" and "host" in out and "port" not in out:
        out["port"] = "1883"
    return out


def validate(ident: str, items: dict[str, str]) -> Any:
    """The MeterSpec the INI parser makes of these keys (ConfigError as for a bad INI, unknown keys too)."""
    from app.config import Section
    from app.meters import parse_meter

    sec = Section(f"meter:{ident}", items)
    spec = parse_meter(sec, ident)
    sec.check_unknown()
    return spec


def ini_text(ident: str, items: dict[str, str]) -> str:
    """The INI file for one meter (multi-line values indented, as configparser reads them back)."""
    lines = ["; written by the web API (POST/PUT /api/energy-meters); editing by hand is fine", f"[meter:{ident}]"]
    for k, v in items.items():
        lines.append(f"{k} = {v.replace(chr(10), chr(10) + '    ')}")
    return "\n".join(lines) + "\n"


def path_of(directory: str, ident: str) -> Path:
    """meters_dir/NAME.ini (the id is checked: no path can come out of it)."""
    if not _NAME_RE.match(ident):
        raise ConfigError(f"meter id {ident!r}: a-z, 0-9 and _ only", "")
    return Path(directory) / f"{ident}.ini"


def write_file(directory: str, ident: str, text: str) -> Path:
    """Write NAME.ini atomically (temp file + rename), readable by its owner only (it may hold a secret)."""
    target = path_of(directory, ident)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{ident}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def remove_file(directory: str, ident: str) -> bool:
    """Delete NAME.ini; whether it was there."""
    target = path_of(directory, ident)
    try:
        target.unlink()
    except FileNotFoundError:
        return False
    return True


def read_dir(directory: str) -> list[tuple[str, dict[str, str], str]]:
    """Every meters_dir/NAME.ini as (NAME, keys, file); ConfigError naming the file for a bad one."""
    if not directory or not os.path.isdir(directory):
        return []
    return [(path.stem, read_dir_file(path), str(path)) for path in sorted(Path(directory).glob("*.ini"))]


def read_dir_file(path: Path) -> dict[str, str]:
    """One meters_dir/NAME.ini's [meter:NAME] keys; ConfigError naming the file for a bad one."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not an INI file ({type(exc).__name__})", "") from None
    sections = parser.sections()
    want = f"meter:{path.stem}"
    if sections != [want]:
        raise ConfigError(f"{path}: must hold exactly one section, [{want}] (found "
                          f"{', '.join(f'[{s}]' for s in sections) or 'none'})", "")
    return dict(parser[want])
