"""First-hour tools on real ptys: --list-ports/--probe/--port, --capture, --decode hints, --check-config."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app import config as config_mod
from app.main import main
from app.tools import capture, checks, ports
from tests.conftest import FIXTURES, ROOT

FLUVIUS = FIXTURES / "dsmr" / "fluvius_be_p1v50217_1.txt"
KAIFA_MBUS = FIXTURES / "dlms" / "kaifa_ma309_netznoe_mbus_1.bin"


class Meter:
    """A pty whose master end sends `data` again and again (a meter on a cable), draining echoes."""

    def __init__(self, data: bytes, every_s: float = 0.2, wait_raw: bool = False) -> None:
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)
        self.data = data
        self.every_s = every_s
        self.wait_raw = wait_raw  # send only once the port is in raw mode (whoever opened it set that)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _raw(self) -> bool:
        return not termios.tcgetattr(self.slave)[0] & termios.ICRNL

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.data and (not self.wait_raw or self._raw()):
                os.write(self.master, self.data)
                self.sent += 1
            self._stop.wait(self.every_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def meter() -> Iterator[list[Meter]]:
    made: list[Meter] = []
    yield made
    for m in made:
        m.close()


def test_probe_names_a_dsmr_telegram_and_prints_the_config(
    meter: list[Meter], capsys: pytest.CaptureFixture[str]
) -> None:
    m = Meter(FLUVIUS.read_bytes())
    meter.append(m)
    assert main(["--port", m.path, "--seconds", "20"]) == 0
    out = capsys.readouterr().out
    assert "DSMR 5.0 telegram from FLU5\\253769484_A" in out
    assert "CRC ok" in out
    assert f"source = {m.path}" in out
    assert "protocol = dsmr" in out and "baudrate = 115200" in out and "serial_format = 8N1" in out


def test_probe_recognises_an_encrypted_push_without_a_key(meter: list[Meter]) -> None:
    m = Meter(KAIFA_MBUS.read_bytes())
    meter.append(m)
    res = ports.probe(m.path, 20)
    assert res.found and res.encrypted
    assert "encrypted DLMS push (mbus) from system title 4B464D6750000009 (KFM…) — set [meter] key" in res.verdict
    assert res.protocol == "dlms"
    assert any(line.startswith("key = ") for line in res.config_lines())


@pytest.mark.parametrize(("capture", "verdict", "extra"), [
    ("dlms/kamstrup_omnipower_no_hdlc_1.bin", "DLMS push (hdlc) from meter 6841138BN245101090 with 12 values", ""),
    ("dsmr/kamstrup_162-zabf_dsmr2.2_1.txt", "DSMR telegram from KMP5 ZABF001551772711", "no CRC (DSMR 2/3)"),
    ("dsmr/sagemcom_lu-smarty-encrypted_dsmr4.2_1.bin",
     "encrypted DLMS push (raw) from system title 534147677001BD54 (SAG…) — set [meter] key", "profile = smarty"),
])
def test_probe_names_other_meters(meter: list[Meter], capture: str, verdict: str, extra: str) -> None:
    m = Meter((FIXTURES / capture).read_bytes())
    meter.append(m)
    res = ports.probe(m.path, 20)
    assert res.found and verdict in res.verdict
    assert extra in res.verdict + "\n".join(res.config_lines())


def test_probe_of_a_silent_port_stops_after_one_setting(meter: list[Meter]) -> None:
    m = Meter(b"")
    meter.append(m)
    res = ports.probe(m.path, 0.5)
    assert not res.found
    assert "nothing arrived" in res.verdict and "portal" in res.verdict
    assert len(res.tried) == 1


def test_probe_of_noise_tries_every_setting(meter: list[Meter]) -> None:
    m = Meter(bytes(range(0x80, 0xFF)), every_s=0.05)
    meter.append(m)
    res = ports.probe(m.path, 0.4)
    assert not res.found
    assert len(res.tried) == len(ports.PROBE_SETTINGS)
    assert "no setting gives a good frame" in res.verdict


def test_probe_of_a_missing_port_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--port", "/dev/ttyNOPE9", "--seconds", "0.2"]) == 1
    assert "cannot open" in capsys.readouterr().out


def test_by_id_links_map_to_their_device(tmp_path: Path, meter: list[Meter]) -> None:
    m = Meter(b"")
    meter.append(m)
    link = tmp_path / "usb-FTDI_FT232R_USB_UART_A10KXYZ-if00-port0"
    link.symlink_to(m.path)
    assert ports._by_id_links(str(tmp_path / "*")) == {os.path.realpath(m.path): [str(link)]}
    info = ports.PortInfo(m.path, (str(link),))
    assert info.best_name == str(link)


def test_list_ports_lists_without_probing(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--list-ports"])
    out = capsys.readouterr().out
    assert rc in (0, 1)
    assert "probing" not in out
    assert out.strip()


def _cfg(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "my.ini"
    path.write_text(body)
    return path


def test_capture_writes_the_raw_bytes_and_sets_the_port_raw(tmp_path: Path, meter: list[Meter]) -> None:
    telegram = FLUVIUS.read_bytes()
    assert b"\r\n" in telegram
    m = Meter(telegram, wait_raw=True)  # a cooked tty would turn CR LF into LF LF: capture must set raw
    meter.append(m)
    ini = _cfg(tmp_path, f"[meter]\nsource = {m.path}\nbaudrate = 115200\nserial_format = 8N1\n")
    out = tmp_path / "capture.bin"
    assert main(["-c", str(ini), "--capture", str(out), "--seconds", "3"]) == 0
    data = out.read_bytes()
    assert data.count(b"/FLU5") >= 2
    assert b"\n\n" not in data and b"\r\n" in data
    assert data in telegram * (m.sent + 1) * 2  # byte for byte a piece of what the meter sent
    assert main(["--decode", str(out)]) == 0


def test_capture_with_auto_baudrate_keeps_the_bytes_of_the_winning_setting(tmp_path: Path, meter: list[Meter]) -> None:
    m = Meter(FLUVIUS.read_bytes())
    meter.append(m)
    cfg = config_mod.loads(f"[meter]\nsource = {m.path}\nbaudrate = auto\n")
    out = tmp_path / "auto.bin"
    with open(out, "wb") as fh:
        total, good, _bad = capture.capture(cfg, fh, 2.0)
    assert total == out.stat().st_size > 0 and good >= 1


def test_capture_refuses_a_replay_source(tmp_path: Path) -> None:
    ini = _cfg(tmp_path, f"[meter]\nsource = replay:{FLUVIUS}\n")
    assert main(["-c", str(ini), "--capture", str(tmp_path / "x.bin"), "--seconds", "1"]) == 2


def test_decode_hints_at_lf_only_line_endings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mangled = tmp_path / "cat.bin"
    mangled.write_bytes(FLUVIUS.read_bytes().replace(b"\r\n", b"\n"))
    assert main(["--decode", str(mangled)]) == 1
    err = capsys.readouterr().err
    assert "LF only" in err and "--capture" in err


def test_decode_of_a_good_capture_gives_no_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--decode", str(FLUVIUS)]) == 0
    assert "hint" not in capsys.readouterr().err


def test_decode_with_nothing_accepted_exits_1(tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"hello\r\nworld\r\n" * 10)
    assert main(["--decode", str(junk)]) == 1


def test_decode_into_a_closed_pipe_prints_no_traceback(tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    big.write_bytes(FLUVIUS.read_bytes() * 400)  # ~1 MB of JSON: more than a pipe holds
    proc = subprocess.Popen([sys.executable, str(ROOT / "app" / "main.py"), "--decode", str(big)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b"{")  # like `| head -1`
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipe" not in err


# --check-config: relay pins held by another program ----------------------------------------------

def test_relay_pins() -> None:
    assert checks.bcm_number("GPIO17") == 17 and checks.bcm_number("BCM4") == 4 and checks.bcm_number("27") == 27
    assert checks.bcm_number("BOARD11") is None
    cfg = config_mod.loads("[relay:boiler]\npin = GPIO17\non_when = export > 1500 W\noff_when = export < 200 W\n"
                           "[relay:pump]\npin = GPIO27\non_when = export > 1500 W\noff_when = export < 200 W\n")
    chip = os.devnull  # readable and writable: the holder lookup is what is tested here
    held = checks.relay_warnings(cfg, chip, lambda _chip, n: "lg" if n == 27 else None)
    assert held == ["[relay:pump] pin = 'GPIO27': in use by lg (smartmeter already running? the pin taken by an "
                    "overlay such as the UART or 1-wire?)"]
    dry = config_mod.loads("[control]\ndry_run = yes\n[relay:boiler]\npin = GPIO17\non_when = export > 1 kW\n"
                           "off_when = export < 200 W\n")
    assert checks.relay_warnings(dry, chip) == []


def test_pty_writer_waits_for_raw_mode(meter: list[Meter]) -> None:
    """The capture test's premise: a fresh pty is cooked (ICRNL set) until someone makes it raw."""
    m = Meter(b"x", wait_raw=True)
    meter.append(m)
    time.sleep(0.3)
    assert m.sent == 0
    assert not select.select([m.slave], [], [], 0)[0]


def test_the_sample_config_writes_csv_rows_as_it_stands(tmp_path: Path) -> None:
    """config.sample.ini starts from something a user sees working: CSV on, into a directory made at start."""
    from app.main import run

    csv_dir = tmp_path / "var" / "csv"  # does not exist yet
    cfg = config_mod.load(ROOT / "config.sample.ini", {
        "meter": {"source": f"replay:{FIXTURES / 'dsmr' / 'fluvius_be_p1v50217_1.txt'}"},
        "csv": {"directory": str(csv_dir)},
        "history": {"path": str(tmp_path / "history.sqlite")},
    })
    assert cfg.csv.enabled
    assert run(cfg) == 0
    (day,) = csv_dir.glob("*.csv")
    assert len(day.read_text().splitlines()) >= 2  # header and a row


def test_capture_until_ctrl_c_ends_cleanly(tmp_path: Path, meter: list[Meter]) -> None:
    m = Meter(FLUVIUS.read_bytes())
    meter.append(m)
    ini = _cfg(tmp_path, f"[meter]\nsource = {m.path}\n")
    out = tmp_path / "long.bin"
    proc = subprocess.Popen([sys.executable, str(ROOT / "app" / "main.py"), "-c", str(ini), "--capture", str(out),
                             "--seconds", "0"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not out.exists() or out.stat().st_size < 2 * len(FLUVIUS.read_bytes())):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert f"wrote {out.stat().st_size} bytes to {out}" in err
