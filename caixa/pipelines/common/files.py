"""Small files a step writes, and the hash that names a file's content."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from caixa.nofollow import open_regular
from caixa.pipelines.base import Artifact, StepInput


def sha256_of(path: Path) -> str:
    """The hash of a regular file's bytes; a symlink is refused, never followed."""
    with open_regular(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def json_artifact(job: StepInput, suffix: str, data: object) -> Artifact:
    """`data` as the job's `<stem>.<suffix>.json`, readable by people (indented, accents kept)."""
    target = job.workdir / f"{suffix}.json"
    target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Artifact(f"{job.stem}.{suffix}.json", target, "application/json")
