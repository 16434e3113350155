"""Publishing: outputs reach the outputs root whole or not at all, the manifest last, and only
then does the source leave the work area (to processed/, failed/, its inbox, or nowhere)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caixa.daemon.fsutil import (
    NAME_MAX,
    atomic_write_bytes,
    durable_move,
    fit,
    free_name,
    fsync_dir,
    fsync_file,
    is_inside,
    make_dirs,
    move,
    safe_name,
    with_suffix_number,
)
from caixa.pipelines.base import STEP_FIELDS, Artifact

if TYPE_CHECKING:
    from caixa.daemon.journal import Holdings

MANIFEST = "manifest.json"
ERROR_SUFFIX = ".error.json"


class PathEscapeError(ValueError):
    """A rendered path would leave its root; never written."""


def template_fields(
    rule: str,
    inbox: Path,
    rel: str,
    media_type: str | None,
    when: float,
    from_steps: Mapping[str, str],
) -> dict[str, str]:
    """The values an output template may use: the file's own, then what its steps found
    (a field no step set reads as `unlabelled`, so the job still lands somewhere)."""
    name = rel.rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    day = datetime.fromtimestamp(when, UTC)
    return {
        "rule": rule,
        "stem": stem,
        "name": name,
        "ext": ext,
        "inbox": inbox.name,
        "subdir": rel.rpartition("/")[0],
        "type": (media_type or "unknown").split("/")[0],
        "date": day.strftime("%Y-%m-%d"),
        "year": day.strftime("%Y"),
        "month": day.strftime("%m"),
        "day": day.strftime("%d"),
        **{name: "unlabelled" for name in STEP_FIELDS},
        **{k: v for k, v in from_steps.items() if k in STEP_FIELDS},
    }


def render(template: str, fields: dict[str, str]) -> str:
    """The template filled in, each folder name made safe: no `..`, no separators smuggled in
    by a file name, nothing absolute. Only an empty field drops its folder (`{subdir}` of a
    file at the top); one of blanks or control characters is named `_`, so that a file called
    `\n` cannot make `{rule}/{stem}` the rule's own folder, which holds every other job's."""
    parts = [safe_name(part, 120) for part in template.format_map(fields).split("/") if part]
    return "/".join(parts) or "_"


def free_folder(root: Path, rendered: str, jobs: Holdings) -> str:
    """Where a job's outputs go: the rendered folder, or the first `-2`, `-3`... that is not on
    disk and that no job holds. One job's folder never lies in another's, nor around one: where
    a folder above it is a job's (`image/1970`, of a file `1970.png`, above another rule's
    `{type}/{year}/{name}`), that level is numbered instead (`image/1970-2/photo.png`), so
    that no job's file or manifest can ever meet another job's folder."""
    parts = rendered.split("/")
    for level, base in enumerate(parts):
        inner = level == len(parts) - 1
        n = 1
        while True:
            parts[level] = f"{base}-{n}" if n > 1 else base
            candidate = "/".join(parts[: level + 1])
            if not inner:  # a level above: not another job's folder, nor a file
                taken = jobs.holds(candidate) or _is_file(root / candidate)
            elif not is_inside(root / candidate, root):
                raise PathEscapeError(f"output folder {candidate!r} would leave {root}")
            else:
                taken = os.path.lexists(root / candidate) or jobs.holds_in(candidate)
            if not taken:
                break
            n += 1
    return "/".join(parts)


def _is_file(path: Path) -> bool:
    return os.path.lexists(path) and not path.is_dir()


def publish(
    folder: Path, root: Path, artifacts: list[Artifact], manifest: dict[str, Any]
) -> list[str]:
    """Move each artifact into `folder` and write the manifest last; safe to run again after a
    crash (an artifact already moved is found in place). Returns the published names."""
    if not is_inside(folder, root):
        raise PathEscapeError(f"output folder {folder} would leave {root}")
    if not make_dirs(folder):  # there already: a crash may have left a write cut short
        for stale in folder.glob(".caixa-tmp-*"):  # the folder is ours
            stale.unlink()
    names = published_names(artifacts)
    for art, name in zip(artifacts, names, strict=True):
        target = folder / name
        if art.path.exists():
            fsync_file(art.path)
            move(art.path, target)
        elif not target.exists():
            raise FileNotFoundError(f"artifact {art.name!r} of step output is missing: {art.path}")
    fsync_dir(folder)  # every output is in place before the manifest says so
    manifest = {**manifest, "outputs": names}
    data = json.dumps(manifest, indent=2, ensure_ascii=False).encode() + b"\n"
    atomic_write_bytes(folder / MANIFEST, data)  # synced, and its folder
    return names


def published_names(artifacts: list[Artifact]) -> list[str]:
    """Safe, distinct file names for the artifacts, in order; the manifest's name is reserved."""
    taken = {MANIFEST}
    names = []
    for art in artifacts:
        base = safe_name(art.name)
        name, n = base, 1
        while name in taken:
            n += 1
            name = with_suffix_number(base, n)
        taken.add(name)
        names.append(name)
    return names


def archive_target(root: Path, rule: str, rel: str) -> Path:
    """Where a source goes in processed/ or failed/: under its rule, with its own name and
    subfolders (real directory entries, so they cannot hold a separator or be `..`)."""
    folder, _, name = (root / rule / rel).as_posix().rpartition("/")
    return free_name(Path(folder), name)


def error_file(failed_source: Path) -> Path:
    return failed_source.with_name(
        fit(failed_source.name, NAME_MAX - len(ERROR_SUFFIX)) + ERROR_SUFFIX
    )


def write_error(failed_source: Path, error: dict[str, Any]) -> Path:
    target = error_file(failed_source)
    atomic_write_bytes(target, json.dumps(error, indent=2, ensure_ascii=False).encode() + b"\n")
    return target


def move_source(src: Path, dst: Path) -> None:
    """Move the claimed source to its last place; done already if it is no longer there."""
    if src.exists():
        durable_move(src, dst)


def now_iso(ts: float | None = None) -> str:
    return datetime.fromtimestamp(ts if ts is not None else time.time(), UTC).isoformat(
        timespec="seconds"
    )
