"""Which device the accelerator worker runs models on, and how much memory its models may take.

`auto` imports torch only where a GPU device node exists, so a machine without one pays nothing
for asking. AMD's ROCm builds of torch answer as `cuda`.
"""

from __future__ import annotations

import os
import sys

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
