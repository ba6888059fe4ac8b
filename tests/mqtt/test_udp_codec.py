"""The UDP datagram codec against an independent AES-CTR reference and the firmware's rules."""

from __future__ import annotations

import os
import random
import struct

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from xiaozhi_core.protocol.udp import (
    HEADER_SIZE,
    SequenceCounter,
    UdpCipher,
    UdpError,
    new_nonce,
    parse_header,
)


def reference_ctr(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """CTR built from raw AES blocks: block i uses (counter + i) mod 2**128, as mbedTLS
    and PSA do on the device (the whole 16 bytes are one big-endian counter)."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    start = int.from_bytes(counter_block, "big")
    stream = b"".join(
        ecb.update(((start + i) % 2**128).to_bytes(16, "big"))
        for i in range((len(data) + 15) // 16)
    )
    return bytes(a ^ b for a, b in zip(data, stream, strict=False))


def test_layout_is_the_firmwares():
    key, nonce = os.urandom(16), new_nonce(0xDEADBEEF)
    datagram = UdpCipher(key, nonce).seal(b"x" * 300, sequence=7, timestamp=1234)
    typ, flags, length, ssrc, ts, seq = struct.unpack(">BBHIII", datagram[:16])
    assert (typ, flags, length, ssrc, ts, seq) == (1, 0, 300, 0xDEADBEEF, 1234, 7)
    assert len(datagram) == HEADER_SIZE + 300


@pytest.mark.parametrize("sequence,timestamp", [(1, 0), (0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFF0, 5)])
def test_ciphertext_matches_reference_ctr_including_counter_carry(sequence, timestamp):
    # sequence 0xFFFFFFFF: the second block's counter carries into the timestamp field
    key = os.urandom(16)
    nonce = new_nonce(0xFFFFFFFF)
    payload = os.urandom(200)
    datagram = UdpCipher(key, nonce).seal(payload, sequence=sequence, timestamp=timestamp)
    header = datagram[:16]
    assert datagram[16:] == reference_ctr(key, header, payload)
    assert UdpCipher(key, nonce).open(datagram)[1] == payload


def test_a_different_key_does_not_decrypt():
    nonce = new_nonce(1)
    datagram = UdpCipher(b"k" * 16, nonce).seal(b"secret opus", 1)
    assert UdpCipher(b"j" * 16, nonce).open(datagram)[1] != b"secret opus"


@pytest.mark.parametrize(
    "datagram,message",
    [
        (b"", "shorter than the 16-byte header"),
        (bytes([2]) + bytes(15), "type 0x02 is not audio"),
        (bytes.fromhex("0100000a") + bytes(12) + b"abc", "payload_len 10 does not match the 3"),
    ],
)
def test_malformed_datagrams_are_refused_with_a_reason(datagram, message):
    with pytest.raises(UdpError, match=message):
        parse_header(datagram)


def test_oversized_payload_and_bad_key_lengths():
    with pytest.raises(UdpError, match="exceeds 65535"):
        UdpCipher(bytes(16), new_nonce(1)).seal(bytes(65536), 1)
    with pytest.raises(UdpError, match="nonce must be 16 bytes"):
        UdpCipher(bytes(16), bytes(8))


def test_sequence_counter_under_loss_reorder_and_duplication():
    rng = random.Random(7)
    sent = list(range(1, 501))
    lost = set(rng.sample(sent, 25))
    arrivals = [s for s in sent if s not in lost]
    for i in sorted(rng.sample(range(len(arrivals)), 30), reverse=True):
        arrivals.insert(i + 1, arrivals[i])  # duplicates, near the original
    for _ in range(40):  # local reordering
        i = rng.randrange(len(arrivals) - 3)
        arrivals[i], arrivals[i + 2] = arrivals[i + 2], arrivals[i]
    counter = SequenceCounter()
    accepted = [s for s in arrivals if counter.accept(s)]
    assert accepted == sorted(set(accepted))  # strictly increasing: lane order holds
    assert counter.accepted == len(accepted)
    assert counter.accepted + counter.late + counter.duplicate == len(arrivals)
    never_accepted = set(sent) - set(accepted)
    assert counter.gaps == len(never_accepted)  # each skipped number counted once
    assert counter.duplicate == 30  # every second copy, never twice
    assert counter.late > 0 and counter.lost == len(lost)  # late ones are not "lost"


def test_sequence_counter_reset_starts_again_at_one():
    counter = SequenceCounter()
    assert [counter.accept(s) for s in (1, 2, 3)] == [True, True, True]
    counter.reset()
    assert counter.accept(1) and not counter.accept(1)
    assert counter.duplicate == 1 and counter.gaps == 0
