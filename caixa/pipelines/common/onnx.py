"""ONNX Runtime sessions that open quickly: a model's optimised graph is kept in the home.

onnxruntime optimises a model's graph every time a process opens it: 0.30-0.44 s of a Piper
voice's 0.5 s start, in every worker that speaks. The first session of a model in a home saves
its graph optimised to the portable level (`ORT_ENABLE_EXTENDED`: nothing laid out for this
CPU) under `<home>/models/onnx/`, written whole or not at all; later sessions open that copy,
which leaves only the passes for this CPU: 0.13-0.16 s. Measured on the packaged voice: the same
samples bit for bit, at the same speed (tests/unit/test_onnx.py, bench/voice_start.py).

Only on the CPU: other providers optimise differently. A copy belongs to one model file as it is
(path, size, time) and one onnxruntime; a new one replaces what an earlier one left. A copy
that will not open (cut short, damaged) is removed and made again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caixa.home import Home

if TYPE_CHECKING:
    import onnxruntime

CPU = "CPUExecutionProvider"
FOLDER = "onnx"


def session(
    model: Path, options: onnxruntime.SessionOptions, providers: list[Any], home: Path | None
) -> onnxruntime.InferenceSession:
    """`model`'s session; from its optimised copy in `home` when it runs on the CPU alone."""
    import onnxruntime as ort

    copy = _copy_of(model, Home(home).models / FOLDER) if home and providers == [CPU] else None
    if copy is None:
        return ort.InferenceSession(str(model), options, providers=providers)
    if copy.exists():
        try:
            return ort.InferenceSession(str(copy), options, providers=providers)
        except Exception:  # onnxruntime raises many kinds for a damaged file: make it again
            with contextlib.suppress(OSError):
                copy.unlink()
    scratch = _clear(copy)
    if scratch is not None:
        with contextlib.suppress(Exception):  # not savable: over 2 GB, its weights kept beside
            return _saving(model, options, providers, scratch, copy)
    return ort.InferenceSession(str(model), options, providers=providers)


def _saving(
    model: Path,
    options: onnxruntime.SessionOptions,
    providers: list[Any],
    scratch: Path,
    copy: Path,
) -> onnxruntime.InferenceSession:
    """The session, its graph written to `scratch` as it is made, then renamed to `copy`."""
    import onnxruntime as ort

    saving = ort.SessionOptions()
    saving.intra_op_num_threads = options.intra_op_num_threads
    saving.inter_op_num_threads = options.inter_op_num_threads
    saving.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    saving.optimized_model_filepath = str(scratch)
    try:
        made = ort.InferenceSession(str(model), saving, providers=providers)
        scratch.chmod(0o644)  # a `caixa` command run by another user opens it too
        os.replace(scratch, copy)
        return made
    finally:
        with contextlib.suppress(OSError):
            scratch.unlink()


def _copy_of(model: Path, folder: Path) -> Path | None:
    """Where `model`'s optimised copy is kept: a folder per model file, a name per version of
    it and of onnxruntime. None when the model cannot be read."""
    import onnxruntime as ort

    try:
        st = model.stat()
    except OSError:
        return None
    where = hashlib.sha256(os.fsencode(model.resolve())).hexdigest()[:16]
    which = hashlib.sha256(f"{st.st_size} {st.st_mtime_ns} {ort.__version__}".encode())
    return folder / where / f"{model.stem}-{which.hexdigest()[:16]}.onnx"


def _clear(copy: Path) -> Path | None:
    """Make room for `copy`: its folder made, what earlier copies of the model left removed
    (another version's copy; a scratch file of a process that died). The scratch name it is
    written to first, or None when the folder cannot be written."""
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        for old in copy.parent.iterdir():
            if old != copy:
                old.unlink()
    except OSError:
        return None
    return copy.with_name(f".{copy.name}.{os.getpid()}")
