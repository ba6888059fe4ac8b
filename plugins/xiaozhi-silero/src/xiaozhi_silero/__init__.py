"""Silero VAD provider for xiaozhi-core (see :mod:`xiaozhi_silero.plugin`)."""

__version__ = "0.1.0"
