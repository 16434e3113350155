"""The imagegen step: a prompt file -> `<stem>.png`, drawn by a diffusers model from a folder.

A prompt file is text in any encoding, with optional YAML front matter above it that sets this
one image's negative prompt, steps, guidance, size, seed, scheduler, or one of the models the
rule offers; the rule's parameters fill in the rest. The seed is drawn when the file gives none,
and it is recorded with every other setting in the PNG and the manifest: the same settings give
the same image again.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any, ClassVar

from PIL.PngImagePlugin import PngInfo
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)

from caixa import models
from caixa.errors import InputError
from caixa.filetypes import is_text
from caixa.pipelines.base import (
    Artifact,
    BaseStep,
    Requirements,
    Resource,
    StepInput,
    StepResult,
    rules_folder,
)
from caixa.pipelines.common.text import decode
from caixa.pipelines.common.threads import use_torch_threads
from caixa.pipelines.imagegen import diffusion, frontmatter

SIDES = (64, 2048)  # pixels; beyond 2048 a 4 GB GPU or 16 GB of RAM cannot decode the image
MAX_STEPS = 150
SEED_BITS = 32  # drawn seeds fit the 32 bits that AUTOMATIC1111 and ComfyUI show


def _side(value: int) -> int:
    low, high = SIDES
    if not low <= value <= high or value % 8:
        # the VAE makes 8 pixels of every latent cell
        raise ValueError(f"give a multiple of 8 from {low} to {high} pixels")
    return value


def _scheduler(value: str) -> str:
    if value not in diffusion.SCHEDULERS:
        raise ValueError(f"unknown scheduler (known: {', '.join(diffusion.SCHEDULERS)})")
    return value


Side = Annotated[int, AfterValidator(_side)]
Steps = Annotated[int, Field(ge=1, le=MAX_STEPS)]
Guidance = Annotated[float, Field(ge=0, le=30)]
Scheduler = Annotated[str, AfterValidator(_scheduler)]
Seed = Annotated[int, Field(ge=0, le=2**64 - 1)]  # torch's range


class ImagegenParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Path  # a diffusers folder (model_index.json, unet/, vae/, ...)
    models: dict[str, Path] = Field(default_factory=dict)  # more, by a name prompts may pick
    negative_prompt: str = ""
    steps: Steps = 25
    guidance: Guidance = 7.0  # 0 for distilled models such as SD-Turbo
    width: Side = 512
    height: Side = 512
    scheduler: Scheduler | None = None  # None: the model's own
    attention_slicing: bool = False  # slower with torch's SDPA; for GPUs short of memory
    vae_tiling: bool = True  # decode large images in tiles (no effect below the VAE's size)
    cpu_offload: diffusion.Offload = "auto"  # auto: when the weights crowd the GPU

    @field_validator("model")
    @classmethod
    def _model(cls, value: Path, info: ValidationInfo) -> Path:
        return Path(models.place(value, rules_folder(info)))

    @field_validator("models")
    @classmethod
    def _models(cls, value: dict[str, Path], info: ValidationInfo) -> dict[str, Path]:
        return {name: Path(models.place(p, rules_folder(info))) for name, p in value.items()}


class PromptSettings(BaseModel):
    """What a prompt file's front matter may set for its own image."""

    model_config = ConfigDict(extra="forbid")

    negative_prompt: str | None = None
    steps: Steps | None = None
    guidance: Guidance | None = None
    width: Side | None = None
    height: Side | None = None
    seed: Seed | None = None
    scheduler: Scheduler | None = None
    model: str | None = None  # a name from the rule's `models`


# the settings a rule gives and a prompt may override, named as in diffusion.Request
SHARED = {"negative_prompt", "steps", "guidance", "width", "height", "scheduler"}


class ImagegenStep(BaseStep):
    name: ClassVar[str] = "imagegen"
    resource: ClassVar[Resource] = Resource.accelerator
    Params: ClassVar[type[BaseModel]] = ImagegenParams
    requires: ClassVar[Requirements] = Requirements(
        modules=(diffusion.MODULE, "transformers", "accelerate", "torch"), extra="imagegen"
    )

    @classmethod
    def threads_follow(cls, params: Any) -> bool:
        return True  # torch: a count per call

    @classmethod
    def backend_of(cls, params: Any) -> str | None:
        return "torch"

    @classmethod
    def model_of(cls, params: ImagegenParams) -> str:
        return str(params.model)

    @classmethod
    def lighter(cls, params: ImagegenParams) -> ImagegenParams | None:
        """Every memory saver on: the same image, drawn slower with less on the GPU."""
        savers = {"attention_slicing": True, "vae_tiling": True, "cpu_offload": "on"}
        if all(getattr(params, k) == v for k, v in savers.items()):
            return None
        return params.model_copy(update=savers)

    def run(self, job: StepInput, params: ImagegenParams) -> StepResult:
        own, prompt = read_prompt(job)
        model = choose_model(params, own.model)
        seed = own.seed if own.seed is not None else secrets.randbits(SEED_BITS)
        settings = params.model_dump(include=SHARED) | own.model_dump(
            include=SHARED, exclude_none=True
        )
        request = diffusion.Request(prompt=prompt, seed=seed, **settings)
        options = diffusion.Options(params.attention_slicing, params.vae_tiling, params.cpu_offload)
        pipeline = diffusion.load(model, job.device, options)
        use_torch_threads(job.threads)  # torch, imported by the first load, starts on the share
        made = diffusion.generate(pipeline, request)
        facts: dict[str, Any] = {
            "prompt": prompt,
            "negative_prompt": request.negative_prompt,
            "seed": seed,
            "seed_drawn": own.seed is None,
            "steps": request.steps,
            "guidance": request.guidance,
            "width": request.width,
            "height": request.height,
            "scheduler": request.scheduler,  # None: the model's own
            "scheduler_class": made.scheduler,
            "model": str(model),
            "device": pipeline.device,
            "dtype": pipeline.dtype,
        }
        target = job.workdir / "image.png"
        made.image.save(target, pnginfo=png_text(facts, made.label, model))
        data = facts | {
            "cpu_offload": pipeline.offloaded,
            "seconds_per_image": round(made.seconds, 3),
        }
        if made.truncated:
            data["prompt_truncated"] = True  # the model read only its first words
        if made.flagged:
            data["blanked_by_safety_checker"] = True
        return StepResult(
            [Artifact(f"{job.stem}.png", target, "image/png")], data=data, models=[str(model)]
        )


def read_prompt(job: StepInput) -> tuple[PromptSettings, str]:
    """The file's own settings and its prompt; a clear error for anything else."""
    if not is_text(job.media_type):
        raise InputError(
            f"imagegen draws what a prompt file says, and {job.source_name} is "
            f"{job.media_type}, not text: point this rule's `match` at prompt files"
        )
    text = decode(job.source.read_bytes(), "auto", job.media_type)[0]
    own, body = frontmatter.parse(text, PromptSettings)
    prompt = body.strip()
    if not prompt:
        raise InputError(
            "the prompt is empty: write what to draw in the file (below the front matter, "
            "if it has one)"
        )
    return own, prompt


def choose_model(params: ImagegenParams, name: str | None) -> Path:
    if name is None:
        return params.model
    if name not in params.models:
        offered = ", ".join(params.models) or "none"
        raise InputError(
            f"the front matter asks for model {name!r}, which this rule does not offer "
            f"(models: {offered}); add it under the imagegen step's `models` in the rule"
        )
    return params.models[name]


def png_text(facts: dict[str, Any], label: str, model: Path) -> PngInfo:
    """The settings in the PNG: `parameters` as AUTOMATIC1111 writes it (which most image
    tools read back) and all of them as JSON in `caixa`."""
    lines = [facts["prompt"]]
    if facts["negative_prompt"]:
        lines.append(f"Negative prompt: {facts['negative_prompt']}")
    lines.append(
        f"Steps: {facts['steps']}, Sampler: {label}, CFG scale: {facts['guidance']:g}, "
        f"Seed: {facts['seed']}, Size: {facts['width']}x{facts['height']}, Model: {model.name}"
    )
    info = PngInfo()
    info.add_text("parameters", "\n".join(lines))
    info.add_itxt("caixa", json.dumps(facts, ensure_ascii=False))
    info.add_text("Software", "caixa")
    return info
