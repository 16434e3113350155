"""The argos engine: argostranslate with models installed only from the user's local
.argosmodel files, into caixa's own folder (`<home>/argos`).

Three things keep it offline. argostranslate reads its folders and settings once, when it is
imported, from environment variables and ~/.config/argos-translate/settings.json (which may
name a remote provider): it is imported once with all of them pointing into caixa's folder.
Nothing here calls its package index (offline it retries ~70 s, then crashes). And its
translation object splits sentences with a model from the package (`stanza/` or `minisbd/`),
downloading one when the package has neither: it gets caixa's own splitter instead.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from caixa import models
from caixa.errors import StepError
from caixa.home import Home

MODULE = "argostranslate"
SEPARATOR = "\x1f"  # between the sentences of a paragraph handed to argos
STAMP = ".caixa-installed"  # which file, of what size and age, a package folder came from
_installing = threading.Lock()


@dataclass(frozen=True)
class Package:
    """An installed package: a folder under `<home>/argos/packages` and its language pair."""

    path: Path
    source: str
    target: str

    @property
    def stamp(self) -> str:
        return _stamp(self.path)


def packages_dir(home: Path) -> Path:
    return Home(home).argos / "packages"


def model_files(ref: Path | list[Path]) -> list[Path]:
    """The .argosmodel files a rule names: a folder of them, or a list of files."""
    paths = [ref] if isinstance(ref, Path) else ref
    files: list[Path] = []
    for path in (p.expanduser() for p in paths):
        if path.is_dir():
            files += sorted(path.glob("*.argosmodel"))
        elif path.is_file():
            files.append(path)
        else:
            raise StepError(f"argos_models: nothing at {path}")
    if not files:
        raise StepError(f"argos_models: no .argosmodel file in {', '.join(map(str, paths))}")
    return files


def install(files: list[Path], home: Path) -> list[Package]:
    """Install each file into caixa's folder, unless the same file already is."""
    module = _argos(home)
    target = packages_dir(home)
    installed = []
    with _installing:
        module.settings.package_data_dir = target
        for file in files:
            folder = target / _top_folder(file)
            stat = file.stat()
            stamp = f"{file.resolve()} {stat.st_size} {stat.st_mtime_ns}"
            if _read(folder) is None or _stamp(folder) != stamp:
                shutil.rmtree(folder, ignore_errors=True)
                module.package.install_from_path(file)
                (folder / STAMP).write_text(stamp)
            installed.append(_package(folder))
    return installed


def installed(home: Path) -> list[Package]:
    folder = packages_dir(home)
    found = (_package(p) for p in sorted(folder.iterdir()) if p.is_dir()) if folder.is_dir() else ()
    return [p for p in found if p.source and p.target]


def pairs(home: Path) -> set[tuple[str, str]]:
    """Pairs the installed packages translate, directly or through English as argos does."""
    direct = {(p.source, p.target) for p in installed(home)}
    via_english = {(a, c) for a, b in direct for b2, c in direct if b == b2 == "en" and a != c}
    return direct | via_english


def model_names(chosen: list[Package]) -> list[str]:
    return [f"argos {p.path.name}" for p in chosen]


def route(source: str, target: str, home: Path, prefer: list[Package]) -> list[Package] | None:
    """The packages that translate source -> target, the rule's own first, else None."""
    candidates = prefer + [p for p in installed(home) if p not in prefer]

    def find(a: str, b: str) -> Package | None:
        return next((p for p in candidates if (p.source, p.target) == (a, b)), None)

    direct = find(source, target)
    if direct:
        return [direct]
    first, second = find(source, "en"), find("en", target)
    return [first, second] if first and second else None


def translate(groups: list[list[str]], package: Package, home: Path) -> list[str]:
    """Each group of sentences (a paragraph) translated as one text: argos batches them."""
    translation = _translation(package, home)
    return [translation.translate(SEPARATOR.join(group)) for group in groups]


class _Sentences:
    """Where argos asks its sentence model to split a paragraph: the sentences caixa split."""

    def split_sentences(self, text: str) -> list[str]:
        return text.split(SEPARATOR)


def _translation(package: Package, home: Path) -> Any:
    module = _argos(home)  # outside load(): models.load holds its lock while loading

    def load() -> Any:
        pkg = module.package.Package(package.path)
        from_lang = module.translate.Language(pkg.from_code, pkg.from_name)
        to_lang = module.translate.Language(pkg.to_code, pkg.to_name)
        translation = module.translate.PackageTranslation(from_lang, to_lang, pkg)
        translation.sentencizer = _Sentences()
        return translation

    return models.load(f"argos:{package.path}:{package.stamp}", load)


def _argos(home: Path) -> ModuleType:
    def load() -> ModuleType:
        root = Home(home).argos
        env = {
            "XDG_DATA_HOME": root / "data",
            "XDG_CONFIG_HOME": root / "config",  # no user settings.json: no remote provider
            "XDG_CACHE_HOME": root / "cache",
            "ARGOS_PACKAGES_DIR": packages_dir(home),
            "ARGOS_MODEL_PROVIDER": "OPENNMT",  # local CTranslate2 models
            "ARGOS_CHUNK_TYPE": "ARGOSTRANSLATE",  # SPACY would download a model at import
        }
        saved = {key: os.environ.get(key) for key in env}
        os.environ.update({key: str(value) for key, value in env.items()})
        try:
            import argostranslate.package
            import argostranslate.settings
            import argostranslate.translate

            # It logs every paragraph it translates at INFO: documents stay out of logs.
            logging.getLogger("argostranslate.utils").setLevel(logging.WARNING)
            return argostranslate
        finally:  # the settings are read; the rest of the process keeps its own environment
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return models.load("argostranslate", load)


def _top_folder(file: Path) -> str:
    """The one folder an .argosmodel holds, with its metadata.json."""
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise StepError(f"{file} is not an .argosmodel (a zip archive): {exc}") from exc
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) != 1 or f"{next(iter(tops))}/metadata.json" not in names:
        raise StepError(f"{file} is not an .argosmodel: it needs one folder with metadata.json")
    return tops.pop()


def _read(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stamp(folder: Path) -> str:
    try:
        return (folder / STAMP).read_text()
    except OSError:
        return ""


def _package(folder: Path) -> Package:
    meta = _read(folder) or {}
    kind = meta.get("type", "translate")
    if kind != "translate":
        return Package(folder, "", "")
    return Package(folder, meta.get("from_code") or "", meta.get("to_code") or "")
