"""The incremental MP3 decoder on its own."""

from __future__ import annotations

import numpy as np
import pytest
from fake_edge import mp3_frames, sine_mp3
from xiaozhi_edge_tts._mp3 import Mp3DecodeError, Mp3Decoder


def decode(mp3: bytes, rate: int, sizes: list[int]) -> tuple[bytes, list[bytes]]:
    decoder = Mp3Decoder(rate)
    outputs, pos, i = [], 0, 0
    while pos < len(mp3):
        size = sizes[i % len(sizes)]
        outputs.append(decoder.feed(mp3[pos : pos + size]))
        pos, i = pos + size, i + 1
    outputs.append(decoder.flush())
    return b"".join(outputs), outputs


@pytest.mark.parametrize("rate", [16000, 24000])
def test_chunking_does_not_change_the_output(rate: int) -> None:
    mp3 = sine_mp3(1.0, 440.0)
    whole, _ = decode(mp3, rate, [len(mp3)])
    split, outputs = decode(mp3, rate, [1, 7, 143, 145, 1000])  # frames cut anywhere
    assert split == whole
    assert len(whole) // 2 == mp3_frames(mp3) * 576 * rate // 24000
    # Output follows input: most feeds of >= one frame produce audio at once.
    assert sum(1 for o in outputs if o) > len(outputs) // 3


def test_bytes_that_are_not_mp3_fail_at_the_end() -> None:
    decoder = Mp3Decoder(24000)
    assert decoder.feed(b"<html>not audio</html>" * 50) == b""
    with pytest.raises(
        Mp3DecodeError,
        match=r"1100 bytes of audio were received but no MP3 "
        r"frame decoded",
    ):
        decoder.flush()


def test_garbage_between_frames_is_skipped() -> None:
    mp3 = sine_mp3(1.0, 440.0)
    cut = 144 * 20
    pcm, _ = decode(mp3[:cut] + b"\x00" * 300 + mp3[cut:], 24000, [500])
    x = np.frombuffer(pcm, "<i2")
    assert abs(len(x) - mp3_frames(mp3) * 576) <= 2 * 576  # at most the damaged frames
    assert np.sqrt(np.mean((x[-12000:] / 32768) ** 2)) > 0.15  # the tone resumes


def test_no_input_is_no_output() -> None:
    assert Mp3Decoder(16000).flush() == b""
