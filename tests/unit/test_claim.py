"""The claim takes only the regular file the watcher saw: a symlink, a fifo or a folder swapped
into its place, or a symlinked folder on its way, is refused and nothing it points to is read,
on one filesystem and across two (where the claim copies)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from caixa.daemon.workarea import NotRegularError, WorkArea
from caixa.errors import InputError
from caixa.filetypes import sniff
from caixa.nofollow import open_regular
from caixa.pipelines.common.files import sha256_of

SECRET = b"segredo: only the daemon may read this\n"


@pytest.fixture(params=["same filesystem", "another filesystem"])
def inbox(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """An inbox beside the work area, or on /dev/shm (a tmpfs) so the claim must copy."""
    if request.param == "same filesystem":
        yield tmp_path / "in"
        return
    if not Path("/dev/shm").is_dir() or Path("/dev/shm").stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("no second filesystem to claim across")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        yield Path(other) / "in"


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_bytes(SECRET)
    return path


def test_a_regular_file_is_claimed(inbox: Path, tmp_path: Path) -> None:
    inbox.mkdir()
    (inbox / "note.txt").write_bytes(b"hello\n")
    work = WorkArea(tmp_path / "work")
    claimed = work.claim(inbox / "note.txt", "job1", "note.txt", inbox)
    assert claimed.read_bytes() == b"hello\n" and not (inbox / "note.txt").exists()


def test_a_symlink_swapped_in_is_refused_removed_and_its_target_never_read(
    inbox: Path, tmp_path: Path, secret: Path
) -> None:
    inbox.mkdir()
    (inbox / "note.txt").symlink_to(secret)
    work = WorkArea(tmp_path / "work")
    with pytest.raises(NotRegularError, match="symlink"):
        work.claim(inbox / "note.txt", "job1", "note.txt", inbox)
    assert secret.read_bytes() == SECRET
    assert not any(p.is_file() and p.read_bytes() == SECRET for p in work.root.rglob("*"))


def test_a_fifo_swapped_in_is_refused_without_waiting_on_it(inbox: Path, tmp_path: Path) -> None:
    inbox.mkdir()
    os.mkfifo(inbox / "note.txt")
    with pytest.raises(NotRegularError):
        WorkArea(tmp_path / "work").claim(inbox / "note.txt", "job1", "note.txt", inbox)


def test_a_folder_on_the_way_swapped_for_a_symlink_is_not_followed(
    inbox: Path, tmp_path: Path, secret: Path
) -> None:
    inbox.mkdir()
    (inbox / "sub").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(NotRegularError, match="folder on its way"):
        WorkArea(tmp_path / "work").claim(inbox / "sub" / "secret.txt", "j", "secret.txt", inbox)
    assert secret.read_bytes() == SECRET  # still where it was


def test_readers_refuse_a_symlink_and_a_fifo(tmp_path: Path, secret: Path) -> None:
    link = tmp_path / "link.txt"
    link.symlink_to(secret)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for read in (sha256_of, sniff, open_regular):
        with pytest.raises(InputError, match="symlink"):
            read(link)
        with pytest.raises(InputError, match="not a regular file"):
            read(fifo)
