"""Modbus meters against pymodbus's own server on loopback: every preset's map read back, a register
map from per-quantity keys (word order, signed power, a 32-bit split), a server that stops answering."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app import config as config_mod
from app.meters import MeterSpec
from app.meters.modbus import PRESETS, ModbusPoller
from app.meters.registers import Register, encode_into
from app.meters.runner import Output, poll_loop
from app.meters.sample import MeterError, Sample
from app.records import MeterState, Reading

FC = {"holding": 3, "input": 4}


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ModbusSim:
    """pymodbus's TCP server in a thread, with holding and input registers the test sets."""

    def __init__(self, port: int | None = None, unit_id: int = 1, rtu: bool = False) -> None:
        from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext

        self.port = port or free_port()
        self.rtu = rtu  # RTU frames (with CRC) over TCP, as a serial gateway sends them
        self.device = ModbusDeviceContext(hr=ModbusSequentialDataBlock(0, [0] * 0x10000),
                                          ir=ModbusSequentialDataBlock(0, [0] * 0x10000))
        self.context = ModbusServerContext(devices={unit_id: self.device}, single=False)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: Any = None
        self.thread: threading.Thread | None = None

    def start(self) -> ModbusSim:
        """Listen on 127.0.0.1:port (returns once it accepts connections)."""
        from pymodbus.server import ModbusTcpServer

        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop

            async def main() -> None:
                from pymodbus.framer import FramerType

                framer = FramerType.RTU if self.rtu else FramerType.SOCKET
                self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port), framer=framer)
                ready.set()
                await self.server.serve_forever()

            loop.run_until_complete(main())
            loop.close()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("pymodbus server did not listen")

    def stop(self) -> None:
        """Close the listener and every connection (the meter stops answering)."""
        if self.loop is not None and self.server is not None:
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        if self.thread is not None:
            self.thread.join(10)
        self.server = self.loop = self.thread = None

    def set(self, regs: tuple[Register, ...], values: dict[str, float]) -> None:
        """Write each quantity's value into its registers, the way the map says."""
        for reg in regs:
            if reg.quantity in values:
                words: dict[int, int] = {}
                encode_into(reg, values[reg.quantity], words)
                for address, word in words.items():
                    self.device.setValues(FC[reg.table], address, [word])


@pytest.fixture
def sim() -> Iterator[ModbusSim]:
    s = ModbusSim().start()
    yield s
    s.stop()


def spec_for(text: str, name: str = "pv") -> MeterSpec:
    """The MeterSpec of a [meter:NAME] section (through the real config loader)."""
    cfg = config_mod.loads(f"[meter]\nsource = /dev/null\n[meter:{name}]\n{text}")
    return cfg.meters[0]


VALUES = {"power_w": -2150.5, "import_kwh": 1234.5, "export_kwh": 321.25, "voltage_v": 231.2,
          "current_a": 9.35, "power_factor": 0.98, "frequency_hz": 50.01}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_reads_back_what_the_server_holds(sim: ModbusSim, preset: str) -> None:
    spec = spec_for(f"protocol = modbus\nsource = tcp://127.0.0.1:{sim.port}\npreset = {preset}\n")
    sim.set(spec.settings.registers, VALUES)
    poller = ModbusPoller(spec)
    try:
        sample = poller.poll()
    finally:
        poller.close()
    for reg in spec.settings.registers:  # integer registers hold the value to their step (scale)
        step = reg.scale if reg.type != "float32" else 0.0
        assert getattr(sample, reg.quantity) == pytest.approx(VALUES[reg.quantity], rel=1e-5, abs=step), reg
    assert {r.quantity for r in spec.settings.registers} == set(VALUES)


def test_per_quantity_keys_word_order_signed_power_and_a_split_counter(sim: ModbusSim) -> None:
    spec = spec_for(f"""protocol = modbus
source = tcp://127.0.0.1:{sim.port}
unit_id = 1
word_order = little
register_table = holding
register_power = 20480
register_power_type = int32
register_power_scale = 0.1
register_energy = 20500
register_energy_high = 20600
register_energy_scale = 0.01
register_voltage = 20490
register_voltage_type = uint16
register_voltage_scale = 0.1
register_current = 100
register_current_table = input
register_current_type = float32
register_current_word_order = big
""")
    regs = {r.quantity: r for r in spec.settings.registers}
    assert regs["import_kwh"].high == 20600 and regs["import_kwh"].type == "uint32"
    values = {"power_w": -4321.7, "import_kwh": 98765.43, "voltage_v": 229.9, "current_a": 12.5}
    sim.set(spec.settings.registers, values)
    # the raw words are what a meter with low word first would send
    assert sim.device.getValues(3, 20480, 2) == [(-43217) & 0xFFFF, ((-43217) >> 16) & 0xFFFF]
    poller = ModbusPoller(spec)
    try:
        sample = poller.poll()
    finally:
        poller.close()
    assert sample.power_w == pytest.approx(-4321.7)
    assert sample.import_kwh == pytest.approx(98765.43)
    assert sample.voltage_v == pytest.approx(229.9)
    assert sample.current_a == pytest.approx(12.5)
    assert sample.export_kwh is None


def test_rtu_frames_over_tcp_through_a_gateway() -> None:
    sim = ModbusSim(rtu=True, unit_id=5).start()
    try:
        spec = spec_for(f"protocol = modbus\nsource = rtu+tcp://127.0.0.1:{sim.port}\nunit_id = 5\npreset = em24\n")
        sim.set(spec.settings.registers, {"power_w": -1234.5, "import_kwh": 77.7})
        poller = ModbusPoller(spec)
        try:
            sample = poller.poll()
        finally:
            poller.close()
    finally:
        sim.stop()
    assert sample.power_w == -1234.5 and sample.import_kwh == 77.7


def test_wrong_unit_id_is_an_error_with_the_reason(sim: ModbusSim) -> None:
    spec = spec_for(f"protocol = modbus\nsource = tcp://127.0.0.1:{sim.port}\nunit_id = 7\npreset = sdm120\n"
                    "timeout = 300 ms\n")
    poller = ModbusPoller(spec)
    try:
        with pytest.raises(MeterError):
            poller.poll()
    finally:
        poller.close()


def test_a_server_that_stops_answering_gives_error_then_online_again() -> None:
    sim = ModbusSim().start()
    spec = spec_for(f"protocol = modbus\nsource = tcp://127.0.0.1:{sim.port}\npreset = sdm630\n"
                    "poll_interval = 100 ms\ntimeout = 1 s\n")  # the longest: a loaded machine answers late
    sim.set(spec.settings.registers, {"power_w": 1500.0})
    items: list[Any] = []
    lock = threading.Lock()

    def put(item: Any, _wait: bool) -> bool:
        with lock:
            items.append(item)
        return True

    def states() -> list[str]:
        with lock:
            return [f"{i.state}" for i in items if isinstance(i, MeterState)]

    def readings() -> int:
        with lock:
            return sum(isinstance(i, Reading) for i in items)

    stop = threading.Event()
    out = Output(spec, put)
    t = threading.Thread(target=poll_loop, args=(spec, out, stop.is_set), daemon=True)
    t.start()
    try:
        _wait(lambda: readings() >= 2)
        assert states()[0] == "online"
        sim.stop()
        _wait(lambda: "error" in states())
        n = readings()
        time.sleep(0.5)
        assert readings() == n  # nothing while it does not answer
        errors = [i for i in items if isinstance(i, MeterState) and i.state == "error"]
        assert "cannot connect" in errors[0].reason or "no answer" in errors[0].reason
        sim = ModbusSim(port=sim.port)
        sim.set(spec.settings.registers, {"power_w": 1500.0})  # before it answers: no poll may read zeros
        sim.start()
        _wait(lambda: states()[-1] == "online" and readings() > n)
    finally:
        stop.set()
        t.join(10)
        sim.stop()
    last = [i for i in items if isinstance(i, Reading)][-1]
    assert last.meter == "pv" and last.fields["actual_total_consumption"] == pytest.approx(1.5)


def _wait(check: Any, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_sample_is_pure_data() -> None:
    assert Sample(power_w=1.0).power_w == 1.0


class PtyBridge:
    """Two ptys joined back to back (a null-modem cable): what one side's slave writes, the other's reads."""

    def __init__(self) -> None:
        import os
        import tty

        self.a_master, self.a_slave = os.openpty()
        self.b_master, self.b_slave = os.openpty()
        for fd in (self.a_slave, self.b_slave):
            tty.setraw(fd)
        self.a_path, self.b_path = os.ttyname(self.a_slave), os.ttyname(self.b_slave)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import os
        import select

        peer = {self.a_master: self.b_master, self.b_master: self.a_master}
        while not self.stop.is_set():
            ready, _, _ = select.select(list(peer), [], [], 0.05)
            for fd in ready:
                try:
                    os.write(peer[fd], os.read(fd, 4096))
                except OSError:
                    return

    def close(self) -> None:
        """Stop copying and close all four ends."""
        import os

        self.stop.set()
        self.thread.join(5)
        for fd in (self.a_master, self.a_slave, self.b_master, self.b_slave):
            os.close(fd)


def test_rtu_over_a_serial_line_through_a_pty_pair() -> None:
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer

    bridge = PtyBridge()
    sim = ModbusSim(unit_id=2)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def serve() -> None:
        async def main() -> None:
            holder["server"] = ModbusSerialServer(sim.context, framer=FramerType.RTU, port=bridge.a_path,
                                                  baudrate=9600)
            ready.set()
            await holder["server"].serve_forever()

        loop.run_until_complete(main())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        assert ready.wait(10)
        spec = spec_for(f"protocol = modbus\nsource = rtu://{bridge.b_path}?baudrate=9600&parity=N&stopbits=1\n"
                        "unit_id = 2\npreset = sdm120\ntimeout = 1 s\n")
        sim.set(spec.settings.registers, {"power_w": 812.25, "voltage_v": 229.5})
        poller = ModbusPoller(spec)
        try:
            sample = None
            for _ in range(20):  # the server opens its port asynchronously
                try:
                    sample = poller.poll()
                    break
                except MeterError:
                    time.sleep(0.2)
        finally:
            poller.close()
        assert sample is not None and sample.power_w == 812.25 and sample.voltage_v == 229.5
    finally:
        if "server" in holder:
            asyncio.run_coroutine_threadsafe(holder["server"].shutdown(), loop).result(10)
        t.join(10)
        bridge.close()
