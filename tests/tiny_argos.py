"""A tiny but real .argosmodel, built offline: no argos model ships in any package.

A SentencePiece model trained on a few lines, a randomly initialised Marian model of a few
thousand weights made from a transformers config, converted to CTranslate2 as argos' own
models are, and zipped in the .argosmodel layout (one folder: metadata.json, model/,
sentencepiece.model). Its translations are gibberish; loading and running it is the real path.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

LINES = [
    "O contrato de aluguel foi assinado em março.",
    "The rental agreement was signed in March.",
    "A reunião foi adiada para a próxima semana.",
    "The meeting was postponed until next week.",
    "Por favor, envie os documentos assinados hoje.",
    "Please send the signed documents today.",
]


def build(dest: Path, source: str = "pt", target: str = "en") -> Path:
    """`dest/translate-<source>_<target>-tiny.argosmodel`."""
    import sentencepiece as spm
    import torch
    from ctranslate2.converters import TransformersConverter
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    name = f"translate-{source}_{target}-tiny"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        package, hf = work / name, work / "hf"
        package.mkdir()
        hf.mkdir()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(LINES * 3),
            model_prefix=str(package / "sentencepiece"),
            vocab_size=80,
            hard_vocab_limit=False,
            character_coverage=1.0,
            minloglevel=2,
        )
        (package / "sentencepiece.vocab").unlink()
        pieces = spm.SentencePieceProcessor(model_file=str(package / "sentencepiece.model"))
        vocab = {pieces.id_to_piece(i): i for i in range(pieces.get_piece_size())}
        pad = vocab["<pad>"] = len(vocab)  # Marian's decoder start; CTranslate2 drops it
        (hf / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        for side in ("source", "target"):
            shutil.copy(package / "sentencepiece.model", hf / f"{side}.spm")
        MarianTokenizer(
            source_spm=str(hf / "source.spm"),
            target_spm=str(hf / "target.spm"),
            vocab=str(hf / "vocab.json"),
        ).save_pretrained(hf)
        torch.manual_seed(0)
        config = MarianConfig(
            vocab_size=len(vocab),
            d_model=16,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=32,
            decoder_ffn_dim=32,
            max_position_embeddings=512,
            pad_token_id=pad,
            eos_token_id=vocab["</s>"],
            decoder_start_token_id=pad,
        )
        model = MarianMTModel(config)
        with torch.no_grad():  # random weights may end a sentence at once: never end early
            model.final_logits_bias[0, vocab["</s>"]] = -1e4
        model.save_pretrained(hf)
        TransformersConverter(str(hf)).convert(str(package / "model"))
        metadata = {
            "package_version": "0.1",
            "argos_version": "1.11",
            "from_code": source,
            "from_name": source,
            "to_code": target,
            "to_name": target,
            "type": "translate",
        }
        (package / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
        dest.mkdir(parents=True, exist_ok=True)
        out, part = dest / f"{name}.argosmodel", dest / f"{name}.part"
        with zipfile.ZipFile(part, "w") as archive:
            for file in sorted(package.rglob("*")):
                archive.write(file, file.relative_to(work))
        part.replace(out)  # whole or not at all: tests cache the file
        return out


if __name__ == "__main__":  # python -m tests.tiny_argos DEST pt:en en:es ...
    for pair in sys.argv[2:]:
        print(build(Path(sys.argv[1]), *pair.split(":")))
