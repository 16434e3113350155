"""A tiny but real Stable Diffusion folder, built offline: no diffusers model ships in any package.

A `StableDiffusionPipeline` made from configs (a UNet2DConditionModel, an AutoencoderKL with
SD's 8x latent scale, a CLIPTextModel, a CLIPTokenizer over a byte-level vocabulary written
here, SD 1.5's PNDM scheduler) with random weights drawn from a fixed seed, saved with
`save_pretrained` in the layout of a real model. caixa loads it as it loads any diffusers folder.

ITS IMAGES ARE NOISE: the weights are random. It exercises the real code path, not art.

`python -m tests.tiny_diffusion DEST [tiny|bench]` builds it into DEST (e.g. .demo/models/tiny-sd);
`bench` is a larger, still random configuration whose UNet dominates the time of an image.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

NOTE = (
    "A tiny Stable Diffusion pipeline with RANDOM weights, built by tests/tiny_diffusion.py for "
    "caixa's tests, benchmarks and demo.\nThe images it makes are noise: point caixa at a real "
    "diffusers folder (e.g. SD-Turbo, Stable Diffusion 1.5) for pictures.\n"
)
# name: (UNet channels per block, UNet layers per block, text width, text layers)
SIZES = {"tiny": ((16, 32), 1, 16, 2), "bench": ((64, 128, 256), 2, 64, 2)}


def byte_vocab() -> dict[str, int]:
    """CLIP's byte-level alphabet, each symbol alone and word-final (`</w>`), plus CLIP's
    start and end tokens: any text in any language tokenizes, with no merges to learn."""
    symbols = bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols)}
    vocab |= {f"{s}</w>": len(symbols) + i for i, s in enumerate(symbols)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


def bytes_to_unicode() -> list[str]:
    """GPT-2/CLIP's printable stand-in for each byte value, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


def build(dest: Path, size: str = "tiny", seed: int = 0) -> Path:
    """`dest`, a diffusers folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/,
    scheduler/). Built beside it and renamed into place: whole or not at all."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    channels, layers, width, text_layers = SIZES[size]
    torch.manual_seed(seed)
    blocks = len(channels)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=channels,
        layers_per_block=layers,
        norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D",) * (blocks - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (blocks - 1),
        cross_attention_dim=width,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(  # four blocks: SD's 8x between pixels and latents
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=512,  # as SD 1.5's: images up to 512 px decode whole, larger ones in tiles
    )
    vocab = byte_vocab()
    with tempfile.TemporaryDirectory() as tmp:
        files = Path(tmp)
        (files / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (files / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer = CLIPTokenizer(
            vocab=str(files / "vocab.json"), merges=str(files / "merges.txt"), model_max_length=77
        )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=width,
            intermediate_size=2 * width,
            num_attention_heads=2,
            num_hidden_layers=text_layers,
            max_position_embeddings=77,
            projection_dim=width,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    scheduler = PNDMScheduler(  # Stable Diffusion 1.5's own
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
        set_alpha_to_one=False,
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    dest = dest.resolve()
    part = dest.with_name(dest.name + ".part")
    shutil.rmtree(part, ignore_errors=True)
    pipeline.save_pretrained(part, safe_serialization=True)
    (part / "README.txt").write_text(NOTE, encoding="utf-8")
    shutil.rmtree(dest, ignore_errors=True)
    part.rename(dest)
    return dest


if __name__ == "__main__":  # python -m tests.tiny_diffusion DEST [tiny|bench]
    where = build(Path(sys.argv[1]), *sys.argv[2:3])
    print(f"{where}: a tiny Stable Diffusion with RANDOM weights; its images are noise")
