"""Decoding in linear time whatever the input holds, --decode's memory, and socket vs pty CPU per telegram."""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from app import config
from app.decode import decode_file
from app.reader import Reader
from app.simulator import BRUSSELS, SimulatedMeter

ROOT = Path(__file__).resolve().parents[1]


def _telegrams(n: int) -> list[bytes]:
    return list(SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=1.0).telegrams(n))


def _bad_crc(t: bytes) -> bytes:
    return t[:-6] + b"%04X\r\n" % ((int(t[-6:-2], 16) + 1) & 0xFFFF)


def _inputs(quick: bool) -> dict[str, Callable[[int], bytes]]:
    base = 100 if quick else 500
    good = b"".join(_telegrams(base))
    bad = b"".join(_bad_crc(t) for t in _telegrams(base))
    return {
        f"good DSMR telegrams ({base} per 1x)": lambda k: good * k,
        f"every telegram fails its CRC ({base} per 1x)": lambda k: bad * k,
        "7E A0 garbage (256 kB per 1x)": lambda k: b"\x7e\xa0" * (128 * 1024 * k),
        "DSMR header flood in one chunk (82 kB per 1x)": lambda k: b"/ISK5\\2M550T-1012\r\n" * (4300 * k),
    }


def _decode_seconds(data: bytes, protocol: str = "auto") -> tuple[float, int]:
    """Wall time of `--decode` (in process, output discarded) and the number of output lines."""
    with tempfile.NamedTemporaryFile(suffix=".bin") as fh:
        fh.write(data)
        fh.flush()
        out, err = io.StringIO(), io.StringIO()
        cfg = config.loads(f"[meter]\nprotocol = {protocol}\n")
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            decode_file(fh.name, cfg)
        took = time.perf_counter() - t0
    return took, out.getvalue().count("\n") + err.getvalue().count("\n")


def _linear_rows(quick: bool) -> list[str]:
    rows = ["| input | 1x | 4x | 16x | 16x / 1x time | output lines 1x / 16x |", "|---|---:|---:|---:|---:|---:|"]
    for label, make in _inputs(quick).items():
        times, lines = [], []
        for k in (1, 4, 16):
            data = make(k)
            took, n = _decode_seconds(data)
            times.append((took, len(data)))
            lines.append(n)
        cells = [f"{t:.2f} s ({size / t / 1e6:.1f} MB/s)" for t, size in times]
        rows.append(f"| {label} | {' | '.join(cells)} | {times[2][0] / times[0][0]:.1f} | "
                    f"{lines[0]:,} / {lines[2]:,} |")
    return rows


def _decode_rss(path: str) -> tuple[float, int]:
    """(seconds, peak RSS in MB) of `main.py --decode path` as its own process."""
    code = ("import resource, sys; sys.argv[0] = 'main.py'; from app.main import main; "
            f"rc = main(['--decode', {path!r}]); "
            "sys.stderr.write('MAXRSS %d\\n' % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True, check=False)
    took = time.perf_counter() - t0
    line = [x for x in res.stderr.splitlines() if x.startswith("MAXRSS")][-1]
    return took, int(line.split()[1]) // 1024


def _memory_rows(quick: bool) -> list[str]:
    hours = (1, 4) if quick else (1, 24)
    rows = ["| capture | size | time | peak RSS |", "|---|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for h in hours:
            path = Path(tmp) / f"{h}h.txt"
            with path.open("wb") as fh:
                meter = SimulatedMeter(datetime(2026, 6, 21, 0, tzinfo=BRUSSELS), step_s=1.0)
                for t in meter.telegrams(3600 * h):
                    fh.write(t)
            took, rss = _decode_rss(str(path))
            rows.append(f"| {h} h of 1-s telegrams | {path.stat().st_size / 1e6:.0f} MB | {took:.1f} s | "
                        f"{rss} MB |")
    return rows


def _reader_child(url: str, n: int, one_byte: bool, out: multiprocessing.connection.Connection) -> None:
    """Read `n` telegrams from `url` with the real Reader; send back CPU seconds and reads."""
    from app.transport.source import SerialSource

    cfg = config.loads(f"[meter]\nsource = {url}\nprotocol = auto\n")
    reads = [0]

    def factory(baud: int, fmt: str) -> SerialSource:
        src = SerialSource(url, baud, fmt, cfg.meter.read_timeout)
        if one_byte:
            src._socket = None  # pyserial's own socket read: in_waiting is 0 or 1 (the old behaviour)
        read = src.read_some

        def counted() -> bytes:
            data = read()
            reads[0] += bool(data)
            return data

        src.read_some = counted  # type: ignore[method-assign]
        return src

    deadline = time.monotonic() + 120
    reader: Reader

    def stop() -> bool:
        return reader.counters.frames_ok >= n or time.monotonic() > deadline

    reader = Reader(cfg, lambda item, wait: True, stop, factory)
    out.send("ready")
    c0 = time.process_time()
    reader.run()
    out.send((time.process_time() - c0, reader.counters.frames_ok, reads[0]))


def _cpu_rows(quick: bool) -> list[str]:
    n = 300 if quick else 2000
    rate = 200.0  # telegrams per second: steady, so each read gets what one write sent
    telegrams = _telegrams(n)
    ctx = multiprocessing.get_context("fork")
    rows = ["| source | telegrams | reads | CPU per telegram |", "|---|---:|---:|---:|"]

    def measure(label: str, url: str, write: Callable[[bytes], None], one_byte: bool = False) -> None:
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=_reader_child, args=(url, n, one_byte, child))
        proc.start()
        parent.recv()
        time.sleep(0.5)  # pyserial empties a port when it opens it
        t0 = time.monotonic()
        for i, t in enumerate(telegrams):
            write(t)
            delay = t0 + (i + 1) / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        cpu, ok, reads = parent.recv() if parent.poll(130) else (0.0, 0, 0)
        proc.join(10)
        per = f"{cpu / ok * 1e6:.0f} µs" if ok else "n/a"
        rows.append(f"| {label} | {ok} | {reads:,} | {per} |")

    with tempfile.TemporaryDirectory() as tmp:
        master, slave = os.openpty()
        tty.setraw(slave)
        link = Path(tmp) / "ttyUSB0"
        link.symlink_to(os.ttyname(slave))
        try:
            measure("pty (serial port)", str(link), lambda b: os.write(master, b) and None)
        finally:
            os.close(master)
            os.close(slave)
    for label, one_byte in (("socket://, reading what the socket holds", False),
                            ("socket://, one byte per read (before)", True)):
        server = socket.create_server(("127.0.0.1", 0))
        conns: list[socket.socket] = []

        def accept(server: socket.socket = server, conns: list[socket.socket] = conns) -> None:
            conns.append(server.accept()[0])

        threading.Thread(target=accept, daemon=True).start()

        def send(b: bytes, conns: list[socket.socket] = conns) -> None:
            while not conns:
                time.sleep(0.01)
            conns[0].sendall(b)

        try:
            measure(label, f"socket://127.0.0.1:{server.getsockname()[1]}", send, one_byte)
        finally:
            for c in conns:
                c.close()
            server.close()
    return rows


def run(quick: bool = False) -> str:
    """Markdown section: decode time vs input size, --decode memory, reader CPU per telegram by source."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    parts = [
        "## Decoding in linear time, streaming --decode, socket sources (issue 11)",
        "",
        "`--decode` (in process, `protocol = auto`, output discarded) on inputs 1, 4 and 16 times as large. "
        "Linear time shows as a 16x / 1x ratio near 16 (quadratic would be near 256); every reject is "
        "printed once.",
        "",
        *_linear_rows(quick),
        "",
        "`main.py --decode` as its own process on a capture of simulated 1-s Fluvius telegrams: it reads in "
        "64 kB chunks, so its peak RSS does not grow with the capture.",
        "",
        *_memory_rows(quick),
        "",
        "The real Reader in its own process on a pty and on a `socket://` source, 200 telegrams/s written one "
        "telegram per write; CPU time of the reader process per telegram (framing, parsing, plausibility).",
        "",
        *_cpu_rows(quick),
        "",
        f"(bench process peak RSS before this module: {before} MB.)",
    ]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    print(run(quick="--quick" in sys.argv))
