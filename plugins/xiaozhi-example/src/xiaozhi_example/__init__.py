"""xiaozhi-example: the template provider package (an echo LLM and a sine-tone TTS)."""

__version__ = "0.1.0"
