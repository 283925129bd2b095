"""The web process: uvicorn serving `app.web.api` on [web] host:port, fed by the post-processor.

Started by main after the fork (`run`); it imports Starlette and uvicorn itself, so the reader
and the post-processor never load them. It stops when main sets the stop event or goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import queue as queue_mod
import signal
import socket
import threading
from collections.abc import Callable, Generator
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import uvicorn

from app import logutil
from app.config import Config
from app.supervision import TICK_EVERY_S, Heartbeat, main_watch, no_beat
from app.web.api import build_app
from app.web.link import Channels
from app.web.service import History
from app.web.state import LiveState

log = logging.getLogger("app.web")
BATCH = 64
WEB_NICE = 10  # added to the web process's nice value


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: main coordinates shutdown."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """No signal handlers (newer uvicorn)."""
        yield

    def install_signal_handlers(self) -> None:
        """No signal handlers (older uvicorn)."""


def listen(host: str, port: int) -> socket.socket:
    """The listening socket (IPv4 or IPv6 by the address); OSError when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets that say so (proto 0 would leave
    # Nagle on: 40 ms per response from delayed ACKs)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _pump(channels: Channels, state: LiveState, loop: asyncio.AbstractEventLoop, done: threading.Event) -> None:
    """Move messages from the post-processor onto the event loop, a batch at a time."""
    while not done.is_set():
        try:
            batch = [channels.live.get(timeout=0.5)]
        except queue_mod.Empty:
            continue
        except (OSError, EOFError, ValueError):
            if not done.is_set():
                log.error("the live channel from the post-processor is closed")
            return
        while len(batch) < BATCH:
            try:
                batch.append(channels.live.get_nowait())
            except (queue_mod.Empty, OSError, EOFError):
                break
        try:
            loop.call_soon_threadsafe(_apply_all, state, batch)
        except RuntimeError:  # the loop closed: shutting down
            return


def _apply_all(state: LiveState, batch: list[Any]) -> None:
    for msg in batch:
        state.apply(msg)


def serve(cfg: Config, channels: Channels | None, stop: Callable[[], bool],
          sock: socket.socket | None = None, history_factory: Any = None,
          beat: Callable[[], None] = no_beat) -> None:
    """Serve until `stop()` says so; blocking. `beat` is called from the event loop (a blocked
    loop stops the heartbeat, and main kills a process without one)."""
    state = LiveState(cfg)
    history = History(cfg, history_factory)
    done = threading.Event()

    async def ticking() -> None:
        while not done.is_set():
            beat()
            await asyncio.sleep(TICK_EVERY_S / 2)

    tasks: list[asyncio.Task[None]] = []

    def on_start(loop: asyncio.AbstractEventLoop) -> None:
        tasks.append(loop.create_task(ticking()))
        if channels is not None:
            threading.Thread(target=_pump, args=(channels, state, loop, done), name="web-live", daemon=True).start()

    app, _web = build_app(cfg, state, history, channels.commands if channels is not None else None,
                          on_start=on_start, on_stop=done.set)
    options: dict[str, Any] = {"log_config": None, "access_log": False, "lifespan": "on", "ws": "auto",
                               "server_header": False, "proxy_headers": False, "timeout_graceful_shutdown": 1}
    known = inspect.signature(uvicorn.Config).parameters  # older uvicorn (Debian's 0.17) lacks some
    config = uvicorn.Config(app, **{k: v for k, v in options.items() if k in known})
    server = _Server(config)

    def watch() -> None:
        while not done.wait(0.25):
            if stop():
                server.should_exit = True
                return

    threading.Thread(target=watch, name="web-stop", daemon=True).start()
    if sock is None:
        sock = listen(cfg.web.host, cfg.web.port)
    host = f"[{cfg.web.host}]" if ":" in cfg.web.host else cfg.web.host
    log.info("web: serving http://%s:%d/ (API /api, MCP /mcp, token %s)", host, sock.getsockname()[1],
             "required" if cfg.web.token else "off: loopback only")
    server.run(sockets=[sock])
    done.set()


def lower_priority() -> None:
    """Put this process below the reader and the post-processor (best effort, each step on its own)."""
    # A busy API must never take the CPU from relay decisions. Its own session first: with Linux's autogroup
    # scheduling (on by default) the CPU is shared between sessions before nice values count, so a busy web
    # process in the appliance's session kept that session always runnable, and a woken reader or
    # post-processor waited behind every other session's turn (tens of ms on a loaded machine) instead of
    # preempting at once. In a session of its own, weighted down (autogroup nice), it only takes CPU the
    # appliance does not want; SCHED_IDLE inside it lets a waking reader preempt it at once rather than after
    # its time slice (the session's share still comes from the autogroup nice); nice where there is no autogroup.
    steps: list[tuple[str, Callable[[], object]]] = [
        ("own session", os.setsid),
        ("autogroup nice", lambda: Path("/proc/self/autogroup").write_text(f"{WEB_NICE}\n")),
        ("nice", lambda: os.nice(WEB_NICE)),
        ("SCHED_IDLE", lambda: os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))),
    ]
    for what, step in steps:
        try:
            step()
        except (OSError, AttributeError) as exc:  # not Linux, no autogroup, not allowed: the rest still helps
            log.debug("web: cannot lower its priority (%s): %s", what, exc)


def run(cfg: Config, channels: Channels, stop_event: Event, log_level: str, heartbeat: Heartbeat | None = None
        ) -> None:
    """Entry point of the web process: stops when main sets `stop_event` or goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # main coordinates shutdown
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logutil.setup(log_level)
    log.info("web process started (pid %d)", os.getpid())
    lower_priority()
    main_gone = main_watch()
    beat = heartbeat.beat if heartbeat is not None else no_beat
    beat()
    try:
        sock = listen(cfg.web.host, cfg.web.port)
    except OSError as exc:
        log.error("web: cannot listen on [web] host = %s, port = %d: %s", cfg.web.host, cfg.web.port, exc)
        raise SystemExit(1) from None

    def stop() -> bool:
        # is_set(), never wait(): a wait holds the event's shared lock for long, and a SIGKILL then
        # (main kills a hung child) would leave it held for every other process.
        if main_gone():
            log.error("main process is gone: stopping")
            return True
        return stop_event.is_set()

    try:
        serve(cfg, channels, stop, sock, beat=beat)
    except Exception:
        log.exception("web process crashed")
        raise SystemExit(1) from None
    raise SystemExit(0)
