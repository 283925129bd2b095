"""POST/PUT/DELETE /api/energy-meters: validate like the INI, write or remove meters_dir/NAME.ini.

main watches meters_dir and starts, restarts or stops that meter's process only (app.meters.fleet); the files
stay the one source of truth. Refused with a reason: no token set ([web] token; 403), no `[general] meters_dir` (409),
the `[meter]` (P1) meter or a meter of the main INI (409: edit the file), a meter a relay's condition needs
(409 on delete), a bad body (400, the message a bad INI gets).
"""

from __future__ import annotations

import configparser
import os
from typing import Any

from app.config import Config, is_secret_key
from app.errors import ConfigError
from app.web import meter_files
from app.web.service import ApiError


def _dir(cfg: Config) -> str:
    if not cfg.web.token:
        raise ApiError(403, "changing meters needs a token: set [web] token (or SMARTMETER_WEB_TOKEN)")
    if not cfg.general.meters_dir:
        raise ApiError(409, "set [general] meters_dir (a directory for the API's meter files) to add meters "
                            "through the API")
    return cfg.general.meters_dir


def _from_main_ini(cfg: Config, meter_id: str) -> bool:
    """A [meter:NAME] written in the main config file (not in meters_dir; those come and go while running)."""
    in_dir = os.path.exists(meter_files.path_of(cfg.general.meters_dir, meter_id)) if cfg.general.meters_dir \
        else False
    return any(m.name == meter_id for m in cfg.meters) and not in_dir and meter_id in _main_ini_meters(cfg)


def _main_ini_meters(cfg: Config) -> set[str]:
    """The [meter:NAME] sections of the main config file itself."""
    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"))
    try:
        parser.read(cfg.path, encoding="utf-8")
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {m.name for m in cfg.meters}  # it loaded at the start: count every meter as the file's
    if not parser.sections():  # a config built in memory (tests, the demo): every meter is the file's
        return {m.name for m in cfg.meters}
    return {s.split(":", 1)[1].strip() for s in parser.sections() if s.startswith("meter:")}


def _shown(items: dict[str, str]) -> dict[str, str]:
    return {k: ("***" if is_secret_key(k) and v else v) for k, v in items.items()}


def write(cfg: Config, body: Any, meter_id: str | None) -> dict[str, Any]:
    """Add (meter_id None) or replace a meter's file; its id, file and keys (secrets masked)."""
    directory = _dir(cfg)
    if meter_id is not None:
        _check_changeable(cfg, meter_id)
        if not meter_files.path_of(directory, meter_id).exists():
            raise ApiError(404, f"no meter {meter_id!r} in {directory} (POST /api/energy-meters adds one)")
    try:
        ident, items = meter_files.section_items(body, meter_id)
        if meter_id is None and not ident:
            raise ConfigError("name: no letters or digits to make an id of", "")
        meter_files.validate(ident, items)
    except ConfigError as exc:
        raise ApiError(400, str(exc)) from None
    if meter_id is None:
        if ident == cfg.meter.name:
            raise ApiError(409, f"{ident!r} is the [meter] meter's name; choose another name")
        if ident in _main_ini_meters(cfg) or meter_files.path_of(directory, ident).exists():
            raise ApiError(409, f"a meter {ident!r} exists already (PUT /api/energy-meters/{ident} changes it)")
    try:
        path = meter_files.write_file(directory, ident, meter_files.ini_text(ident, items))
    except OSError as exc:
        raise ApiError(500, f"cannot write the meter file in {directory}: {exc.strerror or exc}") from None
    return {"id": ident, "file": str(path), "settings": _shown(items)}


def delete(cfg: Config, meter_id: str) -> dict[str, Any]:
    """Remove a meter's file; refused for the P1 meter, a main-INI meter and a meter a relay needs."""
    directory = _dir(cfg)
    _check_changeable(cfg, meter_id)
    for relay in cfg.relays:
        for key in ("on_when", "off_when"):
            cond = getattr(relay, key, None)
            if cond is not None and cond.quantity.split(".", 1)[0] == meter_id and "." in cond.quantity:
                raise ApiError(409, f"[relay:{relay.name}] {key} = {cond.text!r} needs meter {meter_id!r}; "
                                    "change that relay first")
    try:
        path = meter_files.path_of(directory, meter_id)
    except ConfigError as exc:
        raise ApiError(404, str(exc)) from None
    if not meter_files.remove_file(directory, meter_id):
        raise ApiError(404, f"no meter {meter_id!r} in {directory}")
    return {"id": meter_id, "file": str(path), "deleted": True}


def _check_changeable(cfg: Config, meter_id: str) -> None:
    if meter_id == cfg.meter.name:
        raise ApiError(409, f"{meter_id!r} is the [meter] (P1) meter of the main config file; the API cannot "
                            "change or delete it")
    if _from_main_ini(cfg, meter_id):
        raise ApiError(409, f"meter {meter_id!r} is set in {cfg.path}; edit that file (the API changes only "
                            "the meters in meters_dir)")
