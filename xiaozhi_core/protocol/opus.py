"""Opus encode/decode for the device's audio (opuslib over libopus).

Upstream audio is 16 kHz mono Opus, usually 60 ms per packet; DTX packets (1–3 bytes)
decode to comfort noise / silence, and 0-byte frames carry no audio at all.
Downstream audio is encoded at the server-hello sample rate in ``frame_ms`` packets.

Example:
    >>> import numpy as np
    >>> enc = OpusEncoder(16000, 60)
    >>> packets = enc.encode(np.zeros(1920, np.int16).tobytes())
    >>> len(packets)
    2
    >>> dec = OpusDecoder(16000)
    >>> len(dec.decode(packets[0])) // 2
    960
"""

from __future__ import annotations

import ctypes

import opuslib
import opuslib.api
import opuslib.api.decoder

__all__ = ["EncoderPool", "OpusDecoder", "OpusEncoder", "OpusError"]

OpusError = opuslib.OpusError


_opus_decode = opuslib.api.decoder.libopus_decode
_opus_nb_samples = opuslib.api.decoder.libopus_get_nb_samples


class OpusDecoder:
    """Stateful decoder of one stream (keep one per connection; not thread-safe).

    Calls ``opus_decode`` directly into a buffer allocated once, and copies the result
    out with one ``memcpy``. (opuslib's ``Decoder.decode`` turns every decoded sample
    into a Python int and back, about 40 µs per 60 ms frame with the GIL held: more
    than the decoding itself, and on the hot path of every upstream frame.)
    """

    def __init__(self, sample_rate: int = 16000, max_frame_ms: int = 120) -> None:
        self.sample_rate = sample_rate
        self._max_samples = sample_rate * max_frame_ms // 1000
        self._decoder = opuslib.Decoder(sample_rate, 1)
        self._pcm = (ctypes.c_int16 * self._max_samples)()
        self._pcm_ptr = ctypes.cast(self._pcm, opuslib.api.c_int16_pointer)

    def decode(self, packet: bytes) -> bytes:
        """PCM16LE mono of one packet; ``b""`` for an empty frame."""
        if not packet:
            return b""
        samples = _opus_decode(
            self._decoder.decoder_state, packet, len(packet), self._pcm_ptr, self._max_samples, 0
        )
        if samples < 0:
            raise OpusError(samples)
        return ctypes.string_at(self._pcm, samples * 2)

    def samples_in(self, packet: bytes) -> int:
        """How many samples ``packet`` decodes to (read from its TOC; nothing decoded).

        >>> OpusDecoder(16000).samples_in(b"X")  # a 60 ms SILK DTX packet (TOC only)
        960
        """
        if not packet:
            return 0
        samples = _opus_nb_samples(self._decoder.decoder_state, packet, len(packet))
        if samples < 0:
            raise OpusError(samples)
        return int(samples)

    def reset(self) -> None:
        """Back to a fresh decoder's state (after packets it was not given)."""
        self._decoder.reset_state()


class OpusEncoder:
    """Encodes PCM16LE mono into packets of exactly ``frame_ms`` (last one zero-padded
    by :meth:`flush`). Keeps the remainder between calls."""

    def __init__(
        self,
        sample_rate: int = 24000,
        frame_ms: int = 60,
        application: str = "audio",
        complexity: int | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self._encoder = opuslib.Encoder(sample_rate, 1, application)
        if complexity is not None:  # None: libopus's default (10)
            self._encoder.complexity = complexity
        self._pending = b""

    def encode(self, pcm: bytes) -> list[bytes]:
        data = self._pending + pcm
        step = self.frame_samples * 2
        whole = len(data) // step * step
        self._pending = data[whole:]
        return [
            self._encoder.encode(data[i : i + step], self.frame_samples)
            for i in range(0, whole, step)
        ]

    def flush(self) -> list[bytes]:
        """Encode what is left, padded with silence to a whole frame."""
        if not self._pending:
            return []
        step = self.frame_samples * 2
        data = self._pending + b"\x00" * (step - len(self._pending))
        self._pending = b""
        return [self._encoder.encode(data, self.frame_samples)]

    def reset(self) -> None:
        """Back to a fresh encoder's state (settings kept): the next packet encodes
        exactly as a new encoder's first would."""
        self._pending = b""
        self._encoder.reset_state()


class EncoderPool:
    """Reply encoders of one format, reused across turns (creating one is libopus's
    allocation plus two ``ctl`` calls on the event loop, once per turn). Used from one
    thread (the loop): :meth:`take` one, :meth:`give` it back *only* once no pool job
    can still be using it; it is reset then.

    >>> pool = EncoderPool(16000, 60, keep=1)
    >>> a = pool.take(); a.encode(bytes(100)); pool.give(a)
    []
    >>> b = pool.take()
    >>> b is a, b._pending
    (True, b'')
    """

    def __init__(
        self, sample_rate: int, frame_ms: int, complexity: int | None = None, keep: int = 64
    ) -> None:
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.complexity = complexity
        self.keep = keep
        self._free: list[OpusEncoder] = []

    def take(self) -> OpusEncoder:
        if self._free:
            return self._free.pop()
        return OpusEncoder(self.sample_rate, self.frame_ms, complexity=self.complexity)

    def give(self, encoder: OpusEncoder) -> None:
        if len(self._free) < self.keep:
            encoder.reset()
            self._free.append(encoder)
