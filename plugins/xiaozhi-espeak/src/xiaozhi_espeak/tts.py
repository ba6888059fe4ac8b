"""The ``espeak`` TTS provider: libespeak-ng through ctypes, resampled to 16 or 24 kHz.

``synthesize`` renders the whole text with espeak-ng (its callback API delivers audio
only from inside a blocking ``espeak_Synth`` call; at ~1000x real time a sentence takes a
few milliseconds, so a second thread buys nothing), resamples it in one call (libsoxr
through :func:`xiaozhi_core.audio.resample`, well under a millisecond per second of
speech) and yields it in ``chunk_ms`` chunks of PCM16LE.

Example:
    >>> from xiaozhi_espeak.plugin import EspeakOptions
    >>> tts = EspeakTTS(EspeakOptions(sample_rate=16000, chunk_ms=100))
    >>> chunks = list(tts.synthesize("Hello world."))
    >>> len(chunks[0])  # 100 ms of 16-bit samples at 16 kHz
    3200
    >>> list(tts.synthesize("   "))
    []
"""

from __future__ import annotations

from collections.abc import Generator

from xiaozhi_core.audio import resample
from xiaozhi_core.errors import ConfigError

from ._engine import EspeakEngine, UnknownVoiceError, VoiceInfo, get_engine, list_voices
from .plugin import EspeakOptions

__all__ = ["EspeakTTS", "UnknownVoiceError", "VoiceInfo", "list_voices"]


class EspeakTTS:
    """``cpu`` TTS provider. One instance per deployment; the library is shared by all."""

    def __init__(self, options: EspeakOptions | None = None) -> None:
        self.options = options or EspeakOptions()
        self.sample_rate: int = self.options.sample_rate
        self.engine: EspeakEngine = get_engine()
        # Fail at start-up, not at the first sentence, when the configured voice is wrong.
        self.engine.check_voice(self.options.voice)

    @staticmethod
    def check_options(options: EspeakOptions) -> None:
        """Load-time check (``xiaozhi config check``): the voice must be installed.
        Loads only the small libespeak-ng, no resampling filters.

        >>> EspeakTTS.check_options(EspeakOptions(voice="elvish"))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        xiaozhi_core.errors.ConfigError: voice: tts provider 'espeak': unknown voice 'elvish'...
        """
        try:
            get_engine().check_voice(options.voice)
        except UnknownVoiceError as exc:
            raise ConfigError(str(exc), path="voice") from None

    def list_voices(self, language: str | None = None) -> list[VoiceInfo]:
        """The voices espeak-ng offers (optionally only those for ``language``)."""
        return self.engine.list_voices(language)

    def synthesize(self, text: str, *, voice: str | None = None) -> Generator[bytes, None, None]:
        """Yield PCM16LE mono chunks of ``chunk_ms`` (the last one may be shorter).

        ``voice`` overrides the configured voice for this call. An unknown voice raises
        :class:`UnknownVoiceError` (a ``ProviderError``) before
        anything is yielded; text without anything to say yields nothing.
        """
        if not text or not text.strip():
            return
        o = self.options
        pcm = self.engine.synthesize(
            text,
            voice=voice or o.voice,
            rate=o.rate,
            pitch=o.pitch,
            volume=o.volume,
            pitch_range=o.pitch_range,
            end_pause=o.end_pause,
        )
        if len(pcm) == 0:
            return
        data = resample(pcm, self.engine.sample_rate, self.sample_rate).tobytes()
        step = 2 * max(1, self.sample_rate * o.chunk_ms // 1000)
        for start in range(0, len(data), step):
            yield data[start : start + step]
