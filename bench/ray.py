"""Accelerator steps on a Ray cluster: the same 60 mixed model jobs (20 photos to detect people
in, 20 to label, 20 texts to speak) through the real daemon with its accelerator lane on one
Ray node, then on two, and through the local worker pool; all in the same run.

The cluster lives on this machine (a head and the accelerator nodes, all on 127.0.0.1, no
dashboard); each accelerator node is pinned to a core of its own (its raylet and its workers
inherit the affinity), and its worker runs its models on one thread. The local worker pool gets
the same: one thread on one core. Time runs from the first file taken to the last finished
(from the journal). A fresh daemon and home for each contender, up before the files arrive.

Figures: jobs per minute on two nodes against one (target: 1.6x or better), and the overhead
per step of going through Ray (the inputs and outputs through the object store, the actor
call) against the local worker pool: the mean step time on one node minus the local one, in ms.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from _common import daemon, journal, ratio, save, wait_for, wait_for_jobs
from PIL import Image

sys.path.remove(str(Path(__file__).resolve().parent))  # `import ray` is Ray, not this file

ROUNDS = 20  # files per model
ASSETS = Path(next(iter(find_spec("ultralytics").submodule_search_locations))) / "assets"
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
NODE = {"node_ip_address": "127.0.0.1", "object_store_memory": 80 * 2**20}
TESTS = Path(__file__).resolve().parents[1] / "tests" / "plugins"  # the `sleepy` step
BARE = """
rules:
  - name: bare
    inbox: inbox/bare
    steps: [{sleepy: {seconds: 0}}]
"""
RULES = """
rules:
  - name: people
    inbox: inbox/people
    steps: [detect]
  - name: labels
    inbox: inbox/labels
    steps: [classify]
  - name: speech
    inbox: inbox/speech
    steps: [tts]
"""


def prepare(root: Path) -> list[tuple[str, Path]]:
    """The files to drop, interleaved: (inbox, staged file)."""
    staged = root / "staged"
    staged.mkdir()
    arrivals: list[tuple[str, Path]] = []
    for i in range(ROUNDS):
        for inbox, source in (("people", "bus.jpg"), ("labels", "zidane.jpg")):
            target = staged / f"{inbox}-{i:02}.jpg"
            Image.open(ASSETS / source).save(target, "JPEG", quality=92, comment=f"{i}".encode())
            arrivals.append((inbox, target))
        text = staged / f"speech-{i:02}.txt"
        text.write_text(f"Message {i}. The parcel for house {i} arrives on Tuesday.\n")
        arrivals.append(("speech", text))
    return arrivals


@contextmanager
def cluster() -> Iterator[Any]:
    os.environ.update(LOOPBACK)
    from ray.cluster_utils import Cluster

    c = Cluster(
        initialize_head=True,
        head_node_args={**NODE, "num_cpus": 1, "include_dashboard": False},
    )
    try:
        yield c
    finally:
        c.shutdown()


def add_node(c: Any, core: int) -> None:
    """An accelerator node whose raylet (and so every worker it starts) keeps to one core."""
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {core})
    try:
        c.add_node(**NODE, num_cpus=1, resources={"accelerator": 1})
    finally:
        os.sched_setaffinity(0, everything)


def serve(
    root: Path,
    name: str,
    arrivals: list[tuple[str, Path]],
    nodes: int = 0,
    rules: str = RULES,
    **settings: Any,
) -> dict[str, Any]:
    run = root / name
    for inbox in {inbox for inbox, _ in arrivals}:
        (run / "inbox" / inbox).mkdir(parents=True)
    (run / "rules.yaml").write_text(rules)
    home = run / "home"
    with daemon(run / "rules.yaml", home, log_format="json", **settings) as proc:
        log = home.with_suffix(".log")
        wait_for(lambda: log.read_bytes().count(b'"ray node joined"') >= nodes, proc, 120, "nodes")
        for inbox, staged in arrivals:  # moved in whole, as a finished download is
            hidden = run / "inbox" / inbox / f".{staged.name}"
            shutil.copy(staged, hidden)
            hidden.rename(run / "inbox" / inbox / staged.name)
        rows = wait_for_jobs(home, len(arrivals), proc, 1800, ("done", "failed", "duplicate"))
    failed = [r["name"] for r in rows if r["state"] != "done"]
    if failed:
        raise RuntimeError(f"{name}: jobs failed: {failed}; see {home}.log")
    seconds = max(r["finished_at"] for r in rows) - min(r["created_at"] for r in rows)
    steps = journal(
        home,
        "SELECT name, AVG(finished_at - started_at) AS mean, COUNT(*) AS n FROM step_runs"
        " GROUP BY name ORDER BY name",
    )
    if rules == RULES:
        outputs = run / "outputs"
        assert len(list(outputs.glob("speech/*/*.wav"))) == ROUNDS
        assert len(list(outputs.glob("labels/*/*.labels.json"))) == ROUNDS
        assert len(list(outputs.glob("people/*/*.detections.json"))) == ROUNDS
    where: dict[str, int] = {}
    for row in journal(home, "SELECT result FROM step_runs WHERE result IS NOT NULL"):
        notes = json.loads(row["result"]).get("notes", [])
        node = next((n.split()[-1] for n in notes if n.startswith("ran on Ray node")), "here")
        where[node] = where.get(node, 0) + 1
    return {
        "steps_by_node": where,
        "jobs": len(rows),
        "seconds": round(seconds, 1),
        "jobs_per_minute": round(len(rows) * 60 / seconds, 1),
        "step_seconds": {r["name"]: round(r["mean"], 4) for r in steps},
        "mean_step_seconds": sum(r["mean"] * r["n"] for r in steps) / sum(r["n"] for r in steps),
    }


def main() -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        sys.exit("bench/ray.py needs two cores: one for each accelerator node")
    with tempfile.TemporaryDirectory(prefix="caixa-bench-ray-") as tmp:
        root = Path(tmp)
        arrivals = prepare(root)
        print(f"{len(arrivals)} jobs, interleaved: detect, classify, tts")
        bare = [("bare", root / "staged" / f"bare-{i:02}.txt") for i in range(60)]
        for i, (_, path) in enumerate(bare):
            path.write_text(f"bare {i}\n")
        os.environ["PYTHONPATH"] = str(TESTS)
        local = serve(root, "local", arrivals, accelerator_threads=1)
        bare_local = serve(root, "bare-local", bare, 0, BARE, accelerator_threads=1)
        with cluster() as c:
            add_node(c, cores[0])
            one = serve(root, "one-node", arrivals, 1, ray_address=c.address)
            bare_one = serve(root, "bare-one-node", bare, 1, BARE, ray_address=c.address)
            add_node(c, cores[1])
            two = serve(root, "two-nodes", arrivals, 2, ray_address=c.address)
    for name, r in (("local worker pool", local), ("ray, one node", one), ("ray, two nodes", two)):
        print(f"{name:<18} {r['jobs_per_minute']:6.1f} jobs/min  {r['seconds']:6.1f} s")
        print(f"{'':<18} mean step seconds: {r['step_seconds']}")
        print(f"{'':<18} steps by node: {r['steps_by_node']}")
    speedup = ratio(two["jobs_per_minute"], one["jobs_per_minute"])
    overhead_ms = round((one["mean_step_seconds"] - local["mean_step_seconds"]) * 1000, 1)
    print(f"two nodes / one node: {speedup}x jobs per minute (target 1.6x)")
    print(f"overhead per model step, one Ray node against the local worker pool: {overhead_ms} ms")
    bare_ms = {
        name: round(r["mean_step_seconds"] * 1000, 1)
        for name, r in (("local", bare_local), ("one_node", bare_one))
    }
    print(
        f"an empty step (sleepy 0 s): {bare_ms['local']} ms on the local worker pool,"
        f" {bare_ms['one_node']} ms on one Ray node:"
        f" {round(bare_ms['one_node'] - bare_ms['local'], 1)} ms of overhead"
    )
    save(
        "ray",
        {
            "local": local,
            "one_node": one,
            "two_nodes": two,
            "speedup": speedup,
            "overhead_ms_per_model_step": overhead_ms,
            "empty_step_ms": bare_ms,
        },
    )


if __name__ == "__main__":
    main()
