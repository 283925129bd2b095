"""The reader loop on its own: live drops the oldest, replay waits and paces, statuses and the end mark."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from app import config
from app.reader import Reader
from app.records import END, ReaderStatus, Reading
from app.simulator import BRUSSELS, SimulatedMeter
from app.supervision import queue_putter
from tests.appliance import Pty
from tests.conftest import FIXTURES


def _telegrams(n: int, step_s: float = 1.0) -> bytes:
    return b"".join(SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS), step_s=step_s).telegrams(n))


@contextmanager
def live_reader(tmp_path: Path, ini: str) -> Iterator[tuple[Pty, Reader, list[Any]]]:
    """A Reader running in a thread on a real pty (`ini` is the [meter] body; its source is set here):
    yields (pty, reader, items delivered); stopped and closed on exit."""
    pty = Pty(tmp_path / "ttyUSB0")
    cfg = config.loads(f"[meter]\nsource = {tmp_path / 'ttyUSB0'}\n{ini}")
    got: list[Any] = []
    stop = threading.Event()
    reader = Reader(cfg, lambda item, wait: got.append(item) or True, stop.is_set)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    try:
        yield pty, reader, got
    finally:
        stop.set()
        thread.join(5)
        pty.close()


def test_live_full_queue_drops_the_oldest_and_counts() -> None:
    q: multiprocessing.Queue[Any] = multiprocessing.get_context("fork").Queue(maxsize=2)
    cfg = config.loads("[meter]\nprotocol = dsmr\n")
    reader = Reader(cfg, queue_putter(q, spare=(ReaderStatus,)), lambda: False)
    reader.handle(reader.framer.feed(_telegrams(5)))
    time.sleep(0.2)  # the queue's feeder thread
    got = [q.get(timeout=2), q.get(timeout=2)]
    assert [r.seq for r in got] == [4, 5]  # the newest two survive
    assert reader.counters.dropped == 3 and reader.counters.frames_ok == 5


def test_replay_waits_paces_by_meter_time_and_ends(tmp_path: Path) -> None:
    capture = tmp_path / "c.bin"
    capture.write_bytes(_telegrams(6, step_s=1.0))
    cfg = config.loads(f"[meter]\nprotocol = dsmr\nsource = replay:{capture}\nreplay_speed = 20\n")
    items: list[Any] = []
    t0 = time.monotonic()
    assert Reader(cfg, lambda item, wait: items.append(item) or True, lambda: False).run() == 0
    took = time.monotonic() - t0
    readings = [i for i in items if isinstance(i, Reading)]
    assert [r.seq for r in readings] == [1, 2, 3, 4, 5, 6]
    assert 5 / 20 * 0.9 <= took < 2.0  # 5 s of meter time at 20x
    assert items[-1] is END and any(isinstance(i, ReaderStatus) for i in items)


def test_fast_replay_batches_and_loses_nothing(tmp_path: Path) -> None:
    capture = tmp_path / "c.bin"
    capture.write_bytes(_telegrams(300))
    cfg = config.loads(f"[meter]\nprotocol = dsmr\nsource = replay:{capture}\n")
    items: list[Any] = []
    Reader(cfg, lambda item, wait: items.append(item) or True, lambda: False).run()
    batches = [i for i in items if isinstance(i, list)]
    assert sum(len(b) for b in batches) == 300 and len(batches) < 300
    assert items[-1] is END


def test_auto_baud_rate_finds_a_dsmr22_meter_on_a_real_pty(tmp_path: Path, monkeypatch: Any) -> None:
    import termios

    from app import reader as reader_mod

    monkeypatch.setattr(reader_mod, "AUTO_BAUD_WINDOW_S", 0.6)
    telegram = (FIXTURES / "dsmr" / "iskra_mt382_dsmr2.2_1.txt").read_bytes()
    deadline = time.monotonic() + 10
    with live_reader(tmp_path, "protocol = dsmr\nbaudrate = auto\n") as (pty, reader, got):
        # The "meter" only makes sense at 9600 baud, as a DSMR 2.2 meter; at other settings the line is noise.
        while not any(isinstance(i, Reading) for i in got) and time.monotonic() < deadline:
            speed = termios.tcgetattr(pty.slave)[4]
            pty.write(telegram if speed == termios.B9600 else b"\x00\xff" * 100)
            time.sleep(0.1)
    readings = [i for i in got if isinstance(i, Reading)]
    assert readings and readings[0].header == "ISk5\\2MT382-1003"
    assert reader.meter.baudrate == "auto"


# ------------------------------------------------------------------ auto-detection live, sockets, --decode

NOISE = bytes.fromhex("0F00000001000100")  # a bare data-notification with an empty array: looks like a raw APDU


def _mbus_capture() -> bytes:
    return (FIXTURES / "dlms" / "kaifa_ma309_netznoe_mbus_1.bin").read_bytes()


def test_reader_auto_noise_prefix_and_foreign_frame_lose_nothing() -> None:
    cfg = config.loads("[meter]\nprotocol = auto\n")
    got: list[Any] = []
    reader = Reader(cfg, lambda item, wait: got.append(item) or True, lambda: False)
    telegrams = list(SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS)).telegrams(1000))
    stream = NOISE + b"".join(telegrams[:500]) + _mbus_capture() + b"".join(telegrams[500:])
    for i in range(0, len(stream), 4096):
        reader.feed(stream[i : i + 4096])
    readings = [r for r in got if isinstance(r, Reading)]
    assert len(readings) == 1000 and all(r.protocol == "dsmr" for r in readings)  # was: 0
    assert reader.counters.skipped_bytes >= len(NOISE)  # the noise (and the M-Bus frame) is counted
    status = reader.counters.status(True, "dsmr", "")
    assert status.skipped_bytes == reader.counters.skipped_bytes


def test_live_pty_auto_noise_then_telegrams_all_decoded(tmp_path: Path) -> None:
    telegrams = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS)).telegrams(250)
    with live_reader(tmp_path, "protocol = auto\n") as (pty, reader, got):
        deadline = time.monotonic() + 10
        while not reader.connected and time.monotonic() < deadline:  # pyserial empties the port on open
            time.sleep(0.02)
        time.sleep(0.3)
        for i, telegram in enumerate(telegrams):
            pty.write(NOISE + telegram if i == 0 else telegram)
            if i == 100:
                pty.write(_mbus_capture())  # a valid M-Bus frame in the DSMR stream
            if i % 25 == 0:
                time.sleep(0.05)
        deadline = time.monotonic() + 30
        while sum(isinstance(r, Reading) for r in got) < 250 and time.monotonic() < deadline:
            time.sleep(0.05)
    readings = [r for r in got if isinstance(r, Reading)]
    assert len(readings) == 250, reader.counters  # was: 1 empty bogus reading
    assert all(r.values for r in readings)


def test_socket_source_reads_what_the_socket_holds(tmp_path: Path) -> None:
    import socket

    from app.transport.source import SerialSource

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    telegrams = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS)).telegrams(100)

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"".join(telegrams))
            time.sleep(3)

    threading.Thread(target=serve, daemon=True).start()
    cfg = config.loads(f"[meter]\nsource = socket://127.0.0.1:{port}\nprotocol = dsmr\n")
    got: list[Any] = []
    reads: list[int] = []
    stop = threading.Event()

    def factory(baud: int, fmt: str) -> SerialSource:
        src = SerialSource(cfg.meter.source, baud, fmt, cfg.meter.read_timeout)
        read = src.read_some

        def counted() -> bytes:
            data = read()
            if data:
                reads.append(len(data))
            return data

        src.read_some = counted  # type: ignore[method-assign]
        return src

    reader = Reader(cfg, lambda item, wait: got.append(item) or False, stop.is_set, factory)  # queue "full"
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    try:
        while reader.counters.frames_ok < 100 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(5)
        server.close()
    assert reader.counters.frames_ok == 100
    assert len(reads) < 100  # was: one byte per read, ~80,000 reads
    assert reader.counters.dropped == 100  # the backlog reaches the reader, whose queue drops the oldest


def _bad_crc(telegram: bytes) -> bytes:
    return telegram[:-6] + b"%04X\r\n" % ((int(telegram[-6:-2], 16) + 1) & 0xFFFF)


def test_decode_prints_each_reject_once(tmp_path: Path, capsys: Any) -> None:
    from app.decode import decode_file

    capture = tmp_path / "bad.txt"
    capture.write_bytes(b"".join(_bad_crc(t) for t in SimulatedMeter(datetime(2026, 6, 21, 12,
                                                                                  tzinfo=BRUSSELS)).telegrams(60)))
    assert decode_file(str(capture), config.loads("")) == 1
    err = capsys.readouterr().err
    assert err.count("rejected: CRC mismatch") == 60  # was: 60 * 61 / 2 = 1830


def test_decode_streams_in_chunks_and_enforces_max_frame(tmp_path: Path, capsys: Any, monkeypatch: Any) -> None:
    import builtins

    from app import decode
    from app.framing.dsmr import crc16_arc

    capture = tmp_path / "day.txt"
    telegrams = SimulatedMeter(datetime(2026, 6, 21, 12, tzinfo=BRUSSELS)).telegrams(300)
    body = b"/ISK5\\2M550T-1012\r\n\r\n0-0:96.13.0(" + b"41" * 9000 + b")\r\n!"
    big = body + b"%04X\r\n" % crc16_arc(body)  # 18 kB, valid CRC, above max_frame = 16384
    capture.write_bytes(b"".join(telegrams) + big)
    sizes: list[int] = []
    real_open = builtins.open

    class Spy:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def read(self, n: int = -1) -> bytes:
            sizes.append(n)
            data: bytes = self.fh.read(n)
            return data

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()

    monkeypatch.setattr(decode, "open", lambda p, mode="r": Spy(real_open(p, mode)), raising=False)
    assert decode.decode_file(str(capture), config.loads("")) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 300
    assert "longer than 16384 bytes" in err  # was: the 18 kB telegram decoded
    assert len(sizes) > 2 and all(0 < n <= decode.CHUNK_BYTES for n in sizes)  # never the whole file at once


def test_first_telegrams_replace_the_zero_status_at_once(monkeypatch: Any) -> None:
    from app import reader as reader_mod

    monkeypatch.setattr(reader_mod, "STATUS_EVERY_S", 3600.0)  # only the first-telegram rule can send it
    monkeypatch.setattr(reader_mod, "STATUS_RETRY_S", 0.0, raising=False)
    cfg = config.loads("[meter]\nprotocol = dsmr\n")
    got: list[Any] = []
    reader = Reader(cfg, lambda item, wait: got.append(item) or True, lambda: False)
    reader.maybe_status()  # at connect: nothing read yet
    reader.feed(_telegrams(360))
    reader.maybe_status()
    statuses = [s for s in got if isinstance(s, ReaderStatus)]
    assert [s.frames_ok for s in statuses] == [0, 360]  # was [0]: 0 telegrams shown while 360 were read
    reader.maybe_status()
    assert sum(isinstance(s, ReaderStatus) for s in got) == 2  # then every STATUS_EVERY_S again


def test_a_status_the_full_queue_refused_is_sent_again_soon(monkeypatch: Any) -> None:
    from app import reader as reader_mod

    monkeypatch.setattr(reader_mod, "STATUS_EVERY_S", 3600.0)
    monkeypatch.setattr(reader_mod, "STATUS_RETRY_S", 0.0, raising=False)
    cfg = config.loads("[meter]\nprotocol = dsmr\n")
    tries: list[Any] = []
    got: list[Any] = []

    def put(item: Any, wait: bool) -> bool:
        tries.append(item)
        if len(tries) == 1:
            return False  # the queue was full
        got.append(item)
        return True

    reader = Reader(cfg, put, lambda: False)
    reader.maybe_status()
    reader.maybe_status()
    assert len(tries) == 2 and isinstance(got[0], ReaderStatus)  # was: nothing for STATUS_EVERY_S
