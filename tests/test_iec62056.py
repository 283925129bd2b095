"""IEC 62056-21: the block framer and dialogue (pure, hypothesis), and readouts from a simulated meter
that follows the mode C dialogue over a real pty pair (normal, wrong BCC, no answer, no baud switch)."""

from __future__ import annotations

import os
import select
import termios
import threading
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.config import Section
from app.errors import ConfigError
from app.meters import MeterSpec, parse_meter
from app.meters.iec62056 import (
    BlockFramer,
    Done,
    Fail,
    IecSettings,
    Readout,
    Send,
    SetBaud,
    ack,
    bcc,
    data_block,
    normalize_lines,
    open_poller,
    parse_identification,
    to_reading,
)
from app.meters.sample import MeterError

TZ = ZoneInfo("Europe/Vienna")
LINES = (b"F.F(00000000)\r\n"
         b"C.1.0(12345678)\r\n"
         b"0.0.0(12345678)\r\n"
         b"1.8.0(0012345.678*kWh)\r\n"
         b"1.8.1(0010000.000*kWh)\r\n"
         b"2.8.0(0000321.500*kWh)\r\n"
         b"1.7.0(01.234*kW)\r\n"
         b"32.7.0(231.4*V)\r\n"
         b"31.7.0(005.10*A)\r\n"
         b"!\r\n")
IDENT = b"/LGZ5ZMD3104100.B32\r\n"


# --- pure: identification, ack, block, framer --------------------------------------------------------------


def test_identification_gives_mode_and_baud() -> None:
    c = parse_identification(b"/LGZ5ZMD3104100.B32\r\n")
    assert (c.manufacturer, c.baud_char, c.ident, c.mode, c.baud) == ("LGZ", "5", "ZMD3104100.B32", "C", 9600)
    assert parse_identification(b"/ISk5MT174-0001").baud == 9600
    b = parse_identification(b"/ABCE123")
    assert (b.mode, b.baud) == ("B", 9600)
    a = parse_identification(b"/XYZ@ident")
    assert (a.mode, a.baud) == ("A", 300)
    with pytest.raises(Exception, match="not an IEC 62056-21 identification"):
        parse_identification(b"garbage")


def test_ack_is_the_six_bytes_of_the_standard() -> None:
    assert ack("5") == b"\x06" + b"0" + b"5" + b"0" + b"\r\n"
    assert ack("0") == b"\x06050\r\n"[:0] + b"\x06000\r\n"


def test_bcc_is_xor_after_stx_through_etx() -> None:
    block = data_block(b"1.8.0(1*kWh)\r\n!\r\n")
    assert block[0] == 0x02 and block[-2] == 0x03
    x = 0
    for b in block[1:-1]:
        x ^= b
    assert block[-1] == x == bcc(block[1:-1])


def test_framer_good_and_bad_bcc_blocks() -> None:
    f = BlockFramer()
    good = data_block(LINES)
    bad = good[:-1] + bytes([good[-1] ^ 0x01])
    frames = f.feed(b"noise" + good + bad + good)
    assert [fr.ok for fr in frames] == [True, False, True]
    assert frames[0].data == LINES and frames[0].crc_ok is True
    assert "BCC mismatch" in frames[1].reason and frames[1].crc_ok is False
    assert f.skipped == 5


def test_framer_drops_parity_bit_and_caps_size() -> None:
    f = BlockFramer(max_frame=64)
    with_parity = bytes(b | 0x80 if bin(b).count("1") % 2 else b for b in data_block(b"1.8.0(1*kWh)\r\n!\r\n"))
    assert [fr.ok for fr in f.feed(with_parity)] == [True]
    frames = f.feed(b"\x02" + b"x" * 200)
    assert frames and not frames[0].ok and "longer than 64" in frames[0].reason
    assert len(f._buf) <= 64 + 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=60), st.binary(max_size=50))
def test_framer_any_chunking_same_blocks(cuts: list[int], noise: bytes) -> None:
    noise = bytes(b for b in noise if b & 0x7F != 0x02)  # an STX (with or without parity) would start a block
    stream = noise + data_block(LINES) + noise + data_block(b"1.8.0(2*kWh)\r\n!\r\n")
    f = BlockFramer()
    frames = []
    pos = 0
    for n in cuts * 20:
        if pos >= len(stream):
            break
        frames += f.feed(stream[pos:pos + n])
        pos += n
    frames += f.feed(stream[pos:])
    assert [(fr.ok, fr.data) for fr in frames] == [(True, LINES), (True, b"1.8.0(2*kWh)\r\n!\r\n")]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_framer_garbage_never_raises(data: bytes) -> None:
    f = BlockFramer(max_frame=256)
    for i in range(0, len(data), 37):
        f.feed(data[i:i + 37])
    f.flush()
    assert len(f._buf) == 0


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_framer_a_flipped_bit_fails_bcc(data: st.DataObject) -> None:
    block = bytearray(data_block(LINES))
    pos = data.draw(st.integers(min_value=1, max_value=len(block) - 1))
    bit = data.draw(st.integers(min_value=0, max_value=6))  # 7E1: seven data bits
    flipped = block[pos] ^ (1 << bit)
    if block[pos] in (0x02, 0x03) or flipped in (0x02, 0x03):
        return  # a flip that makes or breaks the framing marks is another test's business
    block[pos] = flipped
    frames = BlockFramer().feed(bytes(block))
    assert not any(fr.ok for fr in frames)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500))
def test_normalize_and_readout_never_raise_on_garbage(data: bytes) -> None:
    normalize_lines(data)
    r = Readout()
    r.start()
    r.feed(data)


# --- pure: the dialogue ------------------------------------------------------------------------------


def test_mode_c_dialogue_acks_and_switches() -> None:
    r = Readout()
    assert r.start() == [Send(b"/?!\r\n")]
    assert r.feed(b"/?!\r\n") == []  # the optical head's echo of our own request
    actions = r.feed(IDENT)
    assert actions == [Send(b"\x06050\r\n"), SetBaud(9600)]
    block = data_block(LINES)
    assert r.feed(block[:10]) == []
    done = r.feed(block[10:])
    assert len(done) == 1 and isinstance(done[0], Done) and done[0].lines == LINES
    assert done[0].ident.header == "LGZ5ZMD3104100.B32"


def test_mode_c_without_switch_and_capped_baud() -> None:
    r = Readout(switch=False)
    r.start()
    assert r.feed(IDENT) == [Send(b"\x06000\r\n")]
    r = Readout(max_baud=2400, address="12345678")
    assert r.start() == [Send(b"/?12345678!\r\n")]
    assert r.feed(IDENT) == [Send(b"\x06030\r\n"), SetBaud(2400)]


def test_mode_a_and_b() -> None:
    r = Readout()
    r.start()
    actions = r.feed(b"/XYZ@meter\r\n" + data_block(LINES))  # mode A: data follows at once, no switch
    assert len(actions) == 1 and isinstance(actions[0], Done)
    r = Readout()
    r.start()
    assert r.feed(b"/ABCEmeter\r\n") == [SetBaud(9600)]  # mode B: no ack
    assert isinstance(r.feed(data_block(LINES))[0], Done)


def test_dialogue_reports_bad_bcc() -> None:
    r = Readout()
    r.start()
    r.feed(IDENT)
    block = data_block(LINES)
    actions = r.feed(block[:-1] + bytes([block[-1] ^ 0x10]))
    assert len(actions) == 1 and isinstance(actions[0], Fail) and actions[0].bcc


def test_readout_lines_give_the_p1_named_fields() -> None:
    reading = to_reading("LGZ5ZMD3104100.B32", LINES, datetime(2026, 1, 1, tzinfo=UTC), TZ)
    assert reading.protocol == "iec62056-21" and reading.crc_ok is True
    assert reading.fields["total_consumption"] == pytest.approx(12345.678)
    assert reading.fields["total_injection"] == pytest.approx(321.5)
    assert reading.fields["actual_total_consumption"] == pytest.approx(1.234)
    assert reading.fields["l1_voltage"] == pytest.approx(231.4)
    assert reading.meter_id == "12345678"
    assert "0-0:97.97.0" in reading.values


def test_config_keys_and_errors() -> None:
    spec = parse_meter(Section("meter:wien", {"protocol": "iec62056-21", "port": "/dev/ttyUSB0",
                                             "max_baudrate": "4800"}), "wien")
    assert spec.poll_interval == 60.0 and spec.settings.max_baudrate == 4800
    assert (spec.settings.bytesize, spec.settings.parity, spec.settings.baudrate) == (7, "E", 300)
    push = parse_meter(Section("meter:easy", {"protocol": "iec62056-21", "port": "/dev/ttyUSB0",
                                             "mode": "push"}), "easy")
    assert push.poll_interval is None and push.settings.baudrate == 9600
    with pytest.raises(ConfigError, match=r"\[meter:x\] max_baudrate = '1000'"):
        parse_meter(Section("meter:x", {"protocol": "iec62056-21", "port": "/dev/x", "max_baudrate": "1000"}), "x")
    with pytest.raises(ConfigError, match=r"\[meter:x\] port: missing"):
        parse_meter(Section("meter:x", {"protocol": "iec62056-21"}), "x")


# --- a simulated meter on a pty pair ------------------------------------------------------------------------

_SPEEDS = {getattr(termios, f"B{b}"): b for b in (300, 600, 1200, 2400, 4800, 9600, 19200)}


class SimMeter:
    """A mode C meter on the master side of a pty: answers /?! with its identification, takes the ACK,
    switches (or not) and sends the data block. It reads the line speed the reader set on the slave's
    termios: bytes sent at another speed than the reader listens at arrive as a UART would see them, noise."""

    def __init__(self, behaviour: str = "normal") -> None:
        self.behaviour = behaviour  # normal | bad_bcc | silent | no_switch
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.requests = 0
        self.acks: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reader_baud(self) -> int:
        return _SPEEDS.get(termios.tcgetattr(self.slave)[5], 0)

    def _send(self, data: bytes, at_baud: int) -> None:
        if self.reader_baud() != at_baud:
            data = bytes(0x00 if i % 2 else 0xF8 for i in range(len(data)))  # a start bit read as data
        os.write(self.master, data)

    def _wait_baud(self, want: int, timeout: float = 5.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self._stop.is_set():
            if self.reader_baud() == want:
                return
            time.sleep(0.01)

    def _run(self) -> None:
        buf = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(self.master, 256)
            except OSError:
                return
            if b"!\r\n" in buf and b"/?" in buf:
                buf = b""
                self.requests += 1
                if self.behaviour == "silent":
                    continue
                time.sleep(0.05)
                self._send(IDENT, 300)
                continue
            if buf.startswith(b"\x06") and buf.endswith(b"\r\n") and len(buf) >= 6:
                self.acks.append(buf)
                z = chr(buf[2])
                buf = b""
                baud = {"0": 300, "1": 600, "2": 1200, "3": 2400, "4": 4800, "5": 9600, "6": 19200}[z]
                if self.behaviour == "no_switch":
                    baud = 300
                    self._wait_baud(9600 if z != "0" else 300)  # until the reader has switched (it will hear noise)
                else:
                    self._wait_baud(baud)
                block = data_block(LINES)
                if self.behaviour == "bad_bcc":
                    block = block[:-1] + bytes([block[-1] ^ 0x04])
                self._send(block, baud)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)


def _spec(path: str, timeout: float = 1.5) -> MeterSpec:
    # 8N1 on the pty: this machine's kernel refuses CS7 on a pty (EINVAL); the meter sends 7-bit bytes either
    # way and the framer drops the eighth bit. The baud switch is what the pty's termios shows.
    return MeterSpec(name="wien", role="grid", protocol="iec62056-21", poll_interval=60.0,
                     settings=IecSettings(port=path, timeout=timeout, timezone="Europe/Vienna", bytesize=8,
                                          parity="N"))


@pytest.fixture
def sim(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    meter = SimMeter(getattr(request, "param", "normal"))
    yield meter
    meter.close()


def test_pty_normal_mode_c_readout(sim: SimMeter) -> None:
    poller = open_poller(_spec(sim.path))
    try:
        reading = poller.poll()
        assert reading.fields["total_consumption"] == pytest.approx(12345.678)
        assert sim.acks == [b"\x06050\r\n"]
        assert poller.ser.baudrate == 9600
        again = poller.poll()  # the next readout signs on at 300 baud again
        assert again.fields["total_injection"] == pytest.approx(321.5)
        assert sim.requests == 2
    finally:
        poller.close()


@pytest.mark.parametrize("sim", ["bad_bcc"], indirect=True)
def test_pty_wrong_bcc_rejected_and_counted(sim: SimMeter) -> None:
    poller = open_poller(_spec(sim.path))
    try:
        for n in (1, 2):
            with pytest.raises(MeterError, match=f"BCC mismatch.*{n} BCC errors so far"):
                poller.poll()
        assert poller.bcc_errors == 2
    finally:
        poller.close()


@pytest.mark.parametrize("sim", ["silent"], indirect=True)
def test_pty_no_answer_is_an_error_and_retried(sim: SimMeter) -> None:
    poller = open_poller(_spec(sim.path, timeout=0.5))
    try:
        with pytest.raises(MeterError, match="no identification within 0.5 s"):
            poller.poll()
        sim.behaviour = "normal"  # the meter wakes up: the next poll (a retry) reads it
        assert poller.poll().fields["total_consumption"] == pytest.approx(12345.678)
        assert sim.requests == 2
    finally:
        poller.close()


@pytest.mark.parametrize("sim", ["no_switch"], indirect=True)
def test_pty_meter_ignoring_the_baud_switch_is_detected(sim: SimMeter, caplog: pytest.LogCaptureFixture) -> None:
    poller = open_poller(_spec(sim.path))
    try:
        with pytest.raises(MeterError, match="baud"):
            poller.poll()
        assert poller.switch is False and poller.failed_switches == 1
        assert "ignore the baud switch" in caplog.text
        time.sleep(0.3)  # the noise of the first attempt is over
        reading = poller.poll()  # acked with '0': stays at 300 baud, as the meter does
        assert reading.fields["total_consumption"] == pytest.approx(12345.678)
        assert sim.acks[-1] == b"\x06000\r\n"
    finally:
        poller.close()


# --- push (D0 text sent unasked, EasyMeter style) ------------------------------------------------------------

EASYMETER = (b"/ESY5Q3DA1004 V3.04\r\n\r\n"
             b"1-0:0.0.0*255(1ESY1161234567)\r\n"
             b"1-0:1.8.0*255(00012345.6789012*kWh)\r\n"
             b"1-0:2.8.0*255(00000123.4567890*kWh)\r\n"
             b"1-0:21.7.255*255(000123.45*W)\r\n"
             b"1-0:1.7.255*255(000456.78*W)\r\n"
             b"1-0:96.5.5*255(82)\r\n"
             b"!\r\n")


class _Out:
    def __init__(self) -> None:
        self.readings: list[object] = []
        self.errors: list[str] = []

    def reading(self, r: object) -> None:
        self.readings.append(r)

    def error(self, reason: str) -> None:
        self.errors.append(reason)


def test_push_meter_over_pty() -> None:
    from app.meters.iec62056 import run

    master, slave = os.openpty()
    spec = MeterSpec(name="easy", role="building", protocol="iec62056-21", poll_interval=None,
                     settings=IecSettings(port=os.ttyname(slave), mode="push", baudrate=9600, bytesize=8,
                                          parity="N", timezone="Europe/Berlin"))
    out = _Out()
    done = threading.Event()
    t = threading.Thread(target=run, args=(spec, out, done.is_set), daemon=True)
    t.start()
    try:
        time.sleep(0.3)
        mangled = EASYMETER.replace(b"1.8.0*255(00012345", b"1.8.0*255(00099999")[:-20]  # cut off: no '!'
        for chunk in (b"noise", EASYMETER[:17], EASYMETER[17:], mangled, EASYMETER):
            os.write(master, chunk)
            time.sleep(0.05)
        end = time.monotonic() + 10
        while len(out.readings) < 2 and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        done.set()
        t.join(timeout=5)
        os.close(master)
        os.close(slave)
    assert len(out.readings) == 2
    first = out.readings[0]
    assert first.protocol == "iec62056-21"  # type: ignore[attr-defined]
    assert first.fields["total_consumption"] == pytest.approx(12345.6789012)  # type: ignore[attr-defined]
    assert first.meter_id == "1ESY1161234567"  # type: ignore[attr-defined]
    assert any("truncated" in e for e in out.errors)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=40))
def test_dialogue_any_chunking_same_outcome(cuts: list[int]) -> None:
    stream = b"/?!\r\n" + b"\x00noise\r\n" + b"/XYZ@meter\r\n" + data_block(LINES)  # echo, noise, mode A
    r = Readout()
    r.start()
    actions = []
    pos = 0
    for n in cuts * 50:
        if pos >= len(stream):
            break
        actions += r.feed(stream[pos:pos + n])
        pos += n
    actions += r.feed(stream[pos:])
    assert len(actions) == 1 and isinstance(actions[0], Done) and actions[0].lines == LINES
