"""How many CPU threads torch runs a model on, decided by caixa rather than by a library.

By default every CPU this process may use but one: the one left keeps the daemon, its CPU
lanes (tesseract, text steps) and the desktop responsive. Measured on a 2-core machine with
YOLOv8s: two threads were 1.3-1.5x faster than one while the machine was otherwise quiet, but
with other work running (load average 7) they were 3-8x slower and burnt 4-8x the CPU per
image (OpenMP threads spin waiting for a core), while one thread kept its speed. ultralytics
makes the same choice (CPUs - 1) but only when it sets a model up, and sets OMP_NUM_THREADS=1
for the whole process at import; torch's setting is global, so each model call sets it again.
A rule's `threads` overrides it, e.g. on a machine that does nothing else.
"""

from __future__ import annotations

import os


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) - 1)


def use_torch_threads(requested: int | None) -> int:
    """Set torch's intra-op threads to `requested`, or to the default; the count set."""
    import torch

    count = requested or default_threads()
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
