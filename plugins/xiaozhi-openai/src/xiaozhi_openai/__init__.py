"""OpenAI-compatible LLM, ASR and TTS providers for xiaozhi-core (see ``plugin``)."""

__version__ = "0.1.0"
