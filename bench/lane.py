"""The accelerator lane end to end: jobs per minute and model swaps of a mixed queue through the
real daemon, with the lane's policy (serve the loaded model, swap_bound 8) against the same
queue served first come, first served (swap_bound 0), in the same run.

The queue arrives interleaved, as files from several people do: photos to detect people in
(fall-detection, YOLO), photos to label (EfficientNet-Lite0), short English texts to speak
(Piper en_US-joe-medium), and every fifth file a one-page Portuguese scan read, translated and
indexed (ocr on the CPU lane; translate and index on the accelerator lane, with no model to
swap). The accelerator worker's model budget is set to the largest of the three models, as on
a small GPU that holds one big model: the two photo models fit together, Piper fits alone.
With no GPU here the lane runs on the CPU, on its share of the cores.

Each contender gets a fresh daemon and home; the daemon is up before the files arrive, so each
file is taken as it lands, in the order dropped. Time runs from the first file taken to the
last finished (from the journal); swaps are the loads the accelerator worker reports. Both
contenders must finish every job; the outputs are checked for a WAV, a label and people.

Target: the policy makes fewer swaps than first come, first served and no fewer jobs per minute.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from _common import daemon, journal, ratio, save, wait_for_jobs
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (argos ships a `tests`)
from caixa import models
from tests.documents import PORTUGUESE, scanned_pdf

ROUNDS_OF_THREE = 20  # files per model
ASSETS = Path(next(iter(find_spec("ultralytics").submodule_search_locations))) / "assets"
MODELS = ("fall-detection", "efficientnet-lite0", "en_US-joe-medium")
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
  - name: scans
    inbox: inbox/scans
    steps: [ocr, {translate: {to: en}}, index]
"""


def photo(source: Path, n: int, target: Path) -> None:
    """A copy of a test photo with its own JPEG comment: new bytes, so not a duplicate."""
    Image.open(source).save(target, "JPEG", quality=92, comment=f"copy {n}".encode())


def prepare(root: Path) -> list[tuple[str, Path]]:
    """The files to drop, in the order they arrive: (inbox, staged file)."""
    staged = root / "staged"
    staged.mkdir()
    arrivals: list[tuple[str, Path]] = []
    for i in range(ROUNDS_OF_THREE):
        for inbox, source in (("people", "bus.jpg"), ("labels", "zidane.jpg")):
            target = staged / f"{inbox}-{i:02}.jpg"
            photo(ASSETS / source, i, target)
            arrivals.append((inbox, target))
        text = staged / f"speech-{i:02}.txt"
        text.write_text(f"Message {i}. The parcel for house {i} arrives on Tuesday morning.\n")
        arrivals.append(("speech", text))
        if i % 5 == 0:
            scan = staged / f"scan-{i:02}.pdf"
            scanned_pdf(scan, [(PORTUGUESE[i // 5 : i // 5 + 1], 1)], dpi=200)
            arrivals.append(("scans", scan))
    return arrivals


def serve(root: Path, arrivals: list[tuple[str, Path]], bound: int) -> dict[str, Any]:
    run = root / f"bound-{bound}"
    for inbox in ("people", "labels", "speech", "scans"):
        (run / "inbox" / inbox).mkdir(parents=True)
    rules = run / "rules.yaml"
    rules.write_text(RULES)
    home = run / "home"
    budget = max(models.footprint(m) or 0 for m in MODELS) // 2**20 + 1
    with daemon(rules, home, swap_bound=bound, model_memory_mb=budget, log_format="json") as proc:
        for inbox, staged in arrivals:  # moved in whole, as a finished download is
            shutil.copy(staged, run / "inbox" / inbox / f".{staged.name}")
            (run / "inbox" / inbox / f".{staged.name}").rename(run / "inbox" / inbox / staged.name)
        rows = wait_for_jobs(home, len(arrivals), proc, 1800, ("done", "failed", "duplicate"))
    failed = [r["name"] for r in rows if r["state"] != "done"]
    if failed:
        raise RuntimeError(f"swap_bound {bound}: jobs failed: {failed}; see {home}.log")
    events = [json.loads(line) for line in home.with_suffix(".log").read_text().splitlines()]
    loads = [e for e in events if e.get("event") == "model loaded"]
    seconds = max(r["finished_at"] for r in rows) - min(r["created_at"] for r in rows)
    steps = journal(
        home,
        "SELECT name, COUNT(*) AS n, AVG(finished_at - started_at) AS mean FROM step_runs"
        " GROUP BY name ORDER BY name",
    )
    check_outputs(run / "outputs")
    return {
        "swap_bound": bound,
        "jobs": len(rows),
        "seconds": round(seconds, 1),
        "jobs_per_minute": round(len(rows) * 60 / seconds, 1),
        "swaps": sum(len(e["models"]) for e in loads),
        "model_budget_mb": budget,
        "step_seconds": {r["name"]: round(r["mean"], 3) for r in steps},
    }


def check_outputs(outputs: Path) -> None:
    """What a user would look at: speech to hear, labels, people, translated text."""
    assert len(list(outputs.glob("speech/*/*.wav"))) == ROUNDS_OF_THREE
    assert len(list(outputs.glob("labels/*/manifest.json"))) == ROUNDS_OF_THREE
    people = [json.loads(p.read_text()) for p in outputs.glob("people/*/manifest.json")]
    assert len(people) == ROUNDS_OF_THREE
    assert all(m["steps"][0]["data"] for m in people)
    assert len(list(outputs.glob("scans/*/*.en.txt"))) == ROUNDS_OF_THREE // 5


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="caixa-bench-lane-") as tmp:
        root = Path(tmp)
        arrivals = prepare(root)
        print(f"{len(arrivals)} files, interleaved; models: {', '.join(MODELS)}")
        results = []
        for bound in (8, 0):  # the policy first: any warm-up of the disk cache favours FCFS
            result = serve(root, arrivals, bound)
            results.append(result)
            name = "policy (swap_bound 8)" if bound else "first come, first served"
            print(
                f"{name:<26} {result['jobs_per_minute']:6.1f} jobs/min"
                f"  {result['swaps']:3d} swaps  {result['seconds']:6.1f} s"
                f"  (model budget {result['model_budget_mb']} MB)"
            )
        policy, fcfs = results
        speedup = ratio(policy["jobs_per_minute"], fcfs["jobs_per_minute"])
        print(
            f"policy / FCFS: {speedup}x jobs per minute, {policy['swaps']} vs {fcfs['swaps']} swaps"
        )
        print("mean step seconds (policy):", policy["step_seconds"])
        save("lane", {"policy": policy, "fcfs": fcfs, "speedup": speedup})


if __name__ == "__main__":
    main()
