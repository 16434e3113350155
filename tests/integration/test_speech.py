"""Text to speech through the real daemon: English with the packaged Piper voice, Portuguese
with espeak-ng, Markdown read without its markup, and texts with nothing to say refused."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import soundfile

from caixa.daemon.worker.device import GPU_DEVICES
from caixa.pipelines.speech.plaintext import from_markdown
from tests.conftest import World

RULES = """
rules:
  - name: speak
    inbox: in
    match: {glob: ["*.txt", "*.md"]}
    steps: [text, {tts: {compress: ogg}}]
    output: "{stem}"
"""
ENGLISH = (
    "The library opened a new reading room on the second floor. Students arrive early because "
    "of the rain, and the librarian lends them umbrellas.\n\n"
    "The room is quiet, bright and warm. It closes at nine in the evening.\n"
)
PORTUGUESE = (
    "A biblioteca municipal abriu uma nova sala de leitura. Os estudantes chegam cedo por causa "
    "da chuva, e a bibliotecária empresta guarda-chuvas.\n"
)
MARKDOWN = (
    "# Reading room\n\n"
    "The **new** room is on the [second floor](https://library.example/map).\n\n"
    "- quiet\n- bright\n\n"
    "```\nopen_room(floor=2)\n```\n"
)
SECONDS_PER_WORD = (0.2, 1.0)  # measured ~0.35 (Piper) and ~0.4 (espeak-ng), pauses included
RMS_FLOOR = 500  # of 32767; these voices speak at ~3000, silence is 0


def step_of(world: World, name: str) -> dict:
    (manifest,) = [m for m in world.manifests() if m["source"]["name"] == name]
    (step,) = [s for s in manifest["steps"] if s["name"] == "tts"]
    return step


def heard(world: World, stem: str, words: int) -> tuple[float, float]:
    """The WAV's duration and RMS, after checking that its length fits the words."""
    with wave.open(str(world.outputs / stem / f"{stem}.wav")) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        duration = wav.getnframes() / wav.getframerate()
    low, high = SECONDS_PER_WORD
    assert low * words < duration < high * words, (stem, duration, words)
    rms = float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
    assert rms > RMS_FLOOR, (stem, rms)
    return duration, rms


def test_texts_become_speech_in_their_language_and_bad_ones_fail_clearly(world: World) -> None:
    world.write_rules(RULES)
    inbox = world.inbox()
    (inbox / "library.txt").write_text(ENGLISH)
    (inbox / "biblioteca.txt").write_text(PORTUGUESE)
    (inbox / "room.md").write_text(MARKDOWN)
    (inbox / "blank.txt").write_text("  \n\n \t\n")
    (inbox / "markup.md").write_text("# \n---\n**  **\n")
    done = world.run_once()
    assert "3 done, 0 duplicates, 2 failed" in done.stderr, done.stderr

    duration, _ = heard(world, "library", len(ENGLISH.split()))
    english = step_of(world, "library.txt")
    assert english["data"]["engine"] == "piper" and english["data"]["language"] == "en"
    assert english["data"]["voice"] == "en_US-joe-medium"
    assert english["data"]["duration_seconds"] == round(duration, 2)
    assert english["models"] == ["py3langid", "en_US-joe-medium"]
    assert english["artifacts"] == ["library.wav", "library.ogg"]
    if not any(Path(node).exists() for node in GPU_DEVICES):  # this machine: no GPU
        assert english["device"] == "cpu"
        assert english["device_reason"].startswith("cpu: no GPU device node (/dev/nvidiactl")
    ogg = soundfile.info(str(world.outputs / "library" / "library.ogg"))
    assert ogg.format == "OGG" and ogg.subtype == "VORBIS"
    assert abs(ogg.duration - duration) < 0.1

    heard(world, "biblioteca", len(PORTUGUESE.split()))
    portuguese = step_of(world, "biblioteca.txt")["data"]
    assert (portuguese["engine"], portuguese["language"]) == ("espeak-ng", "pt")
    assert portuguese["voice"] == "pt-br"

    spoken = from_markdown(MARKDOWN)  # "Reading room. The new room is on the second floor..."
    assert "https" not in spoken and "open_room" not in spoken and "**" not in spoken
    heard(world, "room", len(spoken.split()))
    assert step_of(world, "room.md")["data"]["characters"] == len(spoken)

    for name, words in {
        "blank.txt": "no text to speak: blank.txt is empty or only spaces",
        "markup.md": "no text to speak: markup.md has only Markdown markup",
    }.items():
        error = json.loads((world.failed / "speak" / f"{name}.error.json").read_text())
        assert words in error["message"] and error["step"] == "tts"


def test_a_missing_voice_is_named_when_the_rules_are_checked(world: World) -> None:
    world.write_rules(
        "rules:\n  - name: speak\n    inbox: in\n    steps:\n"
        "      - tts: {voices: {pt: /models/pt_BR-faber-medium.onnx}}\n"
    )
    world.inbox()
    done = world.caixa("check", "--rules", str(world.rules))
    assert done.returncode == 3
    assert "rules.yaml:5" in done.stderr + done.stdout
    assert "no Piper voice at /models/pt_BR-faber-medium.onnx" in done.stderr + done.stdout
