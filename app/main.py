"""Wiring only: arguments, config, logging, the two processes, signals and exit codes.

Three processes: this one (main) only supervises; the reader and the post-processor are its
children (fork context: main imports little, so the children start with only what they need).
Main owns nothing that can hang, so it can always notice a child's death within a second,
tell the other to go safe and exit non-zero for supervisor/systemd to restart us. The
post-processor owns the relays, so it is the one that can still put them in their safe state
when the reader dies; when the post-processor itself dies the kernel releases the GPIO lines
(see the README's wiring section).

Exit codes: 0 clean stop or replay done, 1 a process died, 2 bad configuration or arguments.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python app/main.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import __version__, logutil
from app import config as config_mod
from app.errors import ConfigError

log = logging.getLogger("app.main")
STOP_TIMEOUT_S = 1.9


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="smartmeter", description="Read a smart meter, switch relays, keep the data.")
    p.add_argument("-c", "--config", help="INI file (see config.sample.ini)")
    p.add_argument("--check-config", action="store_true",
                   help="validate, print the effective config (secrets masked), exit")
    p.add_argument("--decode", metavar="FILE",
                   help="print one JSON object per telegram/frame in a captured byte stream")
    p.add_argument("--key", help="DLMS/Smarty decryption key, 32 hex digits (with --decode)")
    p.add_argument("--auth-key", help="DLMS authentication key, 32 hex digits (with --decode)")
    p.add_argument("--profile", help="DLMS push-list profile name (with --decode)")
    p.add_argument("--protocol", choices=("auto", "dsmr", "dlms"), help="override [meter] protocol")
    p.add_argument("--timezone", help="override [meter] timezone")
    p.add_argument("--replay", metavar="PATH", help="read a captured byte stream instead of the port")
    p.add_argument("--replay-speed", type=float, metavar="X", help="0 = as fast as possible, 1 = real time")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="override [general] log_level")
    p.add_argument("--version", action="version", version=f"smartmeter {__version__}")
    return p.parse_args(argv)


def _overrides(args: argparse.Namespace) -> dict[str, dict[str, str]]:
    meter: dict[str, str] = {}
    if args.replay:
        meter["source"] = f"replay:{args.replay}"
    if args.replay_speed is not None:
        meter["replay_speed"] = str(args.replay_speed)
    if args.protocol:
        meter["protocol"] = args.protocol
    if args.timezone:
        meter["timezone"] = args.timezone
    if args.key:
        meter["key"] = args.key
    if args.auth_key:
        meter["auth_key"] = args.auth_key
    if args.profile:
        meter["profile"] = args.profile
    out: dict[str, dict[str, str]] = {"meter": meter} if meter else {}
    if args.log_level:
        out["general"] = {"log_level": args.log_level}
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the appliance, or one of the tools; return the exit code."""
    args = parse_args(argv)
    try:
        if args.decode:
            cfg = _decode_config(args)
        elif not args.config:
            print("smartmeter: -c/--config FILE is required (see config.sample.ini)", file=sys.stderr)
            return 2
        else:
            cfg = config_mod.load(args.config, _overrides(args))
    except ConfigError as exc:
        print(f"smartmeter: config error: {exc}", file=sys.stderr)
        return 2
    if args.decode:
        from app.decode import decode_file

        return decode_file(args.decode, cfg)
    if args.check_config:
        import json

        print(f"# {cfg.path}: OK")
        print(json.dumps(config_mod.redacted(cfg), indent=2, default=str))
        return 0
    logutil.setup(cfg.general.log_level)
    return run(cfg)


def _decode_config(args: argparse.Namespace) -> config_mod.Config:
    overrides = _overrides(args)
    overrides.get("meter", {}).pop("source", None)
    if args.config:
        return config_mod.load(args.config, overrides)
    return config_mod.loads("", overrides)


def run(cfg: config_mod.Config) -> int:
    """Start the post-processor and the reader, supervise them, stop them cleanly."""
    # fork: the children share main's already-imported pages (lower PSS on a 512 MB Pi, fast start),
    # main has no threads yet, and each child builds its own clients after the fork.
    ctx = multiprocessing.get_context("fork")
    # A fast replay sends batches of about 70 readings per queue item: keep the bound in readings.
    fast_replay = cfg.meter.replay_path is not None and cfg.meter.replay_speed <= 0
    q: multiprocessing.Queue[Any] = ctx.Queue(maxsize=max(4, cfg.meter.queue_size // 128) if fast_replay
                                              else cfg.meter.queue_size)
    stop_event = ctx.Event()
    reader_failed = ctx.Event()
    level = cfg.general.log_level
    post = ctx.Process(target=_post_processor, args=(cfg, q, stop_event, reader_failed, level),
                       name="post-processor")
    read = ctx.Process(target=_reader, args=(cfg, q, stop_event, level), name="reader")
    stopping: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if not stopping:
            stopping.append(signal.Signals(signum).name)
            stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("smartmeter %s starting (config %s, source %s)", __version__, cfg.path, cfg.meter.source)
    logutil.settle_gc()  # before the fork: the children share these pages untouched
    post.start()
    read.start()
    code = 0
    replay_read = False  # a replay's reader finished cleanly: the post-processor drains and flushes
    while True:
        multiprocessing.connection.wait([read.sentinel, post.sentinel], timeout=0.25)
        if stopping:
            log.info("%s: stopping", stopping[0])
            break
        reader_alive = read.is_alive()  # once per round: the reader may end between two checks
        if not reader_alive and read.exitcode == 0 and cfg.meter.replay_path is not None:
            replay_read = True
        if not post.is_alive():
            if post.exitcode == 0 and cfg.meter.replay_path is not None:
                # The post-processor ends by itself only after the replay's END: the reader sent
                # everything and may just be finishing its queue.
                read.join(STOP_TIMEOUT_S)
                if read.is_alive():
                    read.kill()
                log.info("replay done; exit 0")
                return 0
            log.error("post-processor exited (code %s); stopping (its GPIO lines are released: see the "
                      "README's wiring section for what the relays do then)", post.exitcode)
            code = 2 if post.exitcode == 2 else 1
            stop_event.set()
            break
        if not reader_alive and not replay_read:
            log.error("reader exited (code %s); relays to safe state, stopping", read.exitcode)
            reader_failed.set()
            code = 1
            break
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in (read, post):
        proc.join(max(0.05, deadline - time.monotonic()))
    for proc in (read, post):
        if proc.is_alive():
            log.error("%s did not stop in time; killing it", proc.name)
            proc.kill()
            proc.join(1.0)
            code = code or 1
    if code == 0 and post.exitcode not in (0, None):
        code = 1
    log.info("stopped (exit %d)", code)
    return code


def _reader(*args: Any) -> None:
    """The reader process: imports only what reading needs (nothing of the sinks or relays)."""
    from app import reader

    reader.run(*args)


def _post_processor(*args: Any) -> None:
    """The post-processor process: relays and sinks are imported here, after the fork."""
    from app import pipeline

    pipeline.run(*args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
