"""Names and templates can never write outside their root."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from caixa.daemon import outputs
from caixa.daemon.fsutil import (
    atomic_write,
    atomic_write_bytes,
    fit,
    is_inside,
    make_dirs,
    safe_name,
    with_suffix_number,
)
from caixa.daemon.journal import Claim, Journal
from caixa.pipelines.base import Artifact


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.pdf", "report.pdf"),
        ("..", "_"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("..hidden.txt", "hidden.txt"),
        ("line\nbreak.txt", "line_break.txt"),
        ("tab\there", "tab_here"),
        ("back\\slash", "back_slash"),
        ("   ", "_"),
    ],
)
def test_safe_name(name: str, safe: str) -> None:
    assert safe_name(name) == safe


def test_long_names_are_cut_on_a_character_and_keep_their_extension() -> None:
    name = "ç" * 200 + ".txt"
    cut = safe_name(name, 100)
    assert len(cut.encode()) <= 100 and cut.endswith(".txt") and set(cut[:-4]) == {"ç"}
    assert fit("ação", 3) == "a\u00e7"  # 3 bytes: "a" + "ç", never half of "ã"


def test_numbered_names() -> None:
    assert with_suffix_number("a.tar.gz", 2) == "a.tar-2.gz"
    assert with_suffix_number("README", 3) == "README-3"
    assert with_suffix_number(".x", 2) == ".x-2"


def fields(rel: str) -> dict[str, str]:
    return outputs.template_fields("r", Path("/in"), rel, "image/png", 0.0, {})


@pytest.mark.parametrize(
    ("template", "rel", "rendered"),
    [
        ("{rule}/{stem}", "photo.png", "r/photo"),
        ("{type}/{year}/{name}", "photo.png", "image/1970/photo.png"),
        ("{rule}/{subdir}/{stem}", "a/b/photo.png", "r/a/b/photo"),
        ("{rule}/{subdir}/{stem}", "photo.png", "r/photo"),  # no subfolder, no folder
        ("{rule}/{stem}", "\n", "r/_"),  # never the rule's folder, which holds the others
        ("{rule}/{stem}", " \t.txt", "r/_"),
        ("{rule}/{stem}", "..photo.png", "r/photo"),
        ("../../{stem}", "x.png", "_/_/x"),
        ("/abs/{stem}", "x.png", "abs/x"),
    ],
)
def test_templates_render_inside_the_root(template: str, rel: str, rendered: str) -> None:
    assert outputs.render(template, fields(rel)) == rendered


def _reserving(tmp_path: Path, n: int) -> tuple[Journal, list[str]]:
    """A real journal with `n` jobs whose steps are done, each ready to reserve its folder."""
    journal = Journal(tmp_path / "journal.sqlite3")
    plan = {"steps": [{"name": "copy", "params": {}}], "output": "x", "on_success": "archive"}
    claims = [Claim("r", "v1", plan, tmp_path / "in", f"{i}.txt") for i in range(n)]
    ids = journal.begin_claims(claims)
    for i, job_id in enumerate(ids):
        journal.admit(job_id, sha256=f"{i:064x}", size=1, media_type="text/plain")
        journal.start_step(job_id, 0, "copy")
        journal.finish_step(job_id, 0, {"artifacts": []})
    return journal, ids


def _reserve(journal: Journal, job_id: str, root: Path, rendered: str) -> str:
    """The folder the daemon's publish would reserve for `rendered` under `root`."""
    return journal.reserve_output(job_id, functools.partial(outputs.free_folder, root, rendered))


def test_output_folders_skip_what_exists_and_what_jobs_hold(tmp_path: Path) -> None:
    root = tmp_path / "out"
    (root / "r" / "x").mkdir(parents=True)
    (root / "r" / "x-2").mkdir()
    journal, ids = _reserving(tmp_path, 2)
    first, second = (_reserve(journal, job_id, root, "r/x") for job_id in ids)
    assert (first, second) == ("r/x-3", "r/x-4")  # -3 is held, though not made yet
    assert journal.reserve_output(ids[0], lambda _: "elsewhere") == "r/x-3"  # kept


def test_one_jobs_folder_never_lies_in_another_jobs_nor_around_it(tmp_path: Path) -> None:
    """`image/1970` of a file `1970.png` (`{rule}/{stem}`) and another rule's
    `{type}/{year}/{name}`: in whichever order they come, neither holds the other."""
    root = tmp_path / "out"
    root.mkdir()
    journal, ids = _reserving(tmp_path, 4)
    assert _reserve(journal, ids[0], root, "image/1970") == "image/1970"
    assert _reserve(journal, ids[1], root, "image/1970/photo.png") == "image/1970-2/photo.png"
    assert _reserve(journal, ids[2], root, "image/1970-2") == "image/1970-2-2"  # not around
    assert (  # beside a job's folder, not in one
        _reserve(journal, ids[3], root, "image/1970-2/other.png") == "image/1970-2/other.png"
    )


def test_a_file_where_a_folder_above_goes_numbers_that_folder(tmp_path: Path) -> None:
    root = tmp_path / "out"
    root.mkdir()
    (root / "r").write_text("a file the user left in the outputs")
    journal, (job_id,) = _reserving(tmp_path, 1)
    assert _reserve(journal, job_id, root, "r/x") == "r-2/x"


def test_a_symlinked_output_folder_cannot_lead_outside(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    root.mkdir()
    (root / "r").symlink_to(tmp_path)
    journal, (job_id,) = _reserving(tmp_path, 1)
    with pytest.raises(outputs.PathEscapeError):
        _reserve(journal, job_id, root, "r/x")
    assert journal.get(job_id).output_dir is None


def test_publish_writes_distinct_names_and_the_manifest_last(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    arts = []
    for i, name in enumerate(["a.txt", "a.txt", "manifest.json", "../evil.txt"]):
        (work / str(i)).write_text(str(i))
        arts.append(Artifact(name, work / str(i)))
    folder = tmp_path / "out" / "job"
    (tmp_path / "out").mkdir()
    folder.mkdir()
    (folder / ".caixa-tmp-1-manifest.json").write_text("debris of a crash")
    names = outputs.publish(folder, tmp_path / "out", arts, {"job": "j"})
    assert names == ["a.txt", "a-2.txt", "manifest-2.json", "_evil.txt"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([*names, "manifest.json"])
    # run again after a "crash": the artifacts are already in place, the result is the same
    assert outputs.publish(folder, tmp_path / "out", arts, {"job": "j"}) == names


def test_a_file_where_a_folder_goes_is_an_error_not_a_folder(tmp_path: Path) -> None:
    (tmp_path / "r").write_text("a user's file")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        make_dirs(tmp_path / "r")
    with pytest.raises((FileExistsError, NotADirectoryError)):
        make_dirs(tmp_path / "r" / "x")


def test_atomic_write_leaves_no_temp_file_when_it_fails(tmp_path: Path) -> None:
    def boom(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk gone")

    with pytest.raises(OSError):
        atomic_write(tmp_path / "f", boom)
    atomic_write_bytes(tmp_path / "g", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g"]


def test_a_path_is_inside_its_root_unless_a_symlink_or_dots_lead_out(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    (root / "r" / "real").mkdir(parents=True)
    (root / "r" / "out").symlink_to(tmp_path)
    (root / "r" / "in").symlink_to(root / "r" / "real")
    (root / "r" / "file").write_text("a file, not a folder")
    assert is_inside(root / "r" / "real" / "x", root)
    assert is_inside(root / "r" / "new" / "deeper" / "x", root)  # nothing of it made yet
    assert is_inside(root / "r" / "in" / "x", root)  # a symlink that stays inside
    assert is_inside(root / "r" / "file" / "x", root)
    assert not is_inside(root / "r" / "out" / "x", root)
    assert not is_inside(root / "r" / ".." / ".." / "x", root)
    assert not is_inside(tmp_path / "elsewhere", root)
