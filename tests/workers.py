"""The settings of a worker that a test starts itself, without a daemon: the accelerator lane
on the CPU with a share of one thread, unpinned, logging warnings as JSON lines."""

from __future__ import annotations

import sys

from caixa.daemon.worker.protocol import WorkerConfig

WORKER_CONFIG = WorkerConfig(
    lane="accelerator",
    device="cpu",
    threads=1,
    pin=False,
    model_memory=0,
    log={"fmt": "json", "level": "warning"},
    sys_path=list(sys.path),
)
