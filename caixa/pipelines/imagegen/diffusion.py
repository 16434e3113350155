"""diffusers, behind one module: a text-to-image pipeline from a local folder, kept loaded, and
one image per call with the scheduler and seed the caller asks for.

The pipeline loads once per folder, device and memory settings (caixa.models.load) and stays.
A job that asks for another scheduler gets a fresh one built from the model's own scheduler
config, swapped in for its call only and swapped back after, under the pipeline's lock: the
weights are never loaded again, and the next job finds the model's own scheduler as it was.
Every call gets a fresh scheduler object, so no state of one job's sampling reaches the next.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from caixa import models
from caixa.errors import InputError, StepError

if TYPE_CHECKING:
    from PIL.Image import Image

MODULE = "diffusers"
Offload = Literal["auto", "on", "off"]
# "auto" offloads models to the CPU between uses when the weights would take more than this
# share of the GPU's memory: the rest must hold the CUDA context and an image's activations
# (Stable Diffusion 1.5 in float16: 2.1 GB of weights, which a 4 GB card holds without offload;
# SD-Turbo's 2.6 GB and SDXL's 7 GB it does not).
OFFLOAD_ABOVE = 0.6


@dataclass(frozen=True)
class Sampler:
    """A scheduler a prompt may ask for by caixa's name for it."""

    cls: str  # the diffusers class
    label: str  # what AUTOMATIC1111 and most tools call it, for the PNG's `parameters`
    options: dict[str, Any] = field(default_factory=dict)


SCHEDULERS: dict[str, Sampler] = {
    "euler": Sampler("EulerDiscreteScheduler", "Euler"),
    "euler_a": Sampler("EulerAncestralDiscreteScheduler", "Euler a"),
    "heun": Sampler("HeunDiscreteScheduler", "Heun"),
    "lms": Sampler("LMSDiscreteScheduler", "LMS"),
    "ddim": Sampler("DDIMScheduler", "DDIM"),
    "ddpm": Sampler("DDPMScheduler", "DDPM"),
    "pndm": Sampler("PNDMScheduler", "PLMS"),
    "dpm++": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M"),
    "dpm++_karras": Sampler("DPMSolverMultistepScheduler", "DPM++ 2M Karras",
                            {"use_karras_sigmas": True}),
    "unipc": Sampler("UniPCMultistepScheduler", "UniPC"),
    "lcm": Sampler("LCMScheduler", "LCM"),
}  # fmt: skip


@dataclass(frozen=True)
class Options:
    """How the pipeline is held in memory; part of its cache key."""

    attention_slicing: bool = False
    vae_tiling: bool = True
    cpu_offload: Offload = "auto"


@dataclass
class Pipeline:
    """A loaded pipeline, where it runs, and the lock that makes its scheduler swap safe."""

    pipe: Any
    device: str
    dtype: str
    offloaded: bool
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(frozen=True)
class Request:
    prompt: str
    negative_prompt: str
    steps: int
    guidance: float
    width: int
    height: int
    seed: int
    scheduler: str | None  # a SCHEDULERS name; None: the model's own


@dataclass(frozen=True)
class Generated:
    image: Image
    scheduler: str  # the diffusers class that sampled it
    label: str  # its common name
    seconds: float
    truncated: bool  # the prompt was longer than the text encoder reads (77 tokens for CLIP)
    flagged: bool  # the model's safety checker blanked the image


def check_folder(path: Path) -> None:
    """A clear error for anything but a diffusers folder, before diffusers gives a vague one."""
    if path.is_file():
        raise StepError(
            f"{path} is a single file; caixa loads diffusers folders (model_index.json with "
            "unet/, vae/, text_encoder/...). Convert a single-file checkpoint with diffusers' "
            "conversion scripts first"
        )
    if not (path / "model_index.json").is_file():
        raise StepError(
            f"no diffusers model at {path}: point `model` at a folder that holds "
            "model_index.json (a diffusers save_pretrained folder, e.g. a copy of SD-Turbo)"
        )


def load(path: Path, device: str, options: Options) -> Pipeline:
    """The pipeline in `path` on `device`, loaded once per process and then kept."""
    dtype = "float32" if device == "cpu" else "float16"  # half precision is slow on CPUs
    key = f"diffusers:{path}:{device}:{dtype}:{options}"
    return models.load(key, lambda: _load(path, device, dtype, options))


def _load(path: Path, device: str, dtype: str, options: Options) -> Pipeline:
    check_folder(path)
    import torch
    import transformers
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()  # loading bars: noise in a daemon's log
    transformers.utils.logging.disable_progress_bar()
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(
            path, local_files_only=True, dtype=getattr(torch, dtype)
        )
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
        raise StepError(f"cannot load the diffusers model at {path}: {exc}") from exc
    pipe.set_progress_bar_config(disable=True)  # and the sampling steps' bar
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.vae_tiling and hasattr(pipe, "vae"):
        pipe.vae.enable_tiling()  # large images decode tile by tile; small ones as they are
    offload = device != "cpu" and (
        options.cpu_offload == "on"
        or (options.cpu_offload == "auto" and _weights(pipe) > OFFLOAD_ABOVE * _memory(device))
    )
    if offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    return Pipeline(pipe, device, dtype, offload)


def _weights(pipe: Any) -> int:
    """Bytes of all the pipeline's weights."""
    import torch

    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


def _memory(device: str) -> int:
    import torch

    return torch.cuda.get_device_properties(torch.device(device)).total_memory


def generate(pipeline: Pipeline, request: Request) -> Generated:
    """One image. The same request on the same device gives the same image again."""
    import torch

    pipe = pipeline.pipe
    with pipeline.lock:
        own = pipe.scheduler
        sampler = SCHEDULERS[request.scheduler] if request.scheduler else None
        if sampler is None:
            scheduler = type(own).from_config(own.config)
        else:
            import diffusers

            usable = usable_schedulers(own)
            if request.scheduler not in usable:
                raise InputError(
                    f"scheduler {request.scheduler!r} cannot sample this model (its own is "
                    f"{type(own).__name__}); it takes: {', '.join(usable) or 'only its own'}"
                )
            scheduler_cls = getattr(diffusers, sampler.cls)
            scheduler = scheduler_cls.from_config(own.config, **sampler.options)
        generator = torch.Generator(pipeline.device).manual_seed(request.seed)
        pipe.scheduler = scheduler
        try:
            started = time.perf_counter()
            out = pipe(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or None,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                width=request.width,
                height=request.height,
                generator=generator,
            )
            seconds = time.perf_counter() - started
        except torch.cuda.OutOfMemoryError as exc:
            raise StepError(
                f"the GPU ran out of memory for a {request.width}x{request.height} image: "
                "ask for a smaller size, or set cpu_offload: on (or attention_slicing: true) "
                "in the rule"
            ) from exc
        finally:
            pipe.scheduler = own
    flagged = getattr(out, "nsfw_content_detected", None) or [False]
    name = type(scheduler).__name__
    return Generated(
        out.images[0], name, label(name, sampler), seconds, _too_long(pipe, request.prompt),
        bool(flagged[0]),
    )  # fmt: skip


def usable_schedulers(own: Any) -> list[str]:
    """caixa's names for the schedulers that can replace a model's own: those diffusers lists
    as compatible, and LCM for any model trained as DDPM (LCM-LoRA and LCM-distilled models;
    diffusers leaves it off the list). A flow-matching model (SD3, Flux) takes only its own."""
    classes = {c.__name__ for c in own.compatibles} | {type(own).__name__}
    if "DDPMScheduler" in classes:
        classes.add("LCMScheduler")
    return [name for name, s in SCHEDULERS.items() if s.cls in classes]


def _too_long(pipe: Any, prompt: str) -> bool:
    """Whether the text encoder reads only the start of the prompt (diffusers cuts it)."""
    tokenizer = getattr(pipe, "tokenizer", None)
    if tokenizer is None:
        return False
    return len(tokenizer(prompt).input_ids) > tokenizer.model_max_length


def label(cls: str, sampler: Sampler | None) -> str:
    """The common name of the scheduler that sampled; a model's own is named by its class."""
    if sampler is None:
        sampler = next((s for s in SCHEDULERS.values() if s.cls == cls and not s.options), None)
    return sampler.label if sampler else cls
