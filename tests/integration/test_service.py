"""caixa under systemd, without systemd: the daemon as a real subprocess, told by real signals,
speaking the real protocols to sockets the test binds in systemd's place."""

from __future__ import annotations

import shutil
import signal
import socket
import struct
import threading
from pathlib import Path

from tests.conftest import World, wait_until


class Datagrams:
    """A datagram socket in place of systemd's: it keeps what arrives, in order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.got: list[bytes] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.1)
        self._open = True
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while self._open:
            try:
                data = self._sock.recv(1 << 20)
            except TimeoutError:
                continue
            self.got.append(data)

    def close(self) -> None:
        self._open = False

    def mark(self) -> int:
        """What has arrived so far: `since` for what comes next."""
        return len(self.got)

    def lines(self, since: int = 0) -> list[tuple[int, str]]:
        """Each line with the number of its datagram, from datagram `since` on."""
        return [
            (n, line)
            for n, d in enumerate(self.got[since:], since)
            for line in d.decode().split("\n")
        ]

    def wait_for(
        self, prefix: str, since: int = 0, timeout: float = 60, count: int = 1
    ) -> tuple[int, str]:
        """The `count`th line starting with `prefix` from datagram `since` on."""

        def found() -> tuple[int, str] | None:
            matches = [(n, line) for n, line in self.lines(since) if line.startswith(prefix)]
            return matches[count - 1] if len(matches) >= count else None

        return wait_until(found, timeout, f"{count} x {prefix!r} after datagram {since}")


def journal_fields(datagram: bytes) -> dict[str, str]:
    """A record in journald's native format: NAME=value lines, or NAME, a newline, a 64-bit
    little-endian length and that many bytes, for values holding a newline."""
    fields, i = {}, 0
    while i < len(datagram):
        end = datagram.index(b"\n", i)
        line = datagram[i:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            i = end + 1
        else:
            name, (size,) = line, struct.unpack("<Q", datagram[end + 1 : end + 9])
            value = datagram[end + 9 : end + 9 + size]
            assert datagram[end + 9 + size : end + 10 + size] == b"\n"
            i = end + 10 + size
        fields[name.decode()] = value.decode()
    return fields


def copy_rules(name: str, inbox: str = "in", steps: str = "[copy]") -> str:
    return f"rules:\n  - name: {name}\n    inbox: {inbox}\n    steps: {steps}\n"


def events(world: World, event: str) -> list[dict]:
    return [e for e in world.logs() if e.get("event") == event]


def wait_event(world: World, event: str) -> dict:
    return world.wait_log(event)[1]


def test_ready_status_and_watchdog_until_the_watcher_stops_answering(
    world: World, tmp_path: Path
) -> None:
    world.write_rules(copy_rules("docs"))
    inbox = world.inbox()
    (inbox / "before.txt").write_text("here before the daemon\n")
    notify = Datagrams(tmp_path / "notify.sock")
    world.env |= {
        "NOTIFY_SOCKET": str(notify.path),
        "WATCHDOG_USEC": "1000000",  # a ping every 0.5 s
        "CAIXA_STALL_SECONDS": "1",
    }
    proc = world.start()

    notify.wait_for("READY=1")
    # READY means the first scan is taken: the file that was waiting is already claimed
    assert [r["name"] for r in world.query("SELECT name FROM jobs")] == ["before.txt"]
    notify.wait_for("STATUS=0 queued, 0 running, 1 done, 0 failed")
    start = notify.mark()
    notify.wait_for("WATCHDOG=1", since=start, count=3)
    pings = [n for n, line in notify.lines(start) if line == "WATCHDOG=1"]
    assert len(pings) >= 3, notify.lines(start)

    proc.send_signal(signal.SIGHUP)  # systemctl reload
    reloading, _ = notify.wait_for("RELOADING=1", since=start)
    assert notify.lines(reloading)[1][1].startswith("MONOTONIC_USEC=")
    notify.wait_for("READY=1", since=reloading)

    # The inbox folder goes away (a disk unmounted): its watch dies with it. The daemon still
    # runs, but is half blind: it stops petting the watchdog so that systemd restarts it.
    gone = notify.mark()
    shutil.rmtree(inbox)
    lost = f"watcher: no longer watching {inbox}"  # beside any part a busy machine held up

    def said_lost() -> tuple[int, str] | None:
        lines = notify.lines(gone)
        return next(((n, s) for n, s in lines if s.startswith("STATUS=") and lost in s), None)

    stalled_at, status = wait_until(said_lost, 60, "the lost watch in the status")
    assert status.startswith("STATUS=0 queued, 0 running, 1 done, 0 failed; not answering: ")
    # the next status line comes from a tick that checked every part again first (ten times,
    # every 0.5 s): a ping from any of those checks would have arrived before it
    notify.wait_for("STATUS=", since=stalled_at + 1)
    assert [line for n, line in notify.lines(stalled_at) if line == "WATCHDOG=1"] == []
    assert proc.poll() is None

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    notify.wait_for("STOPPING=1", since=stalled_at)
    notify.close()


def test_sighup_keeps_the_old_rules_when_the_file_is_broken_and_applies_fixed_ones(
    world: World,
) -> None:
    rules = world.write_rules(copy_rules("old"))
    inbox = world.inbox()
    proc = world.start()
    wait_event(world, "ready")

    world.write_rules(copy_rules("new", steps="[copy, metadata]").replace("steps:", "stepz:"))
    proc.send_signal(signal.SIGHUP)
    refused = wait_event(world, "rules not reloaded; the old rules keep running")
    assert refused["why"] == "SIGHUP"
    assert f"{rules.resolve()}:4: rules[0].stepz: unknown key 'stepz'" in refused["error"]
    (inbox / "a.txt").write_text("taken by the old rule\n")
    world.wait_for(lambda: world.finished() == 1, message="a.txt")
    assert [m["rule"]["name"] for m in world.manifests()] == ["old"]

    world.write_rules(copy_rules("new", steps="[copy, metadata]"))
    proc.send_signal(signal.SIGHUP)
    assert wait_event(world, "rules reloaded")["rules"] == ["new"]
    (inbox / "b.txt").write_text("taken by the new rule\n")
    world.wait_for(lambda: world.finished() == 2, message="b.txt")
    assert sorted(p.name for p in (world.outputs / "new" / "b").iterdir()) == [
        "b.metadata.json",
        "b.txt",
        "manifest.json",
    ]
    assert world.states() == {"done": 2}


def test_an_edit_of_the_rules_file_reloads_them_without_a_signal(world: World) -> None:
    world.write_rules(copy_rules("first", inbox="in"))
    old, new = world.inbox("in"), world.inbox("in2")
    (new / "early.txt").write_text("waiting in a folder that is not an inbox yet\n")
    world.start()
    wait_event(world, "ready")

    world.write_rules(copy_rules("second", inbox="in2"))
    reloaded = wait_event(world, "rules reloaded")
    assert reloaded["why"] == "the rules file changed"
    assert reloaded["inboxes_added"] == [str(new)]
    assert reloaded["inboxes_dropped"] == [str(old)]
    world.wait_for(lambda: world.finished() == 1, message="early.txt, found by the new inbox")
    (new / "late.txt").write_text("dropped after the reload\n")
    (old / "left.txt").write_text("dropped where no rule looks any more\n")
    world.wait_for(lambda: world.finished() == 2, message="late.txt")
    world.wait_quiet_scan()
    assert sorted(m["source"]["name"] for m in world.manifests()) == ["early.txt", "late.txt"]
    assert {m["rule"]["name"] for m in world.manifests()} == {"second"}
    assert (old / "left.txt").exists()


SLEEPY = """
rules:
  - name: slow
    inbox: in
    steps:
      - sleepy: {params}
      - copy
"""


def test_sigterm_while_50_files_are_processed_then_a_restart_does_each_once(world: World) -> None:
    world.write_rules(SLEEPY.format(params="{seconds: 0.1}"))
    inbox = world.inbox()
    for i in range(50):
        (inbox / f"f{i:02}.txt").write_text(f"file {i}\n")
    first = world.start()
    world.wait_for(lambda: world.finished() >= 5, message="some done")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    stopped_with = world.finished()
    assert stopped_with < 50
    # running steps were let finish: no step was cut off in the middle
    assert world.query("SELECT COUNT(*) FROM step_runs WHERE finished_at IS NULL")[0][0] == 0
    assert events(world, "stopped")

    world.start()
    world.wait_for(lambda: world.finished() == 50, timeout=180, message="all 50")
    world.wait_quiet_scan()
    assert world.states() == {"done": 50}
    slept = [e["job"] for e in events(world, "step done") if e["step"] == "sleepy"]
    assert len(slept) == len(set(slept)) == 50  # each job's step ran once, across both daemons
    assert sorted(p.name for p in (world.outputs / "slow").iterdir()) == [
        f"f{i:02}" for i in range(50)
    ]
    assert len(list((world.processed / "slow").iterdir())) == 50
    assert list(inbox.iterdir()) == []
    assert list((world.home / "work").iterdir()) == []


def test_a_step_longer_than_the_stop_timeout_is_left_to_resume(world: World) -> None:
    release = world.root / "release"  # the step holds on until this file exists
    world.write_rules(SLEEPY.format(params=f"{{until: {release}}}"))
    (world.inbox() / "long.txt").write_text("a long step\n")
    world.env["CAIXA_STOP_TIMEOUT"] = "0.5"
    first = world.start()
    world.wait_for(lambda: world.states().get("running"), message="the step running")
    first.send_signal(signal.SIGTERM)
    assert first.wait(30) == 0
    assert events(world, "stopping with steps still running; their jobs resume at the next start")
    assert world.states() == {"running": 1}  # it left without waiting for the step

    release.touch()
    world.start()
    world.wait_for(lambda: world.finished() == 1, message="the job resumed")
    assert world.states() == {"done": 1}
    assert (world.outputs / "slow" / "long" / "long.txt").read_text() == "a long step\n"


def test_a_stop_starts_no_step_for_the_jobs_that_wait_for_a_cpu_worker(world: World) -> None:
    """Several jobs' phases are in flight per CPU worker (their fsyncs overlap); at a stop,
    the ones waiting for a worker leave their jobs to the next start instead of running more
    steps before the daemon may exit."""
    started, gate = world.root / "started", world.root / "gate"
    world.write_rules(
        f"""
rules:
  - name: held
    inbox: held
    steps:
      - hold: {{started: "{started}", until: "{gate}"}}
"""
    )
    world.env.update({"CAIXA_CPU_WORKERS": "1", "CAIXA_STOP_TIMEOUT": "300"})
    held = world.inbox("held")
    daemon = world.start()
    for i in range(3):
        (held / f"job-{i}.txt").write_text(f"job {i}\n")
    world.wait_for(lambda: world.states().get("running") == 3, message="three jobs at their step")
    world.wait_for(started.exists, message="one step running")
    daemon.send_signal(signal.SIGTERM)
    world.wait_log("no new step starts")
    gate.touch()  # the running step ends; nothing else may take the worker now
    assert daemon.wait(120) == 0
    # the step that ran is recorded (its job publishes at the next start); the others never
    # ran, and the journal says no more: they wait for their step, none of which began
    assert world.states() == {"queued": 3}
    assert len(events(world, "step done")) == 1
    assert world.query("SELECT COUNT(*) FROM step_runs WHERE finished_at IS NULL")[0][0] == 0

    world.start()
    world.wait_for(lambda: world.finished() == 3, message="the two left resumed")
    assert world.states() == {"done": 3}
    assert len(events(world, "step done")) == 3, "each step done once"
    assert sorted(p.name for p in (world.outputs / "held").iterdir()) == [
        f"job-{i}" for i in range(3)
    ]


JOURNAL_RULES = """
rules:
  - name: docs
    inbox: in
    match: {glob: "*.txt"}
    steps: [copy]
"""


def test_logs_reach_journald_with_their_fields(world: World, tmp_path: Path) -> None:
    world.write_rules(JOURNAL_RULES)
    inbox = world.inbox()
    journal = Datagrams(tmp_path / "journal.sock")
    # systemd tells a service its stderr goes to the journal by JOURNAL_STREAM=device:inode
    world.home.mkdir()
    stderr = world.home / "daemon-0.log"  # the file world.start() gives the daemon as stderr
    stderr.touch()
    st = stderr.stat()
    world.env |= {
        "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}",
        "CAIXA_LOG_FORMAT": "auto",
        "CAIXA_JOURNAL_SOCKET": str(journal.path),
    }
    world.start()
    (inbox / "nota.txt").write_text("ação\n")
    (inbox / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    world.wait_for(lambda: world.finished() == 1, message="nota.txt")
    job = world.query("SELECT id FROM jobs")[0]["id"]

    def arrived(message: str) -> list[dict[str, str]]:
        records = [journal_fields(d) for d in list(journal.got)]
        return [r for r in records if r["MESSAGE"].startswith(message)]

    wait_until(lambda: arrived("step done"), message="the step's record in the journal")
    wait_until(lambda: arrived("no rule takes this file"), message="photo.jpg's record")
    records = [journal_fields(d) for d in journal.got]
    done = [r for r in records if r["MESSAGE"].startswith("step done")]
    assert len(done) == 1
    assert done[0]["JOB"] == job
    assert done[0]["RULE"] == "docs"
    assert done[0]["STEP"] == "copy"
    assert done[0]["PRIORITY"] == "6"
    assert done[0]["SYSLOG_IDENTIFIER"] == "caixa"
    assert f"job={job}" in done[0]["MESSAGE"]
    unmatched = [r for r in records if r["MESSAGE"].startswith("no rule takes this file")]
    assert unmatched[0]["PRIORITY"] == "4"
    assert unmatched[0]["PATH"] == str(inbox / "photo.jpg")
    assert '"step done"' not in stderr.read_text()  # the records went to the journal alone
    journal.close()
