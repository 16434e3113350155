"""The lanes' thread budget reaches the steps: two multi-page OCR jobs on two CPU lanes never run
more tesseract processes at once than the machine has cores. Every tesseract the daemon starts
goes through a wrapper on PATH that counts, under a lock, how many are running as it starts."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.conftest import World
from tests.documents import PORTUGUESE, scanned_pdf

COUNTER = """#!/bin/bash
# counts the tesseracts running at once: +1 as one starts, -1 as it ends, under a lock
exec 9>>"$TESSERACT_COUNT/lock"
flock 9
now=$(( $(cat "$TESSERACT_COUNT/now" 2>/dev/null || echo 0) + 1 ))
echo "$now" > "$TESSERACT_COUNT/now"
echo "$now" >> "$TESSERACT_COUNT/seen"
flock -u 9
{real} "$@"
status=$?
flock 9
echo $(( $(cat "$TESSERACT_COUNT/now") - 1 )) > "$TESSERACT_COUNT/now"
flock -u 9
exit $status
"""


def test_two_ocr_jobs_on_two_cpu_lanes_start_no_more_tesseracts_than_cores(
    world: World, tmp_path: Path
) -> None:
    real = shutil.which("tesseract")
    assert real is not None
    shims, counts = tmp_path / "bin", tmp_path / "counts"
    shims.mkdir()
    counts.mkdir()
    wrapper = shims / "tesseract"
    wrapper.write_text(COUNTER.format(real=real))
    wrapper.chmod(0o755)
    world.env |= {
        "PATH": f"{shims}{os.pathsep}{world.env['PATH']}",
        "TESSERACT_COUNT": str(counts),
        "CAIXA_CPU_WORKERS": "2",
    }
    world.write_rules("rules:\n  - name: scans\n    inbox: in\n    steps: [ocr]\n")
    inbox = world.inbox()
    pages = [([p], 1) for p in PORTUGUESE]
    for name in ("um.pdf", "dois.pdf"):
        scanned_pdf(inbox / name, pages, dpi=150)

    world.run_once(timeout=600)

    assert world.states() == {"done": 2}
    seen = [int(n) for n in (counts / "seen").read_text().split()]
    assert len(seen) >= 12  # every page of both scans went through the wrapper
    assert max(seen) <= len(os.sched_getaffinity(0))
    manifests = world.manifests()
    assert all("tesseract" in m["steps"][0]["data"]["programs"] for m in manifests)
