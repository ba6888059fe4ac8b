"""The MQTT+UDP audio datagram, pure and I/O-free: header codec, AES-128-CTR, sequences.

One datagram carries one Opus packet, the same layout in both directions (big-endian)::

    type u8 (0x01) | flags u8 | payload_len u16 | ssrc u32 | timestamp u32 | sequence u32
    | payload (payload_len bytes, AES-128-CTR encrypted)

The sender copies the 16-byte ``nonce`` the server handed out in its hello (type, flags
and ssrc stay as in the nonce), writes length, timestamp and sequence into it, and uses
the resulting header itself as the initial CTR counter block. Sequences start at 1 after
every hello; a receiver drops a sequence at or below the last one it accepted (late or
duplicate) and counts gaps. These are the firmware's rules
(``main/protocols/mqtt_protocol.cc``), so a stock device interoperates.

Note what the cipher does *not* give: AES-CTR has no integrity check, and the protocol's
counter blocks overlap between consecutive packets (block ``i`` of packet ``n`` is the
first block of packet ``n+i`` when length and timestamp agree). It keeps audio off the
clear wire; it does not authenticate it. The server therefore routes datagrams by ssrc
and pins the device's address (see ``gateway/mqtt``).

Example — a device and the server sharing one session key:

    >>> key, nonce = bytes(range(16)), new_nonce(ssrc=0x0A0B0C0D)
    >>> nonce.hex()
    '010000000a0b0c0d0000000000000000'
    >>> device = UdpCipher(key, nonce)
    >>> datagram = device.seal(b"opus-packet", sequence=1, timestamp=0)
    >>> datagram[:16].hex()
    '0100000b0a0b0c0d0000000000000001'
    >>> header, payload = UdpCipher(key, nonce).open(datagram)
    >>> header.sequence, header.ssrc == 0x0A0B0C0D, payload
    (1, True, b'opus-packet')
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

# `cryptography` (OpenSSL): AES-128-CTR with an arbitrary 16-byte initial counter block,
# incremented as one 128-bit big-endian integer like mbedTLS/PSA on the device. Python's
# standard library has no AES; a pure-Python AES would cost ~1 ms per packet.
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

__all__ = [
    "HEADER_SIZE",
    "TYPE_AUDIO",
    "SequenceCounter",
    "UdpCipher",
    "UdpError",
    "UdpHeader",
    "new_key",
    "new_nonce",
    "parse_header",
]

HEADER_SIZE = 16
TYPE_AUDIO = 0x01
_HEADER = struct.Struct(">BBHIII")


class UdpError(ValueError):
    """A datagram that does not follow the layout (dropped, counted)."""


@dataclass(frozen=True)
class UdpHeader:
    """The 16-byte header of one datagram.

    >>> UdpHeader(TYPE_AUDIO, 0, 3, 7, 0, 1).pack().hex()
    '01000003000000070000000000000001'
    """

    type: int
    flags: int
    payload_len: int
    ssrc: int
    timestamp: int
    sequence: int

    def pack(self) -> bytes:
        """The header's 16 bytes (also the CTR counter block of its payload)."""
        return _HEADER.pack(
            self.type,
            self.flags,
            self.payload_len,
            self.ssrc,
            self.timestamp & 0xFFFFFFFF,
            self.sequence & 0xFFFFFFFF,
        )


def parse_header(datagram: bytes) -> UdpHeader:
    """Check the layout of ``datagram`` and return its header.

    >>> parse_header(bytes(15))
    Traceback (most recent call last):
    ...
    xiaozhi_core.protocol.udp.UdpError: datagram of 15 bytes is shorter than the 16-byte header
    >>> parse_header(bytes.fromhex("01000005" + "00" * 12) + b"abc")
    Traceback (most recent call last):
    ...
    xiaozhi_core.protocol.udp.UdpError: payload_len 5 does not match the 3 bytes after the header
    """
    if len(datagram) < HEADER_SIZE:
        raise UdpError(f"datagram of {len(datagram)} bytes is shorter than the 16-byte header")
    header = UdpHeader(*_HEADER.unpack_from(datagram))
    if header.type != TYPE_AUDIO:
        raise UdpError(f"datagram type 0x{header.type:02x} is not audio (0x01)")
    if header.payload_len != len(datagram) - HEADER_SIZE:
        raise UdpError(
            f"payload_len {header.payload_len} does not match the "
            f"{len(datagram) - HEADER_SIZE} bytes after the header"
        )
    return header


def new_key() -> bytes:
    """A fresh random AES-128 key (one per session).

    >>> len(new_key()), new_key() != new_key()
    (16, True)
    """
    return os.urandom(16)


def new_nonce(ssrc: int) -> bytes:
    """The hello's ``nonce``: a header with type 1, length/timestamp/sequence 0 and ``ssrc``.

    >>> new_nonce(1).hex()
    '01000000000000010000000000000000'
    """
    return UdpHeader(TYPE_AUDIO, 0, 0, ssrc & 0xFFFFFFFF, 0, 0).pack()


class UdpCipher:
    """Seal and open datagrams of one session (``key`` and ``nonce`` from its hello).

    >>> c = UdpCipher(bytes(16), new_nonce(5))
    >>> c.open(c.seal(b"", sequence=2, timestamp=60))[0].timestamp
    60
    >>> UdpCipher(bytes(15), new_nonce(5))
    Traceback (most recent call last):
    ...
    xiaozhi_core.protocol.udp.UdpError: key must be 16 bytes, got 15
    """

    __slots__ = ("_algorithm", "_nonce")

    def __init__(self, key: bytes, nonce: bytes) -> None:
        if len(key) != 16:
            raise UdpError(f"key must be 16 bytes, got {len(key)}")
        if len(nonce) != HEADER_SIZE:
            raise UdpError(f"nonce must be 16 bytes, got {len(nonce)}")
        self._algorithm = algorithms.AES(bytes(key))
        self._nonce = bytes(nonce)

    def _crypt(self, counter_block: bytes, data: bytes) -> bytes:
        encryptor = Cipher(self._algorithm, modes.CTR(counter_block)).encryptor()
        return encryptor.update(data) + encryptor.finalize()

    def seal(self, payload: bytes, sequence: int, timestamp: int = 0) -> bytes:
        """Header (from the nonce) + encrypted ``payload``, as the firmware's SendAudio."""
        if len(payload) > 0xFFFF:
            raise UdpError(f"payload of {len(payload)} bytes exceeds 65535")
        header = bytearray(self._nonce)
        struct.pack_into(">H", header, 2, len(payload))
        struct.pack_into(">II", header, 8, timestamp & 0xFFFFFFFF, sequence & 0xFFFFFFFF)
        block = bytes(header)
        return block + self._crypt(block, payload)

    def open(self, datagram: bytes) -> tuple[UdpHeader, bytes]:
        """Check the layout and decrypt. Raises :class:`UdpError`.

        Without an integrity check a wrong key yields garbage, not an error; callers
        route by ``header.ssrc`` and the sender's address.
        """
        header = parse_header(datagram)
        return header, self.decrypt(datagram)

    def decrypt(self, datagram: bytes) -> bytes:
        """The payload of a datagram whose header was already checked (:func:`parse_header`)."""
        return self._crypt(bytes(datagram[:HEADER_SIZE]), bytes(datagram[HEADER_SIZE:]))


class SequenceCounter:
    """Receive-side sequence rules with counters: accept only increasing sequences.

    ``accept(seq)`` is True for a sequence above the last accepted one. Below or equal it
    is False and counted as ``duplicate`` (seen already) or ``late`` (arrived after a
    later one: reordered past, or given up on); forward jumps add the skipped count to
    ``gaps``. ``lost`` is what never came at all (gaps minus the late arrivals that
    filled them). Call :meth:`reset` at every hello (sequences restart at 1).

    >>> s = SequenceCounter()
    >>> [s.accept(n) for n in (1, 2, 4, 3, 4, 5, 8)]
    [True, True, True, False, False, True, True]
    >>> s.accepted, s.late, s.duplicate, s.gaps, s.lost
    (5, 1, 1, 3, 2)
    """

    #: How far back duplicates are told apart from late packets.
    WINDOW = 64

    __slots__ = ("_seen", "accepted", "duplicate", "gaps", "last", "late")

    def __init__(self) -> None:
        self.last = 0
        self._seen = 0  # bit i set: sequence last-i was accepted
        self.accepted = self.late = self.duplicate = self.gaps = 0

    def reset(self) -> None:
        """A new hello: the peer's sequences start again at 1 (counters are kept)."""
        self.last = 0
        self._seen = 0

    @property
    def lost(self) -> int:
        return max(0, self.gaps - self.late)

    def accept(self, sequence: int) -> bool:
        if sequence > self.last:
            step = sequence - self.last
            self.gaps += step - 1
            self._seen = (
                ((self._seen << step) | 1) & ((1 << self.WINDOW) - 1) if step < self.WINDOW else 1
            )
            self.last = sequence
            self.accepted += 1
            return True
        back = self.last - sequence
        if back < self.WINDOW and self._seen >> back & 1:
            self.duplicate += 1
        else:
            self.late += 1
            if back < self.WINDOW:
                self._seen |= 1 << back  # a second copy of it counts as duplicate
        return False
