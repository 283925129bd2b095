"""Opening a byte source by URL: a serial device, socket://, rfc2217://, loop:// (pyserial's
`serial_for_url`), or a captured file for replay.

Serial presets (`serial_format` = data bits, parity, stop bits):
    DSMR 4/5, Fluvius      115200 8N1
    DSMR 2.2/3             9600 7E1
    M-Bus customer ports   2400 8E1 (Austria), Norwegian HAN 2400 8E1/8N1, Swiss E450/E570 2400 8E1
"""

from __future__ import annotations

import select
import socket
from typing import Protocol

import serial

_PARITY = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
           "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
_BYTESIZE = {5: serial.FIVEBITS, 6: serial.SIXBITS, 7: serial.SEVENBITS, 8: serial.EIGHTBITS}

# What `baudrate = auto` cycles through until a good frame arrives.
AUTO_CANDIDATES: dict[str, tuple[tuple[int, str], ...]] = {
    "dsmr": ((115200, "8N1"), (9600, "7E1")),
    "dlms": ((2400, "8E1"), (2400, "8N1"), (115200, "8N1"), (9600, "8N1")),
    "auto": ((115200, "8N1"), (9600, "7E1"), (2400, "8E1"), (2400, "8N1")),
}

_STRIP_PARITY = bytes(b & 0x7F for b in range(256))
SourceError = (serial.SerialException, OSError, ValueError)  # ValueError: a URL pyserial rejects


class ByteSource(Protocol):
    """What the reader needs from a port."""

    def read_some(self) -> bytes:
        """Bytes available now, waiting at most the read timeout; b'' on timeout."""
        ...

    def close(self) -> None:
        """Release the port."""
        ...


SOCKET_READ_BYTES = 1 << 16


class SerialSource:
    """A pyserial port opened with `serial_for_url`; reads `in_waiting or 1` bytes, or all a socket holds.

    pyserial's socket:// port reports `in_waiting` as 0 or 1, so a TCP source (ser2net, P1 dongles)
    would be read a byte at a time: there the socket itself is read, up to 64 KiB per call, so a
    backlog comes into the reader (whose queue drops the oldest) instead of waiting in the kernel.
    What a gateway sends right after the connection is made is kept (pyserial would empty it).
    """

    def __init__(self, url: str, baudrate: int, serial_format: str, timeout_s: float) -> None:
        self.port = serial.serial_for_url(
            url,
            baudrate=baudrate,
            bytesize=_BYTESIZE[int(serial_format[0])],
            parity=_PARITY[serial_format[1].upper()],
            stopbits=serial.STOPBITS_ONE if serial_format[2] == "1" else serial.STOPBITS_TWO,
            timeout=timeout_s,
            do_not_open=True,
        )
        if url.startswith("socket://"):  # opening empties the input: keep what a gateway sends on connect
            self.port.reset_input_buffer = lambda: None  # type: ignore[method-assign]
        self.port.open()
        self.seven_bit = serial_format[0] == "7"
        self.timeout_s = timeout_s
        sock = getattr(self.port, "_socket", None)
        self._socket: socket.socket | None = sock if isinstance(sock, socket.socket) else None

    def read_some(self) -> bytes:
        """Read what is waiting (at least one byte or the timeout)."""
        data: bytes = self._read_socket() if self._socket is not None else self.port.read(self.port.in_waiting or 1)
        if self.seven_bit and data:
            data = data.translate(_STRIP_PARITY)  # some USB cables hand 7E1 bytes over with the parity bit
        return data

    def _read_socket(self) -> bytes:
        """All the socket holds (up to 64 KiB), waiting at most the read timeout; b'' on timeout."""
        assert self._socket is not None
        ready, _, _ = select.select([self._socket], [], [], self.timeout_s)
        if not ready:
            return b""
        data = self._socket.recv(SOCKET_READ_BYTES)
        if not data:
            raise serial.SerialException("socket disconnected")
        return data

    def close(self) -> None:
        """Close the port; idempotent."""
        self.port.close()


class ReplaySource:
    """A captured byte stream, read in chunks."""

    def __init__(self, path: str, chunk_size: int = 4096) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 - closed in close()
        self.chunk_size = chunk_size

    def read_some(self) -> bytes:
        """Next chunk of the file (b'' at the end)."""
        data: bytes = self.fh.read(self.chunk_size)
        return data

    def close(self) -> None:
        """Close the file; idempotent."""
        self.fh.close()
