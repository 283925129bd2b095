"""General-glo-ciphering / general-ded-ciphering: unwrap and AES-128-GCM decrypt.

    DB|DC  08 <system title, 8>  <length, BER>  SC  <invocation counter, 4>  ciphertext  [tag, 12]
                                                \\_______________ length ________________/

SC (security control): bit 0x10 authentication, bit 0x20 encryption, low nibble the suite.
IV = system title || invocation counter (12 bytes). With authentication the AAD is
SC || authentication key and the 12-byte tag follows the ciphertext. Encryption-only frames
(0x20/0x21) carry no tag: the ciphertext is GCM's counter mode, AES-CTR from counter 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.errors import ChecksumError, DecryptionError, ParseError
from app.protocols.axdr import read_length

GLO_CIPHERING = 0xDB
DED_CIPHERING = 0xDC
CIPHERING_TAGS = frozenset({GLO_CIPHERING, DED_CIPHERING})
TAG_LEN = 12
WRONG_KEY = "decryption gives no valid APDU — check the key"


@dataclass(frozen=True, slots=True)
class Ciphered:
    """The parts of a general-glo/ded-ciphering APDU."""

    system_title: bytes
    security_control: int
    invocation_counter: int
    ciphertext: bytes
    tag: bytes | None

    @property
    def authenticated(self) -> bool:
        """True when the frame carries a GCM tag (SC bit 0x10)."""
        return bool(self.security_control & 0x10)

    @property
    def encrypted(self) -> bool:
        """True when the information is encrypted (SC bit 0x20)."""
        return bool(self.security_control & 0x20)


@dataclass(frozen=True, slots=True)
class Plain:
    """A decrypted APDU and whether its tag was verified."""

    data: bytes
    system_title: bytes
    invocation_counter: int
    verified: bool
    has_tag: bool = False


def split(apdu: bytes) -> Ciphered:
    """Parse the ciphering envelope (no crypto); raises ParseError."""
    if len(apdu) < 2 or apdu[0] not in CIPHERING_TAGS:
        raise ParseError(f"not a general-glo/ded-ciphering APDU (tag 0x{apdu[:1].hex() or '--'})")
    st_len = apdu[1]
    if st_len != 8:
        raise ParseError(f"system title length {st_len}, expected 8")
    if len(apdu) < 10:
        raise ParseError(f"ciphering APDU of {len(apdu)} bytes ends inside the system title")
    system_title = bytes(apdu[2:10])
    length, pos = read_length(apdu, 10)
    if pos + length > len(apdu):
        raise ParseError(f"ciphered length {length} exceeds the {len(apdu) - pos} bytes received")
    if length < 5:
        raise ParseError(f"ciphered length {length} is shorter than SC + invocation counter")
    sc = apdu[pos]
    counter = int.from_bytes(apdu[pos + 1 : pos + 5], "big")
    body = bytes(apdu[pos + 5 : pos + length])
    tag = None
    if sc & 0x10:
        if len(body) < TAG_LEN:
            raise ParseError(f"authenticated frame of {len(body)} bytes has no room for a 12-byte tag")
        body, tag = body[:-TAG_LEN], body[-TAG_LEN:]
    return Ciphered(system_title, sc, counter, body, tag)


def ctr_decrypt(key: bytes, iv: bytes, data: bytes) -> bytes:
    """GCM's keystream without the tag: AES-CTR with J0 = IV || 00000002."""
    ctr = Cipher(algorithms.AES(key), modes.CTR(iv + b"\x00\x00\x00\x02")).decryptor()
    return ctr.update(data) + ctr.finalize()


def decrypt(apdu: bytes, key: bytes | None, auth_key: bytes | None) -> Plain:
    """Decrypt one ciphering APDU; with an auth key and a tag the tag must verify."""
    c = split(apdu)
    if c.security_control & 0xC0 or c.security_control & 0x0F > 1:
        raise ParseError(f"unsupported security control 0x{c.security_control:02X}")
    iv = c.system_title + c.invocation_counter.to_bytes(4, "big")
    if not c.encrypted:
        if c.tag is not None and auth_key is not None and key is not None:
            _verify_gmac(c.tag, iv, key, bytes([c.security_control]) + auth_key + c.ciphertext)
            return Plain(c.ciphertext, c.system_title, c.invocation_counter, True, True)
        return Plain(c.ciphertext, c.system_title, c.invocation_counter, False, c.tag is not None)
    if key is None:
        raise DecryptionError(
            f"encrypted frame (security control 0x{c.security_control:02X}, system title "
            f"{c.system_title.hex().upper()}) but no key: set [meter] key or SMARTMETER_KEY"
        )
    if len(key) != 16:
        raise DecryptionError(f"key of {len(key)} bytes, expected 16 (32 hex digits)")
    if c.tag is not None and auth_key is not None:
        aad = bytes([c.security_control]) + auth_key
        try:
            dec = Cipher(algorithms.AES(key), modes.GCM(iv, c.tag, min_tag_length=TAG_LEN)).decryptor()
            dec.authenticate_additional_data(aad)
            data = dec.update(c.ciphertext) + dec.finalize()
        except InvalidTag:
            raise ChecksumError(
                "GCM authentication tag (wrong key or auth key, or a corrupted frame)",
                "-", c.tag.hex().upper(),
            ) from None
        return Plain(data, c.system_title, c.invocation_counter, True, True)
    plain = ctr_decrypt(key, iv, c.ciphertext)
    return Plain(plain, c.system_title, c.invocation_counter, False, c.tag is not None)


def _verify_gmac(tag: bytes, iv: bytes, key: bytes, aad: bytes) -> None:
    """Authentication-only frame (SC 0x10): the tag is a GMAC over SC || AK || information."""
    try:
        dec = Cipher(algorithms.AES(key), modes.GCM(iv, tag, min_tag_length=TAG_LEN)).decryptor()
        dec.authenticate_additional_data(aad)
        dec.finalize()
    except InvalidTag:
        raise ChecksumError("GMAC authentication tag", "-", tag.hex().upper()) from None


def encrypt(
    plaintext: bytes,
    key: bytes,
    system_title: bytes,
    invocation_counter: int,
    security_control: int = 0x30,
    auth_key: bytes | None = None,
    tag: int = GLO_CIPHERING,
) -> bytes:
    """Build a ciphering APDU (tests and the benchmark use it to make frames)."""
    iv = system_title + invocation_counter.to_bytes(4, "big")
    if security_control & 0x10:
        aad = bytes([security_control]) + (auth_key or b"")
        sealed = AESGCM(key).encrypt(iv, plaintext, aad)
        body = sealed[: len(plaintext) + TAG_LEN]
    else:
        body = ctr_decrypt(key, iv, plaintext)
    info = bytes([security_control]) + invocation_counter.to_bytes(4, "big") + body
    return bytes([tag, 8]) + system_title + _ber_length(len(info)) + info


def _ber_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n < 0x100:
        return bytes([0x81, n])
    if n < 0x10000:
        return bytes([0x82]) + n.to_bytes(2, "big")
    return bytes([0x84]) + n.to_bytes(4, "big")
