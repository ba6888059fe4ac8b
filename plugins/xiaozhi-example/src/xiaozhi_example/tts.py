"""The ``sine`` TTS: a ``cpu`` provider that "speaks" a tone as long as the text.

It shows the shape of a local-model provider: plain blocking methods, ``synthesize`` a
plain generator of PCM16LE mono chunks at :attr:`SineTTS.sample_rate`. The core runs it
in its worker pool, one chunk per step, and stops it when the listener goes away (the
generator's ``finally`` runs). Heavy imports (here only numpy) belong in this module,
never in ``plugin.py``.

Example:
    >>> from xiaozhi_example.plugin import SineOptions
    >>> tts = SineTTS(SineOptions(sample_rate=16000, seconds_per_char=0.01))
    >>> [len(chunk) // 2 for chunk in tts.synthesize("hello")]
    [800]
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .plugin import SineOptions

__all__ = ["SineTTS"]

#: Linear fade at both ends, so the tone starts and stops without a click.
_FADE_SECONDS = 0.005


class SineTTS:
    """A tone of ``len(text) * seconds_per_char`` seconds, in ``chunk_ms`` chunks."""

    def __init__(self, options: SineOptions) -> None:
        self.options = options
        self.sample_rate = options.sample_rate

    def samples_for(self, text: str) -> int:
        """How many samples ``text`` becomes."""
        return round(len(text.strip()) * self.options.seconds_per_char * self.sample_rate)

    def synthesize(self, text: str, *, voice: str | None = None) -> Iterator[bytes]:
        # ``voice`` is part of the interface; a tone has only one.
        o = self.options
        total = self.samples_for(text)
        step = max(1, self.sample_rate * o.chunk_ms // 1000)
        fade = max(1, int(_FADE_SECONDS * self.sample_rate))
        omega = 2 * math.pi * o.frequency / self.sample_rate
        for start in range(0, total, step):
            n = np.arange(start, min(total, start + step))
            envelope = np.clip(np.minimum(n, total - 1 - n) / fade, 0.0, 1.0)
            wave = np.sin(omega * n) * envelope * (o.amplitude * 32767)
            yield wave.astype("<i2").tobytes()
