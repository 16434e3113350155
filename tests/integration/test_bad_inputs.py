"""Each bad input gets a clear outcome, and the daemon goes on with the next good file."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from tests.conftest import World

RULES = """
rules:
  - name: notes
    inbox: in
    steps: [text, metadata]
"""

LONG = "ç" * 125 + "a.txt"  # 255 bytes of UTF-8
NOBODY = 65534


def error_of(world: World, name: str) -> dict:
    return json.loads((world.failed / "notes" / f"{name}.error.json").read_text())


def test_bad_inputs_each_get_a_clear_outcome_and_the_daemon_goes_on(world: World) -> None:
    world.write_rules(RULES)
    inbox = world.inbox()
    outside = world.root / "secret.txt"
    outside.write_text("not yours")
    (inbox / "empty.txt").write_bytes(b"")
    (inbox / "link.txt").symlink_to(outside)
    os.mkfifo(inbox / "pipe.txt")
    (inbox / "line\nbreak.txt").write_text("a name with a newline\n")
    (inbox / LONG).write_text("a long name\n")
    (inbox / "..sneaky.txt").write_text("a hidden name\n")
    (inbox / "cp1252.txt").write_bytes("Pão, açúcar e maçãs.\n".encode("cp1252"))
    (inbox / "broken.txt").write_bytes(
        "coração, ação e pão ".encode() + b"\xff\xfe\xfd" + b" fim\n"
    )
    (inbox / "binary.txt").write_bytes(bytes(range(256)) * 8)

    proc = world.start()
    world.wait_for(lambda: world.finished() >= 6, message="the bad inputs")
    (inbox / "good.txt").write_text("still here\n")
    world.wait_for(lambda: world.finished() >= 7, message="the good file after them")
    assert proc.poll() is None, "one bad file stopped the daemon"

    # empty and binary: failed/, with an error.json saying what, where and how to retry
    for name, words in {"empty.txt": "empty", "binary.txt": "not a text file"}.items():
        assert (world.failed / "notes" / name).exists()
        error = error_of(world, name)
        assert words in error["message"]
        assert error["rule"] == "notes" and error["file"] == name
        assert "caixa retry" in error["retry"] and str(inbox) in error["retry"]
    # the symlink and the fifo are refused and left alone; the link's target is untouched
    status = json.loads(world.caixa("status", "--json", "--home", str(world.home)).stdout)
    refused = {Path(r["path"]).name: r["reason"] for r in status["refused"]}
    assert "symlink" in refused["link.txt"] and "fifo" in refused["pipe.txt"]
    assert (inbox / "link.txt").is_symlink() and outside.read_text() == "not yours"
    assert (inbox / "pipe.txt").exists()
    # a hidden name is never taken, and `explain` says why
    assert (inbox / "..sneaky.txt").exists()
    explained = world.caixa("explain", str(inbox / "..sneaky.txt"), "--rules", str(world.rules))
    assert "hidden" in explained.stdout
    # odd names are processed, into folders that stay under outputs
    newline_out = world.outputs / "notes" / "line_break" / "line_break.txt"
    assert newline_out.read_text() == "a name with a newline\n"
    long_outputs = [p for p in world.outputs.rglob("*.txt") if p.read_text() == "a long name\n"]
    assert len(long_outputs) == 1
    assert all(len(part.encode()) <= 255 for part in long_outputs[0].parts)
    assert (world.processed / "notes" / LONG).exists()
    # text in a legacy encoding becomes UTF-8; broken bytes are marked and counted
    assert (world.outputs / "notes/cp1252/cp1252.txt").read_text() == "Pão, açúcar e maçãs.\n"
    broken = (world.outputs / "notes/broken/broken.txt").read_text(encoding="utf-8")
    assert broken.startswith("coração, ação e pão ") and "\ufffd" in broken
    manifest = json.loads((world.outputs / "notes/broken/manifest.json").read_text())
    assert manifest["steps"][0]["data"]["replaced_bytes"] == 3
    assert (world.outputs / "notes/good/good.txt").read_text() == "still here\n"
    for path in world.outputs.rglob("*"):
        assert path.resolve().is_relative_to(world.outputs.resolve())


def test_an_unreadable_file_fails_with_permission_denied(world: World) -> None:
    if os.geteuid() == 0:  # root reads anything: run the daemon as nobody, like a real service
        world = World(Path(tempfile.mkdtemp(prefix="caixa-nobody-")))  # outside pytest's 0700 tmp
    try:
        check_unreadable(world)
    finally:
        world.stop_all()
        if world.root.name.startswith("caixa-nobody-"):
            shutil.rmtree(world.root)


def check_unreadable(world: World) -> None:
    world.write_rules(RULES)
    secret = world.inbox() / "locked.txt"
    secret.write_text("you cannot read me\n")
    secret.chmod(0)
    prefix: list[str] = []
    world.home.mkdir()
    if os.geteuid() == 0:
        for path in [world.root, *world.root.rglob("*")]:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        prefix = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    world.start(prefix)
    # Read its journal only once the daemon has made it: this process is root, and a read
    # that meets the journal half made has left it unwritable for the daemon (seen once).
    world.wait_log("ready")
    world.wait_for(lambda: world.finished() >= 1, message="the locked file")
    error = error_of(world, "locked.txt")
    assert "permission denied" in error["message"]
    assert (world.failed / "notes" / "locked.txt").exists()
    world.wait_quiet_scan()  # the failed file is not taken again
    assert world.states() == {"failed": 1}
