"""caixa never reaches the network at run time. The libraries it builds on otherwise reach for
model hubs, telemetry and auto-installs; these switches turn that off in every caixa process."""

from __future__ import annotations

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "0",
    "RAY_USAGE_STATS_ENABLED": "0",
}


def enforce() -> None:
    os.environ.update(OFFLINE_ENV)
