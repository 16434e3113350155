"""Accelerator steps on a real Ray cluster of three nodes on this machine (a head, and two nodes
that offer the `accelerator` resource), through the real daemon: jobs spread over both nodes and
come out as a local run makes them, a node killed mid-step costs only its step one try, a
daemon killed while steps run on the cluster finishes every job exactly once after a restart,
a cluster that goes away leaves caixa working on this machine, saying so in `status`, one
that only starts after the daemon gets its steps once it answers, and so does a head that
comes back (a new cluster on the same port), even between two of the daemon's looks;
a step running on a node when its head starts again is done once.

Every node is bound to 127.0.0.1 (Ray would otherwise take the machine's interface address),
no dashboard runs, and the cluster is shared by the tests of this module; the last one shuts
it down."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from caixa.daemon import lanestate
from tests.conftest import World
from tests.photos import BUS, ZIDANE

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

LOOPBACK = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # every address Ray picks is 127.0.0.1
    "RAY_USAGE_STATS_ENABLED": "0",
}
NODE = {
    "node_ip_address": "127.0.0.1",
    "num_cpus": 1,
    "object_store_memory": 80 * 2**20,
    "include_dashboard": False,
}
ACCELERATOR = {**NODE, "resources": {"accelerator": 1}}

SLEEPY = """
rules:
  - name: gpu
    inbox: gpu
    steps: [{{sleepy: {{seconds: {seconds}}}}}, copy]
"""


@contextmanager
def loopback() -> Iterator[None]:
    """This process's environment, while it runs a cluster, set as LOOPBACK says."""
    saved = {k: os.environ.get(k) for k in LOOPBACK}
    os.environ.update(LOOPBACK)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def head(**args: Any) -> Cluster:
    return Cluster(
        initialize_head=True, head_node_args={**NODE, "dashboard_host": "127.0.0.1", **args}
    )


def free_port() -> int:
    """A port where no cluster runs (yet)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with loopback():
        c = head()
        for _ in range(2):
            c.add_node(**ACCELERATOR)
        yield c
        c.shutdown()


@pytest.fixture
def on_cluster(world: World, cluster: Cluster) -> World:
    world.env.update(LOOPBACK)
    world.env["CAIXA_RAY_ADDRESS"] = cluster.address
    return world


def accelerator_nodes(cluster: Cluster) -> set[str]:
    return {n.node_id for n in cluster.worker_nodes}


def lanes(world: World) -> dict[str, Any]:
    return lanestate.read(world.home) or {}


def cluster_seen(world: World) -> dict[str, Any]:
    """The cluster as the daemon's lanes file shows it (state, why, nodes)."""
    return lanes(world).get("cluster") or {}


def connected_to(world: World, count: int) -> bool:
    return _connected(cluster_seen(world), count)


def _connected(found: dict[str, Any], count: int) -> bool:
    return found.get("state") == "connected" and len(found.get("nodes", [])) == count


def on_a_port_of_its_own(world: World) -> int:
    """The world set for a head the test starts itself (and again) on a free port."""
    port = free_port()
    world.env.update(LOOPBACK)
    world.env["CAIXA_RAY_ADDRESS"] = f"127.0.0.1:{port}"
    world.write_rules(SLEEPY.format(seconds=0.1))
    world.inbox("gpu")
    return port


def only_on(world: World, node_id: str) -> bool:
    """Connected, with this node as the cluster's only one (one read of the lanes file: the
    daemon may rewrite it between two)."""
    found = cluster_seen(world)
    return _connected(found, 1) and found["nodes"][0]["node_id"] == node_id


def first_job_on_a_node_of(cluster: Cluster, world: World) -> tuple[Any, subprocess.Popen[bytes]]:
    """A node added to `cluster`, the daemon started, and a first job done there."""
    node = cluster.add_node(**ACCELERATOR)
    daemon = world.start()
    world.wait_for(lambda: only_on(world, node.node_id), timeout=120, message="the first node")
    (world.inbox("gpu") / "before.txt").write_text("before\n")
    world.wait_for(lambda: world.finished() >= 1, timeout=120, message="the first job")
    return node, daemon


def step_on_a_node(world: World) -> dict[str, Any] | None:
    """An accelerator worker (as the lanes file shows it) that runs a job's step on a node."""
    workers = lanes(world).get("lanes", {}).get("accelerator", {}).get("workers", [])
    return next((w for w in workers if w.get("node_id") and w["job"]), None)


def held_until_released(world: World, **sleepy: float) -> Path:
    """Rules of one `gpu` rule whose step sleeps until the returned file exists."""
    release = world.root / "release"
    params = ", ".join(f"{k}: {v}" for k, v in {"until": release, **sleepy}.items())
    world.write_rules(f"rules:\n  - {{name: gpu, inbox: gpu, steps: [{{sleepy: {{{params}}}}}]}}\n")
    return release


def ran_on(manifest: dict[str, Any], step: str) -> str | None:
    """The Ray node (its id's first 8 characters) a job's step ran on, or None: locally."""
    notes = next(s for s in manifest["steps"] if s["name"] == step).get("notes", [])
    where = [n for n in notes if n.startswith("ran on Ray node")]
    return where[0].split()[-1] if where else None


def test_jobs_spread_over_both_nodes_and_match_a_local_run(
    on_cluster: World, cluster: Cluster, tmp_path: Path
) -> None:
    world = on_cluster
    release = world.root / "release"  # the steps hold on until both nodes run one
    rules = f"""
rules:
  - name: photos
    inbox: photos
    steps: [classify]
  - name: gpu
    inbox: gpu
    steps: [{{sleepy: {{until: "{release}"}}}}, metadata, copy]
"""
    world.write_rules(rules)
    world.inbox("gpu")
    photos = world.inbox("photos")
    world.start()
    world.wait_for(lambda: connected_to(world, 2), timeout=120, message="two nodes")
    for i in range(8):
        (world.inbox("gpu") / f"note-{i}.txt").write_text(f"note {i}\n")

    def both_busy() -> bool:  # a node's worker may start later than the other's (torch)
        nodes = cluster_seen(world).get("nodes", [])
        return sum(n.get("step") == "sleepy" for n in nodes) == 2

    world.wait_for(both_busy, timeout=240, message="a step on each node")
    release.touch()
    shutil.copyfile(BUS, photos / "bus.jpg")
    shutil.copyfile(ZIDANE, photos / "zidane.jpg")
    world.wait_for(lambda: world.finished() >= 10, timeout=240, message="10 jobs")
    assert world.states() == {"done": 10}

    manifests = {m["source"]["name"]: m for m in world.manifests()}
    nodes = {ran_on(m, "sleepy") for n, m in manifests.items() if n.startswith("note")}
    assert nodes == {n[:8] for n in accelerator_nodes(cluster)}, "both nodes took steps"
    assert all(ran_on(manifests[n], "classify") for n in ("bus.jpg", "zidane.jpg"))
    notes = [m for n, m in manifests.items() if n.startswith("note")]
    assert all(ran_on(m, "metadata") is None for m in notes), "CPU steps stay here"
    note = world.outputs / "gpu" / "note-3"
    assert (note / "note-3.slept.txt").read_text() == "note-3.txt\n"
    assert (note / "note-3.txt").read_text() == "note 3\n"

    # the same files through local workers only: the same bytes
    (tmp_path / "local").mkdir()
    local = World(tmp_path / "local")
    local.write_rules(rules)
    shutil.copyfile(BUS, local.inbox("photos") / "bus.jpg")
    shutil.copyfile(ZIDANE, local.inbox("photos") / "zidane.jpg")
    (local.inbox("gpu") / "note-3.txt").write_text("note 3\n")
    local.run_once(timeout=300)
    for rel in ["photos/bus/bus.labels.json", "photos/zidane/zidane.labels.json"]:
        there, here = (json.loads((w.outputs / rel).read_text()) for w in (world, local))
        # the same labels; a probability may round the other way on another thread count
        pairs = list(zip(there.pop("labels"), here.pop("labels"), strict=True))
        assert all(a["label"] == b["label"] for a, b in pairs), rel
        assert all(abs(a["probability"] - b["probability"]) <= 2e-4 for a, b in pairs), rel
        assert there == here, rel
    for rel in ["gpu/note-3/note-3.slept.txt", "gpu/note-3/note-3.txt"]:
        assert (world.outputs / rel).read_bytes() == (local.outputs / rel).read_bytes(), rel

    status = world.caixa("status", "--home", str(world.home))
    assert status.returncode == 0, status.stderr
    assert "connected, 2 node(s) take model steps" in status.stdout
    assert "holds efficientnet-lite0" in status.stdout


def test_a_node_killed_mid_step_costs_only_its_step_one_try(
    on_cluster: World, cluster: Cluster
) -> None:
    world = on_cluster
    world.write_rules(SLEEPY.format(seconds=2))
    world.start()
    world.wait_for(lambda: connected_to(world, 2), timeout=120, message="two nodes")
    for i in range(4):
        (world.inbox("gpu") / f"job-{i}.txt").write_text(f"job {i}\n")

    held = world.wait_for(lambda: step_on_a_node(world), 120, "a step on a node")
    victim = next(n for n in cluster.worker_nodes if n.node_id == held["node_id"])
    cluster.remove_node(victim, allow_graceful=False)

    world.wait_for(lambda: world.finished() >= 4, timeout=180, message="4 jobs")
    assert world.states() == {"done": 4}
    retried = [e for e in world.logs() if e["event"] == "step will be retried"]
    assert [e["job"] for e in retried] == [held["job"]], "only the victim's step was touched"
    assert "Ray" in retried[0]["error"]
    done = [e for e in world.logs() if e["event"] == "step done" and e.get("step") == "sleepy"]
    assert sorted(e["job"] for e in done) == sorted({e["job"] for e in done}), "once each"
    assert len(done) == 4
    assert sorted(p.name for p in (world.outputs / "gpu").iterdir()) == [
        f"job-{i}" for i in range(4)
    ]
    manifest = json.loads((world.outputs / "gpu" / "job-0" / "manifest.json").read_text())
    assert ran_on(manifest, "sleepy") != held["node_id"][:8] or held["job"] != manifest["job"]
    world.stop_all()
    cluster.add_node(**ACCELERATOR)  # the next tests get two nodes again


def test_how_far_a_step_on_a_node_is_shows_in_status(on_cluster: World) -> None:
    world = on_cluster
    release = held_until_released(world, progress=0.37)
    world.start()
    world.wait_for(lambda: connected_to(world, 2), timeout=120, message="two nodes")
    (world.inbox("gpu") / "long.txt").write_text("a long one\n")

    def shown() -> str:
        return world.caixa("status", "--home", str(world.home)).stdout

    world.wait_for(lambda: "37% done" in shown(), 180, "the node's step's progress in status")
    line = next(ln for ln in shown().splitlines() if "37% done" in ln)
    assert "accelerator@127.0.0.1" in line and "running sleepy" in line, line
    release.touch()
    world.wait_for(lambda: world.finished() >= 1, timeout=120, message="the long job")
    assert world.states() == {"done": 1}


def test_auto_joins_the_cluster_this_machine_belongs_to(world: World, cluster: Cluster) -> None:
    """`CAIXA_RAY_ADDRESS=auto`: the cluster `ray start` (here, the test cluster's head) wrote
    down on this machine, as on a head or a node a user started by hand."""
    from ray._private.utils import write_ray_address

    write_ray_address(cluster.address)  # what `ray start --head` leaves in /tmp/ray
    world.env.update(LOOPBACK)
    world.env["CAIXA_RAY_ADDRESS"] = "auto"
    world.write_rules(SLEEPY.format(seconds=0.1))
    world.start()
    world.wait_for(lambda: connected_to(world, 2), timeout=120, message="two nodes")
    (world.inbox("gpu") / "note.txt").write_text("note\n")
    world.wait_for(lambda: world.finished() >= 1, timeout=120, message="the job")
    assert world.states() == {"done": 1}
    (manifest,) = world.manifests()
    assert ran_on(manifest, "sleepy") in {n[:8] for n in accelerator_nodes(cluster)}
    assert (world.outputs / "gpu" / "note" / "note.slept.txt").read_text() == "note.txt\n"
    status = world.caixa("status", "--home", str(world.home))
    assert "connected, 2 node(s) take model steps" in status.stdout


def test_a_rule_that_says_cluster_sends_its_cpu_steps_to_an_idle_node(
    on_cluster: World, cluster: Cluster
) -> None:
    world = on_cluster
    world.write_rules(
        """
rules:
  - name: spread
    inbox: spread
    cluster: true
    steps: [metadata, copy]
  - name: here
    inbox: here
    steps: [metadata]
"""
    )
    world.inbox("spread")
    world.inbox("here")
    world.start()
    world.wait_for(lambda: connected_to(world, 2), timeout=120, message="two nodes")
    (world.inbox("spread") / "out.txt").write_text("sent out\n")
    world.wait_for(lambda: world.finished() >= 1, timeout=120, message="the first job")
    (world.inbox("here") / "home.txt").write_text("stays here\n")
    world.wait_for(lambda: world.finished() >= 2, timeout=120, message="the second job")
    assert world.states() == {"done": 2}

    manifests = {m["source"]["name"]: m for m in world.manifests()}
    nodes = {n[:8] for n in accelerator_nodes(cluster)}
    assert ran_on(manifests["out.txt"], "metadata") in nodes, "the idle node took it"
    assert ran_on(manifests["home.txt"], "metadata") is None, "no `cluster`: it stays here"
    facts = next(s for s in manifests["out.txt"]["steps"] if s["name"] == "metadata")["data"]
    assert facts["sha256"] == hashlib.sha256(b"sent out\n").hexdigest()
    assert (world.outputs / "spread" / "out" / "out.txt").read_text() == "sent out\n"


def test_a_daemon_killed_while_steps_run_on_the_cluster_finishes_every_job_once(
    on_cluster: World,
) -> None:
    world = on_cluster
    world.write_rules(SLEEPY.format(seconds=1))
    daemon = world.start()
    world.wait_for(lambda: connected_to(world, 2), timeout=120, message="two nodes")
    for i in range(6):
        (world.inbox("gpu") / f"job-{i}.txt").write_text(f"job {i}\n")

    def running() -> int:
        workers = lanes(world).get("lanes", {}).get("accelerator", {}).get("workers", [])
        return sum(1 for w in workers if w.get("node_id") and w["job"])

    world.wait_for(lambda: running() == 2, timeout=120, message="steps on both nodes")
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()

    world.start()
    world.wait_for(lambda: world.finished() >= 6, timeout=180, message="6 jobs")
    assert world.states() == {"done": 6}
    outputs = sorted(p.name for p in (world.outputs / "gpu").iterdir())
    assert outputs == [f"job-{i}" for i in range(6)], "no job published twice"
    for i in range(6):
        folder = world.outputs / "gpu" / f"job-{i}"
        assert sorted(p.name for p in folder.iterdir()) == [
            f"job-{i}.slept.txt",
            f"job-{i}.txt",
            "manifest.json",
        ]
        assert (folder / f"job-{i}.slept.txt").read_text() == f"job-{i}.txt\n"


def test_a_cluster_that_goes_away_leaves_caixa_working_here(
    on_cluster: World, cluster: Cluster
) -> None:
    world = on_cluster
    world.write_rules(SLEEPY.format(seconds=0.1))
    world.start()
    world.wait_for(lambda: connected_to(world, 2), timeout=120, message="two nodes")
    (world.inbox("gpu") / "before.txt").write_text("before\n")
    world.wait_for(lambda: world.finished() >= 1, timeout=120, message="the first job")

    cluster.shutdown()

    world.wait_for(
        lambda: cluster_seen(world).get("state") == "gone",
        timeout=120,
        message="the cluster seen gone",
    )
    (world.inbox("gpu") / "after.txt").write_text("after\n")
    world.wait_for(lambda: world.finished() >= 2, timeout=120, message="the second job")
    assert world.states() == {"done": 2}
    manifests = {m["source"]["name"]: m for m in world.manifests()}
    assert ran_on(manifests["before.txt"], "sleepy") is not None
    assert ran_on(manifests["after.txt"], "sleepy") is None, "ran on this machine"
    assert (world.outputs / "gpu" / "after" / "after.slept.txt").read_text() == "after.txt\n"
    status = world.caixa("status", "--home", str(world.home))
    assert "gone" in status.stdout and "model steps run on this machine" in status.stdout
    gone = [e for e in world.logs() if e["event"] == "model steps run on this machine"]
    assert len(gone) == 1, "said once"


def test_a_cluster_that_starts_after_the_daemon_takes_its_steps_once_it_answers(
    world: World,
) -> None:
    port = free_port()
    world.env.update(LOOPBACK)
    world.env["CAIXA_RAY_ADDRESS"] = f"127.0.0.1:{port}"
    world.write_rules(SLEEPY.format(seconds=0.1))
    world.inbox("gpu")
    world.start()
    world.wait_log("model steps run on this machine", timeout=120)
    for i in range(2):
        (world.inbox("gpu") / f"early-{i}.txt").write_text(f"early {i}\n")
    world.wait_for(lambda: world.finished() >= 2, timeout=120, message="the early jobs")
    status = world.caixa("status", "--home", str(world.home))
    assert f"ray cluster 127.0.0.1:{port}: gone (" in status.stdout, status.stdout
    assert "model steps run on this machine" in status.stdout

    with loopback():
        late = head(gcs_server_port=port)
        try:
            node = late.add_node(**ACCELERATOR)
            world.wait_log("connected to the Ray cluster", timeout=300)
            world.wait_for(lambda: connected_to(world, 1), timeout=120, message="the node")
            status = world.caixa("status", "--home", str(world.home))
            assert f"ray cluster 127.0.0.1:{port}: connected, 1 node(s)" in status.stdout
            assert f"({node.node_id[:8]}): CPU 1, accelerator 1" in status.stdout, status.stdout
            for i in range(3):
                (world.inbox("gpu") / f"late-{i}.txt").write_text(f"late {i}\n")
            world.wait_for(lambda: world.finished() >= 5, timeout=240, message="the late jobs")
        finally:
            world.stop_all()
            late.shutdown()

    assert world.states() == {"done": 5}
    names = [f"early-{i}" for i in range(2)] + [f"late-{i}" for i in range(3)]
    assert sorted(p.name for p in (world.outputs / "gpu").iterdir()) == names
    manifests = {m["source"]["name"]: m for m in world.manifests()}
    assert sorted(manifests) == [f"{n}.txt" for n in names], "each file published once"
    assert len(world.manifests()) == 5
    assert all(ran_on(manifests[f"early-{i}.txt"], "sleepy") is None for i in range(2))
    assert {ran_on(manifests[f"late-{i}.txt"], "sleepy") for i in range(3)} == {node.node_id[:8]}
    done = [e for e in world.logs() if e["event"] == "step done" and e.get("step") == "sleepy"]
    assert len(done) == 5 and len({e["job"] for e in done}) == 5, "each step done once"
    logs = world.logs()
    assert len([e for e in logs if e["event"] == "model steps run on this machine"]) == 1
    assert len([e for e in logs if e["event"] == "connected to the Ray cluster"]) == 1


def test_a_head_that_comes_back_gets_the_steps_again(world: World) -> None:
    port = on_a_port_of_its_own(world)
    on = partial(only_on, world)

    with loopback():
        first = head(gcs_server_port=port)
        try:
            before, _ = first_job_on_a_node_of(first, world)
        finally:
            first.shutdown()
        world.wait_for(
            lambda: cluster_seen(world).get("state") == "gone",
            timeout=120,
            message="the cluster seen gone",
        )
        second = head(gcs_server_port=port)
        try:
            after = second.add_node(**ACCELERATOR)
            world.wait_for(lambda: on(after.node_id), timeout=300, message="the new node")
            (world.inbox("gpu") / "after.txt").write_text("after\n")
            world.wait_for(lambda: world.finished() >= 2, timeout=120, message="the second job")
        finally:
            world.stop_all()
            second.shutdown()

    assert world.states() == {"done": 2}
    manifests = {m["source"]["name"]: m for m in world.manifests()}
    assert ran_on(manifests["before.txt"], "sleepy") == before.node_id[:8]
    assert ran_on(manifests["after.txt"], "sleepy") == after.node_id[:8]
    logs = world.logs()
    assert len([e for e in logs if e["event"] == "model steps run on this machine"]) == 1
    assert len([e for e in logs if e["event"] == "connected to the Ray cluster"]) == 2


def test_a_head_started_again_between_two_looks_is_joined_again(world: World) -> None:
    """The daemon, paused (SIGSTOP) while the head stops and a new one starts on its port, wakes
    to a head that answers but is another cluster: Ray would end a driver that asked it a
    question, so caixa sees the new cluster first, says so, and joins it."""
    port = on_a_port_of_its_own(world)
    on = partial(only_on, world)

    with loopback():
        first = head(gcs_server_port=port)
        try:
            before, daemon = first_job_on_a_node_of(first, world)
            daemon.send_signal(signal.SIGSTOP)  # no look at the cluster until it runs again
        finally:
            first.shutdown()
        try:
            second = head(gcs_server_port=port)
            after = second.add_node(**ACCELERATOR)
        finally:
            daemon.send_signal(signal.SIGCONT)
        try:
            world.wait_for(lambda: on(after.node_id), timeout=300, message="the new node")
            (world.inbox("gpu") / "after.txt").write_text("after\n")
            world.wait_for(lambda: world.finished() >= 2, timeout=120, message="the second job")
            status = world.caixa("status", "--home", str(world.home))
            daemon.send_signal(signal.SIGTERM)  # a stop, given the time a busy machine needs
            stopped = daemon.wait(120)
        finally:
            world.stop_all()
            second.shutdown()

    assert stopped == 0, "the daemon lived through the new head, and stopped cleanly"
    assert world.states() == {"done": 2}
    manifests = {m["source"]["name"]: m for m in world.manifests()}
    assert ran_on(manifests["before.txt"], "sleepy") == before.node_id[:8]
    assert ran_on(manifests["after.txt"], "sleepy") == after.node_id[:8]
    assert f"ray cluster 127.0.0.1:{port}: connected, 1 node(s)" in status.stdout
    logs = world.logs()
    gone = [e for e in logs if e["event"] == "model steps run on this machine"]
    assert [e["why"] for e in gone] == [
        f"the Ray head at 127.0.0.1:{port} started again: a new cluster"
    ]
    assert len([e for e in logs if e["event"] == "connected to the Ray cluster"]) == 2


def test_a_step_on_a_node_when_its_head_starts_again_is_done_once(world: World) -> None:
    """The head stops while a step runs on its node, and a new head starts on its port: the
    node went with the old cluster, so its step fails as a lost worker's does, one try, and
    is done again (here, or on the new cluster), once."""
    port = on_a_port_of_its_own(world)
    release = held_until_released(world)
    with loopback():
        first = head(gcs_server_port=port)
        try:
            node = first.add_node(**ACCELERATOR)
            world.start()
            world.wait_for(lambda: only_on(world, node.node_id), timeout=120, message="the node")
            (world.inbox("gpu") / "held.txt").write_text("held\n")
            world.wait_for(lambda: step_on_a_node(world), 120, "the step there")
        finally:
            first.shutdown()
        second = head(gcs_server_port=port)
        try:
            second.add_node(**ACCELERATOR)
            world.wait_log("step will be retried", timeout=180)
            release.touch()
            world.wait_for(lambda: world.finished() >= 1, timeout=180, message="the held job")
        finally:
            world.stop_all()
            second.shutdown()

    assert world.states() == {"done": 1}
    logs = world.logs()
    retried = [e for e in logs if e["event"] == "step will be retried"]
    assert len(retried) == 1 and "Ray worker" in retried[0]["error"], retried
    assert "was lost" in retried[0]["error"]
    done = [e for e in logs if e["event"] == "step done" and e.get("step") == "sleepy"]
    assert len(done) == 1, "done once"
    assert [p.name for p in (world.outputs / "gpu").iterdir()] == ["held"]
    assert (world.outputs / "gpu" / "held" / "held.slept.txt").read_text() == "held.txt\n"
    assert len(world.manifests()) == 1
