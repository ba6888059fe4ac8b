"""xiaozhi-core LLM provider ``llamacpp``: a local GGUF chat model via llama-cpp-python."""

__version__ = "0.1.0"
