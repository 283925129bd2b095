"""Wiring only: arguments, config, logging, the child processes, signals and exit codes.

This process (main) only supervises (app.supervision); the reader and the post-processor are
its children (fork context: main imports little, so the children start with only what they
need). Main owns nothing that can hang, so it can always notice a child's death or hang (no
heartbeat) within seconds, tell the others to go safe and exit non-zero for supervisor/systemd
to restart us; it feeds systemd's watchdog only while every child ticks. The post-processor owns
the relays, so it is the one that can still put them in their safe state when the reader dies;
when the post-processor itself dies the kernel releases the GPIO lines (see the README's wiring
section). To add a child: one `Child(name, role, target, args)` line in `run`; its target takes
a `Heartbeat` as last argument and calls `beat()` at least every 0.5 s.

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
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python app/main.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import __version__, logutil
from app import config as config_mod
from app.errors import ConfigError
from app.supervision import CONTROL, SERVICE, SOURCE, Child, Supervisor

log = logging.getLogger("app.main")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(prog="smartmeter", description="Read a smart meter, switch relays, keep the data.")
    p.add_argument("-c", "--config", help="INI file (see config.sample.ini)")
    p.add_argument("--check-config", action="store_true",
                   help="validate, print the effective config (secrets masked), exit")
    p.add_argument("--online", action="store_true",
                   help="with --check-config: also ping InfluxDB and connect to the MQTT broker")
    p.add_argument("--decode", metavar="FILE",
                   help="print one JSON object per telegram/frame in a captured byte stream")
    p.add_argument("--key", help="DLMS/Smarty decryption key, 32 hex digits (with --decode)")
    p.add_argument("--auth-key", help="DLMS authentication key, 32 hex digits (with --decode)")
    p.add_argument("--profile", help="DLMS push-list profile name (with --decode)")
    p.add_argument("--protocol", choices=("auto", "dsmr", "dlms"), help="override [meter] protocol")
    p.add_argument("--timezone", help="override [meter] timezone")
    p.add_argument("--replay", metavar="PATH", help="read a captured byte stream instead of the port")
    p.add_argument("--replay-speed", type=float, metavar="X", help="0 = as fast as possible, 1 = real time")
    p.add_argument("--replay-relays", action="store_true",
                   help="with --replay: drive the real relay pins (default: simulated, no pin is touched)")
    p.add_argument("--import", dest="import_paths", nargs="+", metavar="PATH",
                   help="fill the history store from captures and CSV day files, then exit")
    p.add_argument("--report", choices=("day", "month", "year", "quarter", "hour", "cost"),
                   help="print use and cost from the history store, then exit")
    p.add_argument("--from", dest="date_from", metavar="DATE", help="report from this local date (YYYY-MM-DD)")
    p.add_argument("--to", dest="date_to", metavar="DATE", help="report up to this local date (exclusive)")
    p.add_argument("--json", action="store_true", help="report as JSON lines")
    p.add_argument("--csv", action="store_true", help="report as CSV in the [csv] dialect")
    p.add_argument("--tariff", metavar="NAME", help="report cost under [tariff:NAME]")
    p.add_argument("--compare", action="store_true", help="with --report cost: every tariff, cheapest first")
    p.add_argument("--list-ports", action="store_true", help="list the serial ports present, then exit")
    p.add_argument("--probe", action="store_true",
                   help="with --list-ports: listen on each port at the usual settings, say what arrives")
    p.add_argument("--port", metavar="URL", help="probe only this port (device or URL), then exit")
    p.add_argument("--capture", metavar="OUT", help="write the configured port's raw bytes to OUT, then exit")
    p.add_argument("--seconds", type=float, metavar="N",
                   help="--capture: for N seconds (default 60, 0 = until Ctrl-C); --probe: per setting (12)")
    p.add_argument("--mcp-stdio", action="store_true",
                   help="serve the MCP tools on stdin/stdout (asks the running appliance's [web] API)")
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
    try:
        return _main(argv)
    except BrokenPipeError:  # `smartmeter --decode x | head`: the reader went away, not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    if args.list_ports or args.port:
        from app.tools import ports

        return ports.run_cli(args.probe, args.port, args.seconds)
    warnings: list[str] = []
    try:
        if args.decode:
            cfg = _decode_config(args)
        elif not args.config:
            print("smartmeter: -c/--config FILE is required (see config.sample.ini)", file=sys.stderr)
            return 2
        else:
            from app import checks

            cfg = config_mod.load(args.config, _overrides(args))
            if not (args.report or args.import_paths or args.mcp_stdio or args.capture):
                # what would stop the start is a ConfigError here; the tools that drive no pin skip it
                warnings = checks.check_environment(cfg)
    except ConfigError as exc:
        print(f"smartmeter: config error: {exc}", file=sys.stderr)
        return 2
    if args.decode:
        from app.decode import decode_file

        return decode_file(args.decode, cfg)
    if args.mcp_stdio:
        from app.web.mcp_stdio import serve_stdio

        return serve_stdio(cfg)
    if args.check_config:
        import json

        from app.tools.checks import relay_warnings

        warnings += relay_warnings(cfg)
        warnings += checks.check_online(cfg) if args.online else []
        for warning in warnings:
            print(f"smartmeter: warning: {warning}", file=sys.stderr)
        print(f"# {cfg.path}: OK" + (f" ({len(warnings)} warnings on stderr)" if warnings else ""))
        print(json.dumps(config_mod.redacted(cfg), indent=2, default=str))
        return 0
    if args.capture:
        from app.tools import capture

        return capture.run_cli(cfg, args.capture, args.seconds)
    if args.replay_relays and cfg.meter.replay_path is None:
        print("smartmeter: --replay-relays needs a replay (--replay PATH or source = replay:PATH)",
              file=sys.stderr)
        return 2
    if args.report or args.import_paths:
        from app.store import report

        if args.import_paths:
            logutil.setup(cfg.general.log_level)
            return report.run_import_cli(cfg, args.import_paths)
        return report.run_report(cfg, args.report, args.date_from, args.date_to, args.json, args.csv,
                                 args.tariff, args.compare)
    logutil.setup(cfg.general.log_level)
    for warning in warnings:
        log.warning("%s", warning)
    return run(cfg, replay_relays=args.replay_relays)


def _decode_config(args: argparse.Namespace) -> config_mod.Config:
    overrides = _overrides(args)
    overrides.get("meter", {}).pop("source", None)
    if args.config:
        return config_mod.load(args.config, overrides)
    return config_mod.loads("", overrides)


def run(cfg: config_mod.Config, replay_relays: bool = False) -> int:
    """Start the children (post-processor, reader), supervise them, stop them cleanly."""
    # fork: the children share main's already-imported pages (lower PSS on a 512 MB Pi, fast start),
    # main has no threads yet, and each child builds its own clients after the fork.
    ctx = multiprocessing.get_context("fork")
    replay = cfg.meter.replay_path is not None
    # A fast replay sends batches of about 70 readings per queue item: keep the bound in readings.
    fast_replay = replay and cfg.meter.replay_speed <= 0
    q: multiprocessing.Queue[Any] = ctx.Queue(maxsize=max(4, cfg.meter.queue_size // 128) if fast_replay
                                              else cfg.meter.queue_size)
    stop_event = ctx.Event()
    reader_failed = ctx.Event()
    level = cfg.general.log_level
    simulate_relays = replay and not replay_relays  # a replay never touches a pin unless asked
    web = None
    if cfg.web.enabled:
        from app.web.link import Channels

        web = Channels(ctx)  # live state to the web process, relay commands back (both bounded)
    # [meter:NAME]: a reader process each, on a queue of its own (not in a replay: the capture is one meter's);
    # with meters_dir, main starts, stops and restarts single meters while the rest runs (app.meters.fleet)
    fleet = None
    if cfg.meters or cfg.general.meters_dir:
        from app.meters.fleet import KILLED_SLOTS, SPARE_SLOTS, Fleet

        if replay:
            log.warning("replay: the %d [meter:NAME] meter(s) are not contacted (a replay reads only the capture); "
                        "relay conditions that need them stay stale, so those relays stay in their safe state",
                        len(cfg.meters))
        else:
            fleet = Fleet(ctx, cfg, stop_event, _meter, level, SPARE_SLOTS if cfg.general.meters_dir else KILLED_SLOTS)
    meter_qs = fleet.queues if fleet is not None else []
    control = fleet.control_r if fleet is not None else None
    every_q = [q, *meter_qs]
    children = [
        Child("post-processor", CONTROL, _post_processor, (cfg, q, stop_event, reader_failed, level,
                                                           simulate_relays, web, meter_qs, control), finishes=replay),
        Child("reader", SOURCE, _reader, ([x for x in every_q if x is not q], cfg, q, stop_event, level),
              finishes=replay),
    ]
    if web is not None:  # its death or hang stops the appliance like the others' (exit 1; systemd restarts)
        children.append(Child("web", SERVICE, _web, (every_q, cfg, web, stop_event, level), finishes=replay))
    if fleet is not None:
        children += fleet.initial_children()
    sup = Supervisor(ctx, children, stop_event, reader_failed, each_round=fleet.round if fleet else None,
                     meter_down=fleet.died if fleet else None)

    def on_signal(signum: int, _frame: Any) -> None:
        sup.request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("smartmeter %s starting (config %s, source %s)", __version__, cfg.path, cfg.meter.source)
    if fleet is not None:  # the meters' I/O library once, shared by every meter process (PSS per meter)
        from app.meters import preload

        preload(spec.protocol for spec in cfg.meters)
    logutil.settle_gc()  # before the fork: the children share these pages untouched
    sup.start()
    _close_queue_ends(q)  # main never reads or writes it: a child's EOF must not wait for main
    # the [meter:NAME] queues stay open here: a meter process main (re)starts inherits its queue from main
    if fleet is not None:
        fleet.owned_by_main()
    return sup.run()


def _close_queue_ends(q: multiprocessing.Queue[Any]) -> None:
    """Close this process's copies of the queue's pipe (multiprocessing offers no public way)."""
    for end in ("_reader", "_writer"):
        getattr(q, end).close()


def _reader(foreign: list[multiprocessing.Queue[Any]], *args: Any) -> None:
    """The reader process: imports only what reading needs (nothing of the sinks or relays)."""
    from app import reader

    for other in foreign:  # the other meters' queues: their EOF must not wait for this process
        _close_queue_ends(other)
    reader.run(*args)


def _web(foreign: list[multiprocessing.Queue[Any]], *args: Any) -> None:
    """The web process: Starlette and uvicorn are imported here, after the fork."""
    from app.web import server

    for other in foreign:  # the readers' queues: their EOF must not wait for this process
        _close_queue_ends(other)
    server.run(*args)


def _meter(foreign: list[Any], *args: Any) -> None:
    """A [meter:NAME] process: imports only its meter kind (and that kind's I/O library)."""
    from app.meters import runner

    for other in foreign:  # the other slots' queues, main's control pipe
        if isinstance(other, multiprocessing.connection.Connection):
            if not other.closed:
                other.close()
        else:
            _close_queue_ends(other)
    runner.run(*args)


def _post_processor(*args: Any) -> None:
    """The post-processor process: relays and sinks are imported here, after the fork."""
    from app import pipeline

    pipeline.run(*args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
