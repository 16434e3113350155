"""How many CPU threads torch runs a model on, decided by caixa rather than by a library.

By default every CPU this process may use. The budget is the lane's, not the step's: with no
GPU, the daemon pins its accelerator worker to its share of the cores (CAIXA_ACCELERATOR_THREADS,
half by default), so a model keeps off the cores the CPU lanes use. Counting a reserve here too
would leave one thread on a 2-core share: measured on 2 cores, one ONNX thread gave Piper 0.6x
the speed of its all-core default on a quiet machine. Threads beyond the cores a process may
use are what hurts: with other work running, YOLOv8s on 2 threads was 3-8x slower than on one
(OpenMP threads spin waiting for a core). ultralytics sets OMP_NUM_THREADS=1 for the whole
process at import, and torch's setting is global, so each model call sets it again. A rule's
`threads` overrides it.
"""

from __future__ import annotations

import os


def default_threads() -> int:
    return len(os.sched_getaffinity(0))


def use_torch_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to `requested`, or to the default; the count set."""
    import torch

    count = requested or default_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
