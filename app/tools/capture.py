"""`--capture OUT [--seconds N]`: the configured port's raw bytes, byte for byte, into a file.

`cat /dev/ttyUSB0 > capture.bin` is not a capture: a tty in its default (cooked) mode turns CR LF
into LF LF and DSMR CRCs then fail; with settings left by another program it may exit at once.
This opens the port raw with the configured settings (trying the usual ones for `baudrate = auto`)
and writes what arrives unchanged, so `--replay` and `--decode` read it as the reader would have.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any, BinaryIO

from app.config import Config
from app.framing.auto import make_framer
from app.transport.source import AUTO_CANDIDATES, SerialSource, SourceError

DETECT_S = 12.0  # per setting with baudrate = auto: DSMR 4 sends every 10 s


def _settings(cfg: Config) -> tuple[tuple[int, str], ...]:
    m = cfg.meter
    if m.baudrate == "auto":
        return AUTO_CANDIDATES[m.protocol]
    return ((int(m.baudrate), m.serial_format),)


def capture(cfg: Config, out: BinaryIO, seconds: float,
            stop: threading.Event | None = None) -> tuple[int, int, int]:
    """Copy the port to `out` for `seconds` (0 = until `stop` is set); (bytes, good frames, bad frames)."""
    stop = stop or threading.Event()
    m = cfg.meter
    settings = _settings(cfg)
    total = good = bad = 0
    for n, (baudrate, fmt) in enumerate(settings):
        last = n == len(settings) - 1
        src = SerialSource(m.source, baudrate, fmt, min(m.read_timeout, 0.5))
        framer = make_framer(m.protocol, max(m.max_frame, 1 << 16))
        held = bytearray()  # with auto: kept until this setting yields a good frame
        confirmed = last
        print(f"smartmeter: capturing {m.source} at {baudrate} {fmt}", file=sys.stderr, flush=True)
        start = time.monotonic()
        try:
            while (seconds <= 0 or time.monotonic() - start < seconds) and not stop.is_set():
                chunk = src.read_some()
                if not chunk:
                    if not confirmed and time.monotonic() - start > DETECT_S:
                        break
                    continue
                frames = framer.feed(chunk)
                good += sum(f.ok for f in frames)
                bad += sum(not f.ok for f in frames)
                if not confirmed:
                    held += chunk
                    if any(f.ok for f in frames):
                        confirmed = True
                        chunk, held = bytes(held), bytearray()
                    elif time.monotonic() - start > DETECT_S:
                        break
                    else:
                        continue
                out.write(chunk)
                out.flush()
                total += len(chunk)
        finally:
            src.close()
        if stop.is_set() and held:  # stopped while still detecting: keep what arrived
            out.write(held)
            total += len(held)
        if confirmed or stop.is_set():
            break
        good = bad = 0
    return total, good, bad


def run_cli(cfg: Config, path: str, seconds: float | None) -> int:
    """Capture to `path`; exit 0 when bytes arrived, 1 when none did, 2 when the port cannot be opened."""
    if cfg.meter.replay_path is not None:
        print("smartmeter: --capture needs a port: [meter] source is a replay", file=sys.stderr)
        return 2
    duration = 60.0 if seconds is None else seconds
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)  # Ctrl-C ends the capture cleanly, the file complete
    signal.signal(signal.SIGTERM, on_signal)
    try:
        with open(path, "wb") as out:
            total, good, bad = capture(cfg, out, duration, stop)
    except SourceError as exc:
        print(f"smartmeter: cannot open {cfg.meter.source}: {exc}", file=sys.stderr)
        return 2
    print(f"smartmeter: wrote {total} bytes to {path}: {good} good frames, {bad} rejected"
          f" (check with: smartmeter --decode {path})", file=sys.stderr)
    return 0 if total else 1
