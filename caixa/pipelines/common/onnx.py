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
from caixa.pipelines.common.files import remove_earlier

if TYPE_CHECKING:
    import onnxruntime

CPU = "CPUExecutionProvider"
FOLDER = "onnx"


def session(
    model: Path, options: onnxruntime.SessionOptions, providers: list[Any], home: Path | None
) -> onnxruntime.InferenceSession:
    """`model`'s session; from its optimised copy in `home` when it runs on the CPU alone. The
    copy is only a shortcut: whatever goes wrong with it, the model's own file is opened."""
    import onnxruntime as ort

    if home is not None and providers == [CPU]:
        with contextlib.suppress(Exception):  # a damaged model raises again just below
            return _through_copy(model, options, providers, Home(home).models / FOLDER)
    return ort.InferenceSession(str(model), options, providers=providers)


def _through_copy(
    model: Path, options: onnxruntime.SessionOptions, providers: list[Any], folder: Path
) -> onnxruntime.InferenceSession:
    """The session from the optimised copy, made first when there is none (or it will not
    open: cut short, damaged)."""
    import onnxruntime as ort

    copy = _copy_of(model, folder)
    if copy.exists():
        try:
            return ort.InferenceSession(str(copy), options, providers=providers)
        except Exception:  # onnxruntime raises many kinds for a damaged file: make it again
            copy.unlink(missing_ok=True)
    copy.parent.mkdir(parents=True, exist_ok=True)
    remove_earlier(copy, copy.parent.iterdir())
    scratch = copy.with_name(f".{copy.name}.{os.getpid()}")
    saving = ort.SessionOptions()
    saving.intra_op_num_threads = options.intra_op_num_threads
    saving.inter_op_num_threads = options.inter_op_num_threads
    saving.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    saving.optimized_model_filepath = str(scratch)
    try:
        made = ort.InferenceSession(str(model), saving, providers=providers)
        with contextlib.suppress(OSError):  # no copy this time; the session is made
            _publish(scratch, copy)
        return made
    finally:
        scratch.unlink(missing_ok=True)


def _copy_of(model: Path, folder: Path) -> Path:
    """Where `model`'s optimised copy is kept: a folder per model file, a name per version of
    it and of onnxruntime."""
    import onnxruntime as ort

    st = model.stat()
    where = hashlib.sha256(os.fsencode(model.resolve())).hexdigest()[:16]
    which = hashlib.sha256(f"{st.st_size} {st.st_mtime_ns} {ort.__version__}".encode())
    return folder / where / f"{model.stem}-{which.hexdigest()[:16]}.onnx"


def _publish(scratch: Path, copy: Path) -> None:
    """The written graph renamed into place, synced first: after a power cut the copy is
    whole or absent, never a file of zeroed blocks that still opens."""
    scratch.chmod(0o644)  # a `caixa` command run by another user opens it too
    with scratch.open("rb") as written:
        os.fsync(written.fileno())
    os.replace(scratch, copy)
    fd = os.open(copy.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
