"""xiaozhi-voiceprint: the ``resemblyzer`` speaker-identification provider for xiaozhi-core."""

__version__ = "0.1.0"
