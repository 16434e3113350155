"""The tts step called directly, with the real Piper voice and the real espeak-ng: Markdown read
as a reader hears it, the rule's speed and voices obeyed, and a 5,000-word text spoken into
one WAV in the memory of one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile
from pydantic import ValidationError

from caixa import models
from caixa.errors import InputError, StepError
from caixa.pipelines.base import StepInput, StepResult
from caixa.pipelines.common.sentences import pieces
from caixa.pipelines.speech import piper
from caixa.pipelines.speech.plaintext import from_markdown
from caixa.pipelines.speech.step import MAX_WORDS, TtsParams, TtsStep

ROOT = Path(__file__).resolve().parents[2]
ENGLISH = "The monthly rent is paid by bank transfer. The tenant leaves a deposit of two months."


def speak(tmp_path: Path, name: str, content: str | bytes, **params: object) -> StepResult:
    source = tmp_path / name
    if isinstance(content, str):
        content = content.encode()
    source.write_bytes(content)
    work = tmp_path / f"work-{name}"
    work.mkdir()
    media_type = "image/png" if name.endswith(".png") else "text/plain"
    job = StepInput("job", "speak", source, name, media_type, (), work, tmp_path)
    return TtsStep().run(job, TtsParams.model_validate(params))


def seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return wav.getnframes() / wav.getframerate()


def test_markdown_is_read_as_its_words() -> None:
    document = (
        "# Rent\n"
        "**Paid** by [bank transfer](https://bank.example/pay) and `cash`, see <https://x.io>.\n"
        "![a photo of the flat](flat.jpg) <b>Deposit</b> &amp; keys\n\n"
        "- two months\n- keys, *three*\n\n"
        "```python\nprint('never read aloud')\n```\n\n"
        "| room | size |\n|---|---|\n| kitchen | small |\n\n"
        "> Quoted \\*stars\\*\n\n---\n"
    )
    assert from_markdown(document) == (
        "Rent.\n\n"
        "Paid by bank transfer and cash, see . Deposit & keys\n\n"
        "two months.\n\nkeys, three.\n\n"
        "room, size.\n\nkitchen, small.\n\n"
        "Quoted *stars*\n\n"
    )
    assert from_markdown("# \n---\n**  **\n") == ""


def test_long_sentences_are_cut_into_short_pieces_and_no_word_is_lost() -> None:
    run_on = "Then " + " ".join(f"w{i}," if i % 23 == 22 else f"w{i}" for i in range(200)) + "."
    paragraph = f"A short one. {run_on} The end."
    cut = pieces(paragraph, MAX_WORDS)
    assert cut[0] == "A short one." and cut[-1] == "The end."
    assert max(len(p.split()) for p in cut) <= MAX_WORDS
    assert " ".join(cut).split() == paragraph.split()
    assert cut[1].endswith(" w22,")  # cut after a comma once past half the limit


def test_speed_voice_by_path_and_the_manifest(tmp_path: Path) -> None:
    packaged = models.locate("en_US-joe-medium")
    own = tmp_path / "voices" / "my-voice.onnx"  # a user's voice: any .onnx with its json
    own.parent.mkdir()
    own.symlink_to(packaged)
    own.with_name("my-voice.onnx.json").symlink_to(f"{packaged}.json")

    normal = speak(tmp_path, "normal.txt", ENGLISH, sentence_silence=0)
    fast = speak(
        tmp_path,
        "fast.txt",
        ENGLISH,
        sentence_silence=0,
        speed=2,
        speaker=3,
        voices={"en": str(own)},
    )
    assert normal.data["engine"] == fast.data["engine"] == "piper"
    assert (normal.data["voice"], fast.data["voice"]) == ("en_US-joe-medium", "my-voice")
    assert normal.models == ["py3langid", "en_US-joe-medium"]
    assert fast.models == ["py3langid", str(own)]
    assert "speaker" not in fast.data  # joe has one speaker: ignored, as Piper does
    assert 0.35 < fast.data["duration_seconds"] / normal.data["duration_seconds"] < 0.7
    assert seconds(normal.artifacts[0].path) == pytest.approx(normal.data["duration_seconds"], 0.01)
    assert normal.data["sample_rate"] == 22050 and normal.data["characters"] == len(ENGLISH)
    assert normal.data["real_time_factor"] > 0  # how fast is bench/tts.py's to say

    assert TtsStep.model_of(TtsParams()) == "en_US-joe-medium"
    assert TtsStep.model_of(TtsParams(language="en", voices={"en": str(own)})) == str(own)
    assert TtsStep.model_of(TtsParams(language="pt")) is None  # espeak-ng loads no model
    assert TtsStep.model_of(TtsParams(voices={"pt": str(own)})) is None  # the text decides


def test_forced_language_and_an_espeak_voice_by_name(tmp_path: Path) -> None:
    result = speak(
        tmp_path,
        "nota.txt",
        "Bom dia. O contrato foi assinado.",
        language="pt",
        voices={"pt": "espeak-ng:pt"},
        compress="mp3",
    )
    assert (result.data["engine"], result.data["voice"]) == ("espeak-ng", "pt")
    assert "language_confidence" not in result.data and result.models == ["espeak-ng pt"]
    assert [a.name for a in result.artifacts] == ["nota.wav", "nota.mp3"]
    mp3 = soundfile.info(str(result.artifacts[1].path))
    assert mp3.format == "MP3" and mp3.duration == pytest.approx(
        result.data["duration_seconds"], 0.05
    )


def test_speakers_by_id_or_name_on_a_voice_with_several() -> None:
    joe = piper.load("en_US-joe-medium", "cpu", 1)
    names = {"ana": 0, "bruno": 1, "carla": 2}
    several = replace(joe, config=replace(joe.config, num_speakers=3, speaker_id_map=names))
    assert piper.speaker_id(several, "bruno") == 1 and piper.speaker_id(several, 2) == 2
    assert piper.speaker_id(several, None) is None and piper.speaker_id(joe, 2) is None
    with pytest.raises(StepError, match=r"no speaker 'zeca' \(speakers: ana, bruno, carla\)"):
        piper.speaker_id(several, "zeca")
    with pytest.raises(StepError, match="speakers 0 to 2; speaker 3 is not one"):
        piper.speaker_id(several, 3)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"voices": {"pt": "voices/pt.onnx"}}, "give a packaged voice"),
        ({"voices": {"pt": "/nowhere/pt_BR-x.onnx"}}, "no Piper voice at /nowhere/pt_BR-x.onnx"),
        ({"voices": {"portuguese": "espeak-ng:pt"}}, "give a language code"),
        ({"voices": {"pt": "espeak-ng:"}}, "name the espeak-ng voice"),
        ({"language": "klingon"}, "give a language code"),
        ({"speed": 9}, "less than or equal to 2.5"),
        ({"compress": "flac"}, "'none', 'ogg' or 'mp3'"),
    ],
)
def test_bad_params_are_refused_when_the_rules_are_checked(
    params: dict[str, object], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        TtsParams.model_validate(params)


def test_a_voice_missing_its_config_and_text_to_nowhere_fail_clearly(tmp_path: Path) -> None:
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"not a model")
    with pytest.raises(ValidationError, match=r"has no config beside it \(lone.onnx.json\)"):
        TtsParams(voices={"en": str(lone)})
    with pytest.raises(InputError, match="put an ocr or text step before it"):
        speak(tmp_path, "photo.png", b"\x89PNG\r\n\x1a\n")
    with pytest.raises(StepError, match="espeak-ng has no voice 'xx-nowhere'"):
        speak(tmp_path, "a.txt", ENGLISH, voices={"en": "espeak-ng:xx-nowhere"})


PORTUGUESE = [
    "O contrato de aluguel foi assinado ontem pelas duas partes.",
    "A biblioteca municipal abriu uma nova sala de leitura no centro.",
    "Os estudantes chegaram cedo por causa da chuva forte.",
    "O pagamento deve ser feito até o dia dez de cada mês, por transferência bancária.",
    "A reunião do conselho foi adiada para a próxima semana.",
    "Ela comprou pão, leite e frutas na feira do bairro.",
]
MEASURE = """
import json, sys
from pathlib import Path
from caixa.pipelines.base import StepInput
from caixa.pipelines.speech.step import TtsParams, TtsStep

def run(name, text):
    folder = Path(sys.argv[1]) / name
    (folder / "work").mkdir(parents=True)
    (folder / "source.txt").write_text(text, encoding="utf-8")
    job = StepInput("job", "r", folder / "source.txt", "source.txt", "text/plain", (),
                    folder / "work", folder)
    return TtsStep().run(job, TtsParams())

def peak_mb():
    with open("/proc/self/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmHWM:")) / 1024

run("warm", "Bom dia. O contrato foi assinado.")  # imports, the detector, the first piece
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the peak RSS starts again from here
before = peak_mb()
result = run("long", sys.stdin.read())
print(json.dumps({"growth_mb": peak_mb() - before, "wav": str(result.artifacts[0].path),
                  "artifacts": len(result.artifacts), "data": result.data}))
"""


def test_a_5000_word_text_becomes_one_wav_in_the_memory_of_a_sentence(tmp_path: Path) -> None:
    sentences = [f"{s[:-1]}, na página {n}." for n in range(100) for s in PORTUGUESE]
    paragraphs = [" ".join(sentences[i : i + 4]) for i in range(0, len(sentences), 4)]
    text = "\n\n".join(paragraphs) + "\n"
    words = len(text.split())
    assert words >= 5000
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(tmp_path)],
        input=text,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=True,
    )
    measured = json.loads(done.stdout)
    wav = Path(measured["wav"])
    assert measured["artifacts"] == 1 and measured["data"]["engine"] == "espeak-ng"
    assert measured["data"]["pieces"] >= len(sentences)
    duration = seconds(wav)
    assert 0.2 * words < duration < 1.0 * words  # ~56 minutes, pauses included
    assert wav.stat().st_size > 60e6  # had it been held in memory, the process would show it
    assert measured["growth_mb"] < 20, measured
