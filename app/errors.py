"""The exception tree.

    SmartmeterError
    ├── ConfigError            bad INI: names [section] key and the value; exit 2
    └── ProtocolError          a frame or telegram that cannot be turned into a Reading
        ├── ChecksumError      CRC16 / HCS / FCS / M-Bus checksum / GCM tag mismatch
        ├── DecryptionError    no key, wrong key, ciphertext that gives no valid APDU
        └── ParseError         malformed content (bad OBIS line, truncated A-XDR, lying length)

Framers never raise: they flag bad frames. Parsers raise exactly one of the ProtocolError
subclasses with a message formatted when raised. Process loops count, log at a limited rate
and go on.
"""

from __future__ import annotations


class SmartmeterError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(SmartmeterError):
    """An invalid configuration; the message names section, key and value."""

    def __init__(self, message: str, section: str | None = None, key: str | None = None) -> None:
        super().__init__(message)
        self.section = section
        self.key = key


class ProtocolError(SmartmeterError):
    """A frame that cannot be turned into a Reading."""

    reason = "protocol"


class ChecksumError(ProtocolError):
    """A checksum or authentication tag does not match; carries calculated vs received."""

    reason = "checksum"

    def __init__(self, what: str, calculated: str, received: str) -> None:
        super().__init__(f"{what} mismatch: calculated {calculated}, received {received}")
        self.calculated = calculated
        self.received = received


class DecryptionError(ProtocolError):
    """Decryption failed: missing key, wrong key or no valid APDU after decryption."""

    reason = "decryption"


class ParseError(ProtocolError):
    """Malformed frame content."""

    reason = "parse"
