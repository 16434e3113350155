"""Small files a step writes, the hash that names a file's content, and making way for a copy
a step keeps in the home."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable
from pathlib import Path

from caixa.nofollow import open_regular
from caixa.pipelines.base import Artifact, StepInput

STALE_SCRATCH = 600  # seconds: a scratch file this old is no live process's (one takes seconds)


def sha256_of(path: Path) -> str:
    """The hash of a regular file's bytes; a symlink is refused, never followed."""
    with open_regular(path) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def json_artifact(job: StepInput, suffix: str, data: object) -> Artifact:
    """`data` as the job's `<stem>.<suffix>.json`, readable by people (indented, accents kept)."""
    target = job.workdir / f"{suffix}.json"
    target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return Artifact(f"{job.stem}.{suffix}.json", target, "application/json")


def remove_earlier(copy: Path, found: Iterable[Path]) -> None:
    """Make way for `copy`, a file kept in the home (written to a dot-named scratch file, then
    renamed): remove what earlier makings of it left among `found`, other versions of it, and
    scratch files a crash left half written, old enough to be no live process's (another may
    be writing its own now)."""
    stale = time.time() - STALE_SCRATCH
    for old in found:
        if old != copy and (not old.name.startswith(".") or old.stat().st_mtime < stale):
            old.unlink(missing_ok=True)
