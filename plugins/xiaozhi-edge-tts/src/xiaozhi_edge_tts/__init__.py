"""xiaozhi-edge-tts: Microsoft Edge read-aloud TTS for xiaozhi-core (provider ``edge``)."""

__version__ = "0.1.0"
