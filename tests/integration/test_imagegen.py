"""The imagegen step with a real diffusers pipeline (a tiny one with random weights that the
fixture builds and saves, loaded from its folder as any model is), through the real daemon and
by calling the step directly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from caixa.errors import InputError
from caixa.pipelines.base import StepInput
from caixa.pipelines.imagegen import diffusion
from caixa.pipelines.imagegen.step import ImagegenParams, ImagegenStep
from tests.conftest import World

PROMPT = "---\nseed: 1234\n---\nUm farol numa costa rochosa ao entardecer, aquarela.\n"


def rule(name: str, inbox: str, model: Path) -> str:
    params = json.dumps({"model": str(model), "steps": 4, "width": 64, "height": 64})
    return (
        f"  - name: {name}\n    inbox: {inbox}\n    match: {{glob: ['*.prompt']}}\n"
        f"    steps: [{{imagegen: {params}}}]\n    output: '{{rule}}/{{stem}}'\n"
    )


def step_data(world: World, rule_name: str, name: str) -> dict:
    (manifest,) = [
        m
        for m in world.manifests()
        if m["source"]["name"] == name and m["rule"]["name"] == rule_name
    ]
    (step,) = manifest["steps"]
    return step


def error_of(world: World, rule_name: str, name: str) -> str:
    return json.loads((world.failed / rule_name / f"{name}.error.json").read_text())["message"]


def test_prompt_files_become_images_that_the_same_file_makes_again(
    world: World, tiny_sd: Path
) -> None:
    world.write_rules(
        "rules:\n" + rule("prompts", "prompts", tiny_sd) + rule("again", "again", tiny_sd)
    )
    inbox = world.inbox("prompts")
    (inbox / "farol.prompt").write_text(PROMPT, encoding="utf-8")
    (world.inbox("again") / "farol.prompt").write_text(PROMPT, encoding="utf-8")
    (inbox / "wide.prompt").write_text(
        "---\nwidth: 96\nheight: 64\nscheduler: euler_a\n---\nA tall ship in a storm\n"
    )
    (inbox / "typo.prompt").write_text("---\nseed: 3\nstepz: 10\n---\nA cat\n")
    (inbox / "empty.prompt").write_text("---\nseed: 3\n---\n\n  \n")
    result = world.run_once(timeout=300)
    assert "3 done, 0 duplicates, 2 failed" in result.stderr

    first = Image.open(world.outputs / "prompts" / "farol" / "farol.png")
    second = Image.open(world.outputs / "again" / "farol" / "farol.png")
    assert first.size == (64, 64) and first.mode == "RGB"
    # The same file, a second job: the same image, bit for bit on as many threads (the count
    # follows the load); on another count torch sums in another order, a level here and there.
    threads = {
        step_data(world, name, "farol.prompt").get("threads") for name in ("prompts", "again")
    }
    if len(threads) == 1:
        assert first.tobytes() == second.tobytes()
    else:
        assert max(high for _, high in ImageChops.difference(first, second).getextrema()) <= 2
    assert len(set(first.tobytes())) > 50  # an image, not a blank
    parameters = first.text["parameters"]
    assert parameters.startswith("Um farol numa costa rochosa ao entardecer, aquarela.\n")
    assert "Steps: 4, Sampler: PLMS, CFG scale: 7, Seed: 1234, Size: 64x64" in parameters
    facts = json.loads(first.text["caixa"])
    assert facts["prompt"] == "Um farol numa costa rochosa ao entardecer, aquarela."
    assert facts["seed"] == 1234 and facts["seed_drawn"] is False
    data = step_data(world, "prompts", "farol.prompt")
    assert data["artifacts"] == ["farol.png"] and data["models"] == [str(tiny_sd)]
    assert data["data"]["seed"] == 1234 and data["data"]["steps"] == 4
    assert data["data"]["scheduler_class"] == "PNDMScheduler"
    assert data["data"]["seconds_per_image"] > 0  # how fast is bench/imagegen.py's to say

    wide = Image.open(world.outputs / "prompts" / "wide" / "wide.png")
    assert wide.size == (96, 64)
    wide_data = step_data(world, "prompts", "wide.prompt")["data"]
    assert (
        wide_data["seed_drawn"] is True
        and wide_data["seed"] == json.loads(wide.text["caixa"])["seed"]
    )
    assert wide_data["scheduler"] == "euler_a"
    assert wide_data["scheduler_class"] == "EulerAncestralDiscreteScheduler"
    assert (
        f"Sampler: Euler a, CFG scale: 7, Seed: {wide_data['seed']}, Size: 96x64"
        in wide.text["parameters"]
    )

    typo = error_of(world, "prompts", "typo.prompt")
    assert "line 3: unknown key 'stepz'" in typo and "allowed: negative_prompt, steps," in typo
    assert "the prompt is empty" in error_of(world, "prompts", "empty.prompt")


def test_a_bad_size_in_the_rule_is_refused_by_check(world: World, tiny_sd: Path) -> None:
    world.write_rules(
        "rules:\n  - name: prompts\n    inbox: in\n    steps:\n"
        f"      - imagegen: {{model: {tiny_sd}, width: 500}}\n"
    )
    done = world.caixa("check", "--rules", str(world.rules))
    assert done.returncode == 3
    assert "rules.yaml:5: rules[0].steps[0].imagegen.width: " in done.stderr
    assert "give a multiple of 8 from 64 to 2048 pixels" in done.stderr


def job(tmp: Path, text: str, n: int) -> StepInput:
    source = tmp / f"prompt-{n}.prompt"
    source.write_text(text, encoding="utf-8")
    workdir = tmp / f"work-{n}"
    workdir.mkdir()
    return StepInput(f"job-{n}", "prompts", source, "farol.prompt", "text/plain", (), workdir, tmp)


def test_a_scheduler_asked_for_is_used_once_and_the_model_keeps_its_own(
    tmp_path: Path, tiny_sd: Path
) -> None:
    params = ImagegenParams(model=tiny_sd, steps=3, width=64, height=64)
    step = ImagegenStep()
    before = step.run(job(tmp_path, PROMPT, 1), params)
    other = step.run(job(tmp_path, PROMPT.replace("seed:", "scheduler: ddim\nseed:"), 2), params)
    after = step.run(job(tmp_path, PROMPT, 3), params)

    assert other.data["scheduler_class"] == "DDIMScheduler"
    assert after.data["scheduler_class"] == before.data["scheduler_class"] == "PNDMScheduler"
    pixels = [Image.open(r.artifacts[0].path).tobytes() for r in (before, other, after)]
    assert pixels[0] == pixels[2] != pixels[1]
    pipeline = diffusion.load(tiny_sd, "cpu", diffusion.Options())
    assert type(pipeline.pipe.scheduler).__name__ == "PNDMScheduler"  # kept, not reloaded
    assert ImagegenStep.model_of(params) == str(tiny_sd)


def test_a_flow_matching_model_refuses_schedulers_it_cannot_sample_with() -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, PNDMScheduler

    assert diffusion.usable_schedulers(FlowMatchEulerDiscreteScheduler()) == []
    assert {"euler", "ddim", "dpm++", "lcm"} <= set(diffusion.usable_schedulers(PNDMScheduler()))


def test_a_drawn_seed_is_recorded_and_gives_the_same_image_again(
    tmp_path: Path, tiny_sd: Path
) -> None:
    params = ImagegenParams(model=tiny_sd, steps=2, width=64, height=64)
    drawn = ImagegenStep().run(job(tmp_path, "A red bicycle\n", 1), params)
    assert drawn.data["seed_drawn"] is True
    seed = drawn.data["seed"]
    again = ImagegenStep().run(job(tmp_path, f"---\nseed: {seed}\n---\nA red bicycle\n", 2), params)
    images = [Image.open(r.artifacts[0].path).tobytes() for r in (drawn, again)]
    assert images[0] == images[1]


def test_a_prompt_picks_only_models_the_rule_offers(tmp_path: Path, tiny_sd: Path) -> None:
    other = tmp_path / "models" / "other-sd"
    shutil.copytree(tiny_sd, other)
    params = ImagegenParams(model=tiny_sd, models={"other": other}, steps=1, width=64, height=64)
    picked = ImagegenStep().run(job(tmp_path, "---\nmodel: other\n---\nA cat\n", 1), params)
    assert picked.models == [str(other)] and picked.data["model"] == str(other)
    with pytest.raises(InputError, match="model 'sdxl', which this rule does not offer"):
        ImagegenStep().run(job(tmp_path, "---\nmodel: sdxl\n---\nA cat\n", 2), params)


def test_no_model_folder_or_no_text_fails_clearly(tmp_path: Path, tiny_sd: Path) -> None:
    missing = ImagegenParams(model=tmp_path / "nothing-here")
    with pytest.raises(
        Exception, match=r"no diffusers model at .*nothing-here: .* model_index\.json"
    ):
        ImagegenStep().run(job(tmp_path, "A cat\n", 1), missing)
    image = job(tmp_path, "", 2)
    Image.new("RGB", (8, 8)).save(image.source, format="PNG")
    photo = StepInput(
        "p", "prompts", image.source, "cat.png", "image/png", (), image.workdir, tmp_path
    )
    with pytest.raises(InputError, match=r"cat\.png is image/png, not text"):
        ImagegenStep().run(photo, ImagegenParams(model=tiny_sd))


def test_a_prompt_longer_than_the_model_reads_is_marked(tmp_path: Path, tiny_sd: Path) -> None:
    params = ImagegenParams(model=tiny_sd, steps=1, width=64, height=64)
    long = ImagegenStep().run(job(tmp_path, "a lighthouse on a rocky coast " * 20, 1), params)
    assert long.data["prompt_truncated"] is True
    short = ImagegenStep().run(job(tmp_path, "a lighthouse", 2), params)
    assert "prompt_truncated" not in short.data
