"""xiaozhi-espeak: the ``espeak`` TTS provider (libespeak-ng via ctypes) for xiaozhi-core."""

__version__ = "0.1.0"
