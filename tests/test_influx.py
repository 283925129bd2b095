"""InfluxDB sink: pure converters, the spool, and round trips against real servers.

v1 goes to Debian's influxd 1.x (read back with InfluxQL), the v2 API to VictoriaMetrics'
/api/v2/write (read back with /api/v1/export). VictoriaMetrics keeps duplicate samples, so it is
the server that proves "every reading exactly once" after an outage.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import InfluxConfig
from app.errors import ConfigError
from app.records import Reading
from app.sinks.influx import (
    GasTracker,
    InfluxSink,
    V1Writer,
    classify,
    gas_point,
    reading_lines,
    reading_point,
    relay_point,
    server_message,
)
from app.sinks.spool import (
    HEADER_BYTES,
    Backoff,
    Batch,
    Outcome,
    SendResult,
    Spool,
    SpooledSender,
    encode_record,
)
from tests import fixtures_influx
from tests.fixtures_influx import InfluxV1Server, VictoriaMetricsServer, free_port

pytestmark = pytest.mark.timeout(60)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "dsmr"
METER = "1SAG3100721326"
T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)
T0_S = int(T0.timestamp())


# ---------------------------------------------------------------- helpers


def make_reading(i: int, gas_every: int = 300, meter_id: str = METER) -> Reading:
    """Reading number i: meter time T0 + i s, gas reading renewed every `gas_every` s."""
    at = T0 + timedelta(seconds=i)
    fields = {
        "total_consumption_day": 1000.0 + i * 0.001,
        "total_consumption_night": 2000.0,
        "actual_total_consumption": 0.5 + (i % 7) * 0.1,
        "actual_total_injection": 0.0,
        "l1_voltage": 230.0,
        "l1_current": float(i % 5),
        "total_gas_consumption": 500.0 + (i // gas_every) * 0.01,
    }
    gas_time = T0 + timedelta(seconds=(i // gas_every) * gas_every)
    return Reading(
        seq=i, protocol="dsmr", meter_id=meter_id, header="TEST5\\253", meter_time=at,
        received=at + timedelta(seconds=1), values={}, fields=fields, gas_time=gas_time,
    )


def relays_for(i: int) -> dict[str, bool]:
    """Boiler on for odd readings, heat pump always off."""
    return {"boiler": i % 2 == 1, "heatpump": False}


def config(tmp_path: Path, **kw: object) -> InfluxConfig:
    """An InfluxConfig with its spool in tmp_path."""
    base = InfluxConfig(
        enabled=True, url="http://127.0.0.1:9", batch_size=50, flush_interval=5.0, timeout=2.0,
        spool_dir=str(tmp_path / "spool"), spool_max=10**7, status_interval=60.0,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


class FakeWriter:
    """Records batches; `up` and `reject` decide the outcome."""

    def __init__(self) -> None:
        self.up = True
        self.reject = False
        self.batches: list[Batch] = []
        self.attempts = 0
        self.closed = False

    def send(self, batch: Batch, timeout_s: float | None = None) -> SendResult:
        self.attempts += 1
        if not self.up:
            return SendResult(Outcome.RETRY, "ConnectionRefusedError")
        if self.reject:
            return SendResult(Outcome.REJECT, 'partial write: field type conflict: input field "x"', 400)
        self.batches.append(batch)
        return SendResult(Outcome.OK, "", 204)

    def close(self) -> None:
        self.closed = True

    def lines(self) -> list[bytes]:
        return [ln for b in self.batches for ln in b.payload.split(b"\n")]


def fake_sink(tmp_path: Path, **kw: object) -> tuple[InfluxSink, FakeWriter]:
    w = FakeWriter()
    return InfluxSink(config(tmp_path, **kw), writer=w, backoff=Backoff(1.0, 8.0)), w


def stamps(lines: list[bytes]) -> list[int]:
    return [int(ln.rsplit(b" ", 1)[1]) for ln in lines]


def drain(sink: InfluxSink, now: float, limit_s: float = 20.0) -> float:
    """Tick (1 s steps of `now`) until nothing is pending or spooled; returns the final `now`."""
    deadline = time.monotonic() + limit_s
    while sink.pending_points or not sink.spool.empty:
        assert time.monotonic() < deadline, f"did not drain: {sink.stats}"
        now += 1.0
        sink.tick(now)
    return now


# ---------------------------------------------------------------- converters


def test_reading_point_layout() -> None:
    r = make_reading(1)
    line = reading_point(r, {"boiler": True, "heatpump": False}, "smartmeter")
    assert line is not None
    assert line.to_line_protocol() == (
        "smartmeter,meter_id=1SAG3100721326 actual_total_consumption=0.6,actual_total_injection=0,"
        "l1_current=1,l1_voltage=230,relay_boiler=1i,relay_heatpump=0i,total_consumption_day=1000.001,"
        f"total_consumption_night=2000 {T0_S + 1}"
    )


def test_gas_is_its_own_point_at_gas_time() -> None:
    r = make_reading(301)
    g = gas_point(r, "smartmeter")
    assert g is not None
    assert g.to_line_protocol() == f"smartmeter,meter_id={METER} total_gas_consumption=500.01 {T0_S + 300}"
    p = reading_point(r, {}, "smartmeter")
    assert p is not None and "gas" not in p.to_line_protocol()


def test_gas_written_once_per_new_gas_reading() -> None:
    gas = GasTracker()
    lines = [ln for i in range(900) for ln in reading_lines(make_reading(i), {}, "m", gas)]
    gas_lines = [ln for ln in lines if b"total_gas_consumption" in ln]
    assert stamps(gas_lines) == [T0_S, T0_S + 300, T0_S + 600]
    assert len(lines) == 903


def test_gas_without_timestamp_written_when_value_changes() -> None:
    gas = GasTracker()
    readings = [replace(make_reading(i, gas_every=2), gas_time=None) for i in range(6)]
    gas_lines = [ln for r in readings for ln in reading_lines(r, {}, "m", gas) if b"gas" in ln]
    assert stamps(gas_lines) == [T0_S, T0_S + 2, T0_S + 4]


def test_relay_event_point_and_empty_reading() -> None:
    p = relay_point({"boiler": False}, T0, "m", METER)
    assert p is not None and p.to_line_protocol() == f"m,meter_id={METER} relay_boiler=0i {T0_S}"
    assert relay_point({}, T0, "m", METER) is None
    empty = replace(make_reading(0), fields={})
    assert reading_point(empty, {}, "m") is None


def test_real_capture_converts() -> None:
    from app.protocols.dsmr import parse_telegram

    path = FIXTURES / "fluvius_be_p1v50217_1.txt"
    if not path.exists():
        pytest.skip(f"{path} missing: put the shared fixtures beside the repo")
    r = parse_telegram(path.read_bytes(), datetime.now(UTC), ZoneInfo("Europe/Brussels"))
    lines = list(reading_lines(r, {"boiler": True}, "smartmeter", GasTracker()))
    assert len(lines) == 2
    assert lines[0].startswith(b"smartmeter,meter_id=1SAG3100721326 actual_l1_consumption=0.047,")
    assert lines[0].endswith(b",relay_boiler=1i,total_consumption=571.562,total_consumption_day=301.548,"
                             b"total_consumption_night=270.014,total_injection=0.005,total_injection_day=0.005,"
                             b"total_injection_night=0,total_water_consumption=8.579 1698923748")
    assert lines[1] == b"smartmeter,meter_id=1SAG3100721326 total_gas_consumption=92.287 1698923402"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(204, Outcome.OK), (200, Outcome.OK), (400, Outcome.REJECT), (413, Outcome.REJECT),
     (422, Outcome.REJECT), (401, Outcome.RETRY), (404, Outcome.RETRY), (429, Outcome.RETRY),
     (500, Outcome.RETRY), (503, Outcome.RETRY)],
)
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status) is outcome


def test_server_message() -> None:
    assert server_message(b'{"error":"partial write: x"}\n', "?") == "partial write: x"
    assert server_message(b'{"code":"invalid","message":"bad line"}', "?") == "bad line"
    assert server_message(b"plain text\n", "?") == "plain text"
    assert server_message(b"", "Bad Request") == "Bad Request"


def test_backoff_doubles_up_to_cap() -> None:
    b = Backoff(1.0, 10.0)
    assert [b.failed(0.0) for _ in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert not b.ready(9.9) and b.ready(10.0)
    b.succeeded()
    assert b.ready(0.0) and b.failed(0.0) == 1.0


# ---------------------------------------------------------------- batching (fake writer)


def test_batches_by_size_and_interval_and_close(tmp_path: Path) -> None:
    sink, w = fake_sink(tmp_path, batch_size=10, flush_interval=5.0)
    for i in range(25):
        sink.write(make_reading(i), relays_for(i))
    assert w.batches == []  # write() never sends
    sink.tick(100.0)
    assert [b.n_points for b in w.batches] == [10, 10]  # full batches only (1 gas line in the 26)
    assert sink.pending_points == 6
    sink.tick(104.0)
    assert len(w.batches) == 2
    sink.tick(105.0)  # flush_interval after the tick that first saw them
    assert [b.n_points for b in w.batches] == [10, 10, 6]
    sink.write(make_reading(25), relays_for(25))
    sink.close()
    sink.close()
    assert w.closed and sum(b.n_points for b in w.batches) == 27
    assert stamps([ln for ln in w.lines() if b"gas" not in ln]) == [T0_S + i for i in range(26)]


def test_pending_is_bounded_without_ticks(tmp_path: Path) -> None:
    sink, w = fake_sink(tmp_path, batch_size=5)
    for i in range(60):
        sink.write(make_reading(i), {})
    assert sink.pending_points < 50 and sink.stats["spooled"] >= 50
    drain(sink, 0.0)
    assert sorted(stamps([ln for ln in w.lines() if b"gas" not in ln])) == [T0_S + i for i in range(60)]
    sink.close()


def test_outage_spools_then_replays_in_order(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sink, w = fake_sink(tmp_path, batch_size=5, flush_interval=1.0, status_interval=10.0)
    caplog.set_level(logging.INFO, logger="app.sinks")
    now = 0.0
    for i in range(200):
        w.up = not 50 <= i < 150
        sink.write(make_reading(i), {})
        now += 1.0
        sink.tick(now)
    now = drain(sink, now)
    got = [ln for ln in w.lines() if b"gas" not in ln]
    assert sorted(stamps(got)) == [T0_S + i for i in range(200)]  # each exactly once
    s = sink.stats
    assert s["spooled"] > 90 and s["replayed"] == s["spooled"] and s["dropped"] == 0
    assert s["backlog"] == 0 and not any(tmp_path.joinpath("spool").glob("*.seg"))
    replayed = [stamps(b.payload.split(b"\n"))[0] for b in w.batches]
    outage = [t for t in replayed if T0_S + 50 <= t < T0_S + 150]
    assert outage == sorted(outage)
    text = caplog.text
    assert "write failed" in text and "backlog" in text and "spooled" in text and "spool drained" in text
    sink.close()


def test_reject_moves_batch_aside(tmp_path: Path) -> None:
    sink, w = fake_sink(tmp_path, batch_size=5)
    w.reject = True
    for i in range(5):
        sink.write(make_reading(i), {})
    sink.tick(1.0)
    w.reject = False
    for i in range(5, 10):
        sink.write(make_reading(i), {})
    sink.tick(2.0)
    rejects = sorted((tmp_path / "spool" / "reject").glob("*.lp"))
    assert len(rejects) == 1
    assert len(rejects[0].read_bytes().splitlines()) == 5
    assert "type conflict" in rejects[0].with_suffix(".err").read_text()
    assert sink.stats["rejected"] == 5 and sink.stats["backlog"] == 0 and len(w.batches) == 1
    sink.close()


def test_close_is_bounded_when_server_is_down(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    cfg = config(tmp_path, url=f"http://127.0.0.1:{port}", api="v1", batch_size=100, timeout=10.0)
    sink = InfluxSink(cfg)
    for i in range(250):
        sink.write(make_reading(i), {})
    t = time.monotonic()
    sink.close()
    assert time.monotonic() - t < 3.0
    spool = Spool(cfg.spool_dir, cfg.spool_max)
    assert spool.pending_points == 251
    spool.close()


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_close_is_bounded_when_server_hangs(tmp_path: Path, api: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as hung:  # accepts connections, never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(16)
        url = f"http://127.0.0.1:{hung.getsockname()[1]}"
        cfg = config(tmp_path, url=url, api=api, batch_size=100, timeout=30.0)
        sink = InfluxSink(cfg)
        for i in range(250):
            sink.write(make_reading(i), {})
        t = time.monotonic()
        sink.close()
        assert time.monotonic() - t < 3.0
    spool = Spool(cfg.spool_dir, cfg.spool_max)
    assert spool.pending_points == 251
    spool.close()


def test_unusable_spool_dir_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"\[influxdb\] spool_dir"):
        InfluxSink(config(tmp_path, spool_dir=str(blocker / "spool")), writer=FakeWriter())


def test_spool_dir_in_use_is_a_config_error(tmp_path: Path) -> None:
    first, _ = fake_sink(tmp_path)
    with pytest.raises(ConfigError, match="in use by another process"):
        fake_sink(tmp_path)
    first.close()
    second, _ = fake_sink(tmp_path)  # the lock goes with close()
    second.close()


# ---------------------------------------------------------------- spool


def test_spool_survives_reopen_and_keeps_cursor(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6)
    for i in range(3):
        assert sp.append(Batch(f"m v={i} {i}".encode(), 1))
    b = sp.peek()
    assert b is not None and b.payload == b"m v=0 0"
    sp.ack()
    sp.close()
    sp2 = Spool(tmp_path, 10**6)
    assert sp2.pending_points == 2
    got = []
    while (b := sp2.peek()) is not None:
        got.append(b.payload)
        sp2.ack()
    assert got == [b"m v=1 1", b"m v=2 2"]
    assert sp2.empty and not list(tmp_path.glob("*.seg")) and not (tmp_path / "cursor").exists()
    sp2.close()


def test_spool_bound_drops_oldest_and_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sp = Spool(tmp_path, 8192, segment_bytes=2048, compress=False)
    payload = b"x" * 500
    for i in range(40):
        sp.append(Batch(payload + str(i).encode(), 10))
    assert sp.size_bytes <= 8192
    assert sp.stats.dropped > 0 and sp.stats.dropped + sp.pending_points == 400
    assert "dropped the oldest segment" in caplog.text
    first = sp.peek()
    assert first is not None and first.payload != payload + b"0"
    last = None
    while (b := sp.peek()) is not None:
        last = b
        sp.ack()
    assert last is not None and last.payload == payload + b"39"
    sp.close()


class _FullDisk:
    """Writes bigger than `limit_bytes` fail with EFBIG (RLIMIT_FSIZE, SIGXFSZ ignored): a full disk."""

    def __init__(self, limit_bytes: int) -> None:
        import resource
        import signal

        self.resource, self.signal = resource, signal
        self.soft, self.hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        self.old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, self.hard))

    def end(self) -> None:
        self.resource.setrlimit(self.resource.RLIMIT_FSIZE, (self.soft, self.hard))
        self.signal.signal(self.signal.SIGXFSZ, self.old)


def _drain(sp: Spool) -> list[bytes]:
    out = []
    while (b := sp.peek()) is not None:
        out.append(b.payload)
        sp.ack()
    return out


def test_full_disk_holds_batches_in_memory_then_drops_oldest(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    """The CSV sink's policy: hold a bounded amount in memory, drop the oldest past it (counted), write
    everything held once the disk accepts again, in order."""
    caplog.set_level(logging.INFO)
    sp = Spool(tmp_path, 10**6, compress=False)
    sp.append(Batch(b"before", 1))
    sp.hold_max_bytes = 5 * (HEADER_BYTES + 4)
    disk = _FullDisk(0)
    try:
        for i in range(8):
            assert sp.append(Batch(f"b{i:03d}".encode(), 10))
        assert sp.stats.dropped == 30  # the three oldest held batches, not the newest
        assert sp.pending_points == 1 + 50 and sp.held_points == 50
        assert "holding batches in memory" in caplog.text
    finally:
        disk.end()
    assert _drain(sp) == [b"before", b"b003", b"b004", b"b005", b"b006", b"b007"]
    assert "the disk accepts again" in caplog.text
    assert sp.stats.replayed == 51 and sp.empty
    sp.close()


def test_held_batches_replay_from_memory_while_the_disk_still_refuses(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6, compress=False)
    disk = _FullDisk(0)
    try:
        for i in range(3):
            sp.append(Batch(f"m{i}".encode(), 2))
        assert _drain(sp) == [b"m0", b"m1", b"m2"]  # the server came back before the disk did
        assert sp.empty and sp.stats.dropped == 0
        sp.append(Batch(b"lost", 4))
        sp.close()  # the disk still refuses it: lost at stop, counted
        assert sp.stats.dropped == 4
    finally:
        disk.end()


def test_torn_last_record_is_skipped(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6)
    for i in range(3):
        sp.append(Batch(f"m v={i} {i}".encode() * 20, 20))
    sp.close()
    seg = next(tmp_path.glob("*.seg"))
    data = seg.read_bytes()
    seg.write_bytes(data[:-7])  # power cut in the middle of the last append
    sp2 = Spool(tmp_path, 10**6)
    assert sp2.pending_points == 40  # the torn record is not counted
    got = []
    while (b := sp2.peek()) is not None:
        got.append(b.payload[:7])
        sp2.ack()
    assert got == [b"m v=0 0", b"m v=1 1"]
    assert sp2.stats.torn == 1 and sp2.empty
    sp2.append(Batch(b"m v=9 9", 1))  # appends go on in a fresh segment
    b = sp2.peek()
    assert b is not None and b.payload == b"m v=9 9"
    sp2.close()


def test_corrupt_record_in_the_middle_is_skipped(tmp_path: Path) -> None:
    sp = Spool(tmp_path, 10**6, compress=False)
    for i in range(3):
        sp.append(Batch(f"m v={i} {i}".encode(), 1))
    sp.close()
    seg = next(tmp_path.glob("*.seg"))
    data = bytearray(seg.read_bytes())
    rec = len(data) // 3
    data[rec + HEADER_BYTES + 2] ^= 0x01  # flip a bit in the second record's payload
    seg.write_bytes(bytes(data))
    sp2 = Spool(tmp_path, 10**6)
    got = []
    while (b := sp2.peek()) is not None:
        got.append(b.payload)
        sp2.ack()
    assert got == [b"m v=0 0", b"m v=2 2"]
    assert sp2.stats.torn == 1 and sp2.stats.dropped == 1
    sp2.close()


def _write_spool(directory: Path, payloads: list[bytes]) -> bytes:
    sp = Spool(directory, 10**6)
    for i, payload in enumerate(payloads):
        sp.append(Batch(payload, i + 1))
    sp.close()
    (seg,) = directory.glob("*.seg")
    return seg.read_bytes()


def _replay_all(directory: Path) -> list[bytes]:
    sp = Spool(directory, 10**6)
    got = []
    while (b := sp.peek()) is not None:
        got.append(b.payload)
        sp.ack()
    assert sp.empty
    sp.close()
    return got


payload_lists = st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(payloads=payload_lists, data=st.data())
def test_any_truncation_replays_the_records_before_it(payloads: list[bytes], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        raw = _write_spool(Path(d), payloads)
        cut = data.draw(st.integers(0, len(raw)))
        next(Path(d).glob("*.seg")).write_bytes(raw[:cut])
        got = _replay_all(Path(d))
    assert got == payloads[:len(got)]
    whole = len(_record_ends_before(payloads, cut))
    assert len(got) == whole


def _record_ends_before(payloads: list[bytes], cut: int) -> list[int]:
    """The records that end at or before `cut`."""
    ends, pos = [], 0
    for i, p in enumerate(payloads):
        pos += len(encode_record(Batch(p, i + 1)))
        if pos <= cut:
            ends.append(pos)
    return ends


@settings(max_examples=40, deadline=None)
@given(payloads=payload_lists, data=st.data())
def test_a_flipped_bit_never_yields_a_wrong_batch(payloads: list[bytes], data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as d:
        raw = bytearray(_write_spool(Path(d), payloads))
        bit = data.draw(st.integers(0, len(raw) * 8 - 1))
        raw[bit // 8] ^= 1 << (bit % 8)
        next(Path(d).glob("*.seg")).write_bytes(bytes(raw))
        got = _replay_all(Path(d))
    assert len(got) < len(payloads)
    it = iter(payloads)
    assert all(any(g == p for p in it) for g in got)  # an in-order subsequence of what was written


def test_status_line_while_backlogged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = FakeWriter()
    w.up = False
    spool = Spool(tmp_path, 10**6)
    sender = SpooledSender("influxdb", w.send, spool, Backoff(1.0, 4.0), status_interval_s=60.0)
    caplog.set_level(logging.INFO, logger="app.sinks.spool")
    for t in range(0, 200):
        sender.submit(Batch(b"m v=1 1", 1), float(t))
        sender.tick(float(t))
    status = [r.getMessage() for r in caplog.records if "backlog" in r.getMessage()]
    assert len(status) == 3  # at 60, 120 and 180 s
    assert "spooled 60" in status[0] and "replayed 0" in status[0] and "dropped 0" in status[0]
    spool.close()


# ---------------------------------------------------------------- real servers


def test_missing_binary_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fixtures_influx.shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y influxdb victoria-metrics"):
        fixtures_influx.require_binary("influxd")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="apt-get install -y influxdb victoria-metrics"):
        fixtures_influx.require_binary("victoria-metrics")



def test_v1_round_trip(influxdb_v1: InfluxV1Server, tmp_path: Path) -> None:
    influxdb_v1.create_database("rt")
    cfg = config(tmp_path, url=influxdb_v1.url, api="v1", database="rt", retention_policy="autogen",
                 username="reader", password="secret", batch_size=100)
    sink = InfluxSink(cfg)
    for i in range(600):
        sink.write(make_reading(i), relays_for(i))
        sink.tick(float(i))
    sink.relay_event({"boiler": False, "heatpump": True}, T0 + timedelta(seconds=700), "override")
    sink.close()
    assert sink.stats["written"] == 603 and sink.stats["spooled"] == 0
    rows = influxdb_v1.rows("rt", "smartmeter", "total_gas_consumption > 0")
    assert [(r["time"], r["total_gas_consumption"]) for r in rows] == [(T0_S, 500.0), (T0_S + 300, 500.01)]
    rows = influxdb_v1.rows("rt", "smartmeter", "l1_voltage > 0")
    assert len(rows) == 600
    r7 = next(r for r in rows if r["time"] == T0_S + 7)
    assert r7["meter_id"] == METER and r7["relay_boiler"] == 1 and r7["relay_heatpump"] == 0
    assert r7["l1_current"] == 2.0 and r7["total_consumption_day"] == pytest.approx(1000.007)
    (series,) = influxdb_v1.query('SELECT mean("relay_boiler") FROM "smartmeter" WHERE l1_voltage > 0', "rt")
    assert series["values"][0][1] == pytest.approx(0.5)
    (series,) = influxdb_v1.query(
        f'SELECT relay_boiler, relay_heatpump, meter_id FROM "smartmeter" WHERE time = {T0_S + 700}s', "rt"
    )
    assert series["values"] == [[T0_S + 700, 0, 1, METER]]


def test_v1_type_conflict_goes_to_reject(influxdb_v1: InfluxV1Server, tmp_path: Path) -> None:
    influxdb_v1.create_database("rej")
    V1Writer(config(tmp_path, url=influxdb_v1.url, api="v1", database="rej")).send(
        Batch(f'smartmeter,meter_id=x l1_voltage="text" {T0_S - 10}'.encode(), 1)
    )
    sink = InfluxSink(config(tmp_path, url=influxdb_v1.url, api="v1", database="rej", batch_size=10))
    for i in range(9):  # 9 readings + 1 gas point: one batch
        sink.write(make_reading(i), {})
    sink.tick(0.0)
    sink.write(replace(make_reading(10), fields={"l2_voltage": 231.0}), {})
    sink.close()
    (lp,) = (tmp_path / "spool" / "reject").glob("*.lp")
    err = lp.with_suffix(".err").read_text()
    assert err.startswith("HTTP 400") and "field type conflict" in err and "l1_voltage" in err
    assert len(lp.read_bytes().splitlines()) == 10
    assert sink.stats["rejected"] == 10 and sink.stats["backlog"] == 0 and sink.stats["written"] == 1


def test_v2_api_round_trip_victoria_metrics(victoria_metrics: VictoriaMetricsServer, tmp_path: Path) -> None:
    cfg = config(tmp_path, url=victoria_metrics.url, api="v2", token="tok", org="home", bucket="b",
                 measurement="rt2", batch_size=100)
    sink = InfluxSink(cfg)
    for i in range(350):
        sink.write(make_reading(i), relays_for(i))
        sink.tick(float(i))
    sink.close()
    assert sink.stats["written"] == 352
    volts = victoria_metrics.samples("rt2_l1_voltage", meter_id=METER)
    assert volts == [(T0_S + i, 230.0) for i in range(350)]
    boiler = victoria_metrics.samples("rt2_relay_boiler", meter_id=METER)
    assert [v for _, v in boiler[:4]] == [0.0, 1.0, 0.0, 1.0]
    assert victoria_metrics.samples("rt2_total_gas_consumption") == [(T0_S, 500.0), (T0_S + 300, 500.01)]


Steps = Mapping[int, Callable[[], object]]


def stream(sink: InfluxSink, start: int, stop: int, now: float, on_step: Steps | None = None) -> float:
    """Write readings start..stop-1 one per (fake) second, ticking after each; run on_step callbacks."""
    for i in range(start, stop):
        action = (on_step or {}).get(i)
        if action is not None:
            action()
        sink.write(make_reading(i), relays_for(i))
        now += 1.0
        sink.tick(now)
    return now


def assert_exactly_once_vm(vm: VictoriaMetricsServer, metric: str, n: int) -> None:
    got = [t for t, _ in vm.samples(metric, meter_id=METER)]
    assert len(got) == len(set(got)), "duplicates"
    assert got == [T0_S + i for i in range(n)]


def test_outage_exactly_once_v2(victoria_metrics: VictoriaMetricsServer, tmp_path: Path) -> None:
    cfg = config(tmp_path, url=victoria_metrics.url, api="v2", measurement="out2", batch_size=10,
                 flush_interval=2.0, timeout=2.0)
    sink = InfluxSink(cfg, backoff=Backoff(1.0, 4.0))
    now = stream(sink, 0, 300, 0.0, {100: victoria_metrics.stop, 200: victoria_metrics.start})
    assert sink.stats["spooled"] >= 90
    drain(sink, now)
    sink.close()
    assert sink.stats["dropped"] == 0 and sink.stats["replayed"] == sink.stats["spooled"]
    assert_exactly_once_vm(victoria_metrics, "out2_l1_voltage", 300)


def test_outage_exactly_once_v1(influxdb_v1: InfluxV1Server, tmp_path: Path) -> None:
    influxdb_v1.create_database("out1")
    cfg = config(tmp_path, url=influxdb_v1.url, api="v1", database="out1", batch_size=10, flush_interval=2.0)
    sink = InfluxSink(cfg, backoff=Backoff(1.0, 4.0))
    now = stream(sink, 0, 300, 0.0, {100: lambda: influxdb_v1.stop(kill=True), 200: influxdb_v1.start})
    assert sink.stats["spooled"] >= 90
    drain(sink, now)
    sink.close()
    rows = influxdb_v1.rows("out1", "smartmeter", "l1_voltage > 0")
    assert [r["time"] for r in rows] == [T0_S + i for i in range(300)]


def test_appliance_restart_replays_spool(victoria_metrics: VictoriaMetricsServer, tmp_path: Path) -> None:
    cfg = config(tmp_path, url=victoria_metrics.url, api="v2", measurement="rs2", batch_size=10,
                 flush_interval=2.0, timeout=2.0)
    victoria_metrics.stop()
    try:
        first = InfluxSink(cfg, backoff=Backoff(1.0, 4.0))
        stream(first, 0, 200, 0.0)
        first.close()  # the pending tail goes to the spool too
        assert first.stats["written"] == 0 and first.stats["spooled"] == 201
    finally:
        victoria_metrics.start()
    second = InfluxSink(cfg)
    second.sender.replay_budget_s = 0.0  # one spooled batch per tick: stop half-way through the replay
    now = stream(second, 200, 205, 1000.0)
    assert 0 < second.stats["replayed"] < 201
    second.close()
    third = InfluxSink(cfg)
    assert 0 < third.spool.pending_points < 201
    now = stream(third, 205, 250, now)
    drain(third, now)
    third.close()
    assert_exactly_once_vm(victoria_metrics, "rs2_l1_voltage", 250)
    # the gas reading is written once per sink start (the tracker is not persisted): same time, same value
    assert set(victoria_metrics.samples("rs2_total_gas_consumption")) == {(T0_S, 500.0)}


def test_torn_spool_record_after_power_cut(victoria_metrics: VictoriaMetricsServer, tmp_path: Path) -> None:
    cfg = config(tmp_path, url=victoria_metrics.url, api="v2", measurement="torn", batch_size=10,
                 flush_interval=1000.0)
    victoria_metrics.stop()
    try:
        first = InfluxSink(cfg)
        stream(first, 0, 30, 0.0)
        first.close()
    finally:
        victoria_metrics.start()
    (seg,) = (tmp_path / "spool").glob("*.seg")
    seg.write_bytes(seg.read_bytes()[:-5])  # the last record (reading 29) is torn
    second = InfluxSink(cfg)
    drain(second, 0.0)
    second.close()
    assert second.stats["torn"] == 1
    assert_exactly_once_vm(victoria_metrics, "torn_l1_voltage", 30 - 1)
