"""`--check-config`: relay pins that another program holds (the rest of the checks: app.checks).

A valid config can still switch nothing when a relay's GPIO line is already requested by another
process (a second smartmeter, a script, an overlay). The Linux GPIO character device tells who
holds a line without requesting it: nothing is switched or claimed here.
"""

from __future__ import annotations

import fcntl
import glob
import grp
import os
import re
import struct
from collections.abc import Callable

from app.checks import user
from app.config import Config

_GPIO_CHIPINFO = (2 << 30) | (68 << 16) | (0xB4 << 8) | 0x01  # _IOR(0xB4, 1, struct gpiochip_info)
_GPIO_LINEINFO = (3 << 30) | (72 << 16) | (0xB4 << 8) | 0x02  # _IOWR(0xB4, 2, struct gpioline_info)
_LINE_USED = 1  # GPIOLINE_FLAG_KERNEL: requested by the kernel or another process


def bcm_number(pin: str) -> int | None:
    """GPIO17 / BCM17 / 17 -> 17; other gpiozero names (BOARD11, J8:11) -> None (not checked)."""
    m = re.fullmatch(r"(?:GPIO|BCM)?(\d+)", pin.strip(), re.I)
    return int(m.group(1)) if m else None


def gpio_chip() -> str | None:
    """The /dev/gpiochip* of the Pi's header pins (label pinctrl-bcm2835/2711/rp1), if any."""
    for path in sorted(glob.glob("/dev/gpiochip*")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            info = fcntl.ioctl(fd, _GPIO_CHIPINFO, bytes(68))
        except OSError:
            continue
        finally:
            os.close(fd)
        label = info[32:64].split(b"\0", 1)[0].decode(errors="replace")
        if label.startswith("pinctrl-"):
            return path
    return None


def line_user(chip: str, offset: int) -> str | None:
    """Who holds one GPIO line ('' = held, consumer unnamed), None when it is free."""
    fd = os.open(chip, os.O_RDONLY)
    try:
        info = fcntl.ioctl(fd, _GPIO_LINEINFO, struct.pack("=II32s32s", offset, 0, b"", b""))
    finally:
        os.close(fd)
    _off, flags, _name, consumer = struct.unpack("=II32s32s", info)
    if not flags & _LINE_USED:
        return None
    return bytes(consumer).split(b"\0", 1)[0].decode(errors="replace")


def _group_of(path: str) -> str:
    try:
        return grp.getgrgid(os.stat(path).st_gid).gr_name
    except (KeyError, OSError):
        return "gpio"


def relay_warnings(cfg: Config, chip: str | None = None,
                   user_of: Callable[[str, int], str | None] = line_user) -> list[str]:
    """Each relay's pin: this user may use the GPIO chip, and no other program holds the line."""
    relays = [r for r in cfg.relays if bcm_number(r.pin) is not None]
    if not relays or cfg.control.dry_run or cfg.meter.replay_path is not None:
        return []
    chip = chip if chip is not None else gpio_chip()
    if chip is None:
        return []  # no GPIO header here: app.checks reports a missing GPIO library
    if not os.access(chip, os.R_OK | os.W_OK):
        return [f"[relay:{relays[0].name}] pin = {relays[0].pin!r}: user {user()} may not use {chip}; add the "
                f"user to the {_group_of(chip)} group (sudo usermod -aG {_group_of(chip)} {user()}, then log in again)"]
    out: list[str] = []
    for r in relays:
        try:
            holder = user_of(chip, bcm_number(r.pin) or 0)
        except OSError as exc:
            out.append(f"[relay:{r.name}] pin = {r.pin!r}: cannot be checked ({exc})")
            continue
        if holder is not None:
            out.append(f"[relay:{r.name}] pin = {r.pin!r}: in use by {holder or 'another program'} "
                       "(smartmeter already running? the pin taken by an overlay such as the UART or 1-wire?)")
    return out
