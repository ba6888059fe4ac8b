"""Offline Whisper ASR for xiaozhi-core (faster-whisper on CTranslate2)."""

__version__ = "0.1.0"
