"""Which device the accelerator worker runs models on, and how much memory its models may take.

`auto` imports torch only where a GPU device node exists, so a machine without one pays nothing
for asking. AMD's ROCm builds of torch answer as `cuda`. Each step's model goes through one
library (its `backend_of`): `choose` asks that library, not torch, whether it can use a GPU, so
a llama.cpp built for Vulkan uses the GPU on a machine with no torch at all. `caixa doctor`
reports the same probes.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from caixa.errors import StepError

GPU_DEVICES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")  # NVIDIA, AMD ROCm, WSL
GPU_SHARE = 0.8  # of a GPU's memory that models may hold when no budget is set
RAM_SHARE = 0.25  # of the RAM, on the CPU


def resolve_device(asked: str) -> str:
    """The device the accelerator worker runs models on. `auto` imports torch only where a
    GPU device node exists, so a machine without one pays nothing for asking."""
    if asked == "cpu" or (asked == "auto" and not any(map(os.path.exists, GPU_DEVICES))):
        return "cpu"
    try:
        import torch
    except ImportError:
        if asked == "auto":
            return "cpu"
        raise StepError(f"device {asked!r} needs torch, which is not installed") from None
    if not torch.cuda.is_available():
        if asked == "auto":
            return "cpu"
        raise StepError(
            f"device {asked!r} was asked for (CAIXA_DEVICE), but torch sees no GPU;"
            " set CAIXA_DEVICE=auto or cpu, or check the GPU driver"
        )
    index = int(asked.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise StepError(
            f"device {asked!r} was asked for, but torch sees {torch.cuda.device_count()} GPU(s)"
        )
    return "cuda" if asked == "auto" else asked


def detect_memory(device: str) -> int:
    """What models may take when no budget is set: most of the GPU, or a quarter of the RAM."""
    if device != "cpu":
        import torch

        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        return int(total * GPU_SHARE)
    return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * RAM_SHARE)


def gpu_bytes() -> int | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return None
    return int(torch.cuda.memory_allocated())


# --- what each library can run on ----------------------------------------------------------

BACKENDS = ("torch", "onnxruntime", "llama.cpp", "ctranslate2")
_MODULES = {"torch": "torch", "onnxruntime": "onnxruntime", "llama.cpp": "llama_cpp",
            "ctranslate2": "ctranslate2"}  # fmt: skip
_DISTRIBUTIONS = {"torch": "torch", "onnxruntime": "onnxruntime", "llama.cpp": "llama-cpp-python",
                  "ctranslate2": "ctranslate2"}  # fmt: skip
# onnxruntime's providers that run on a GPU; caixa's Piper voices ask for CUDA's only
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider",
                 "MIGraphXExecutionProvider", "DmlExecutionProvider")  # fmt: skip
USED_PROVIDER = "CUDAExecutionProvider"


@dataclass(frozen=True)
class Backend:
    """A library that can put a model on a GPU, as this machine has it."""

    name: str  # one of BACKENDS
    installed: bool
    version: str | None
    gpus: tuple[str, ...]  # what it would run on, in words; empty: the CPU only
    usable: bool  # caixa puts models on a GPU through it here
    detail: str  # what it said, for a person: "CUDA 12.8", "providers: ...", "not asked: ..."


def gpu_nodes() -> list[str]:
    return [node for node in GPU_DEVICES if Path(node).exists()]


@cache
def probe(name: str) -> Backend:
    """What `name` can run on. torch is imported only where a GPU device node exists (it takes
    seconds and hundreds of MB); the others load in a fraction of a second and are asked
    anyway, because what they were built with is worth knowing before a GPU is put in."""
    module = _MODULES[name]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return Backend(name, False, None, (), False, "not installed")
    version = _version(_DISTRIBUTIONS[name])
    nodes = gpu_nodes()
    if name == "torch" and not nodes:
        return Backend(name, True, version, (), False, "not asked: no GPU device node")
    try:
        lib = importlib.import_module(module)
    except Exception as exc:  # a GPU build without its driver fails here
        return Backend(name, True, version, (), False, f"does not import: {exc}")
    return _ASK[name](lib, version, bool(nodes))


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _torch(torch: Any, version: str | None, nodes: bool) -> Backend:
    hip, cuda = getattr(torch.version, "hip", None), torch.version.cuda
    build = f"ROCm (HIP {hip})" if hip else f"CUDA {cuda}" if cuda else "a CPU-only build"
    if not torch.cuda.is_available():
        return Backend("torch", True, version, (), False, f"{build}; sees no GPU")
    names = tuple(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return Backend("torch", True, version, names, True, build)


def _onnxruntime(ort: Any, version: str | None, nodes: bool) -> Backend:
    providers = list(ort.get_available_providers())
    gpu = tuple(p for p in providers if p in GPU_PROVIDERS) if nodes else ()
    usable = USED_PROVIDER in gpu
    detail = "providers: " + ", ".join(providers)
    if gpu and not usable:
        detail += f"; caixa's Piper voices use {USED_PROVIDER} only"
    return Backend("onnxruntime", True, version, gpu, usable, detail)


def _llama(llama_cpp: Any, version: str | None, nodes: bool) -> Backend:
    offload = bool(llama_cpp.llama_supports_gpu_offload())
    detail = "built with GPU offload" if offload else "built for the CPU only"
    gpus = ("the GPU llama.cpp was built for",) if offload and nodes else ()
    return Backend("llama.cpp", True, version, gpus, bool(gpus), detail)


def _ctranslate2(ct2: Any, version: str | None, nodes: bool) -> Backend:
    count = int(ct2.get_cuda_device_count()) if nodes else 0
    gpus = tuple(f"CUDA device {i}" for i in range(count))
    detail = f"{count} CUDA device(s)" if nodes else "not asked: no GPU device node"
    return Backend("ctranslate2", True, version, gpus, bool(gpus), detail)


_ASK: dict[str, Callable[..., Backend]] = {
    "torch": _torch, "onnxruntime": _onnxruntime, "llama.cpp": _llama,
    "ctranslate2": _ctranslate2,
}  # fmt: skip


def choose(
    asked: str,
    backend: str | None,
    ask: Callable[[str], Backend] = probe,
    nodes: list[str] | None = None,
) -> tuple[str, str]:
    """The device a step runs its model on, and why, in words a person reads in the manifest:
    `asked` is CAIXA_DEVICE, `backend` the step's `backend_of`, `nodes` the GPU device nodes
    (default: those this machine has)."""
    if asked == "cpu":
        return "cpu", "cpu: CAIXA_DEVICE=cpu"
    if backend is None:
        return "cpu", "cpu: this step runs on the CPU whatever the device"
    if asked == "auto" and not (gpu_nodes() if nodes is None else nodes):
        return "cpu", f"cpu: no GPU device node ({', '.join(GPU_DEVICES)})"
    found = ask(backend)
    if not found.installed:
        return "cpu", f"cpu: {backend} is not installed"
    if not found.usable:
        return "cpu", f"cpu: {backend} cannot use the GPU here ({found.detail})"
    device = "cuda" if asked == "auto" else asked
    return device, f"{device}: {backend} sees {', '.join(found.gpus)} ({found.detail})"
