"""Names and templates can never write outside their root."""

from __future__ import annotations

from pathlib import Path

import pytest

from caixa.daemon import outputs
from caixa.daemon.fsutil import (
    atomic_write,
    atomic_write_bytes,
    fit,
    is_inside,
    safe_name,
    with_suffix_number,
)
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


def test_output_folders_skip_what_exists(tmp_path: Path) -> None:
    (tmp_path / "r" / "x").mkdir(parents=True)
    (tmp_path / "r" / "x-2").mkdir()
    candidates = outputs.output_candidates(tmp_path, "r/x")
    assert [next(candidates), next(candidates)] == ["r/x-3", "r/x-4"]


def test_a_symlinked_output_folder_cannot_lead_outside(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    root.mkdir()
    (root / "r").symlink_to(tmp_path)
    with pytest.raises(outputs.PathEscapeError):
        next(outputs.output_candidates(root, "r/x"))


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


def test_an_artifact_named_as_a_job_folder_inside_this_one_takes_another_name(
    tmp_path: Path,
) -> None:
    """`{rule}/{subdir}`: a file at the top publishes into `r/`, which holds `r/scans/`."""
    root = tmp_path / "out"
    (root / "r" / "scans").mkdir(parents=True)
    (tmp_path / "scans").write_text("the top file's copy")
    art = Artifact("scans", tmp_path / "scans")
    assert outputs.publish(root / "r", root, [art], {"job": "j"}) == ["scans-2"]
    assert (root / "r" / "scans-2").read_text() == "the top file's copy"
    assert (root / "r" / "scans").is_dir()
    assert outputs.publish(root / "r", root, [art], {"job": "j"}) == ["scans-2"]  # resumed


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
