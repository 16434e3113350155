"""The detect and classify steps run directly on real photos with the real packaged models (each
loaded once for the whole module), and the image guards they share with ocr."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from caixa.errors import InputError, StepError
from caixa.pipelines.base import StepResult
from caixa.pipelines.common.images import load_photo
from caixa.pipelines.vision import yolo
from caixa.pipelines.vision.classify import ClassifyParams, ClassifyStep
from caixa.pipelines.vision.detect import DetectParams, DetectStep
from tests.documents import job_for, png_claiming
from tests.photos import BUS, VEHICLES, ZIDANE

ORIENTATION = 0x0112  # the EXIF tag; 6: "turn 90 degrees clockwise to view"


def detect(source: Path, workdir: Path, **params: Any) -> StepResult:
    return DetectStep().run(job_for(source, workdir), DetectParams.model_validate(params))


def classify(source: Path, workdir: Path, **params: Any) -> StepResult:
    return ClassifyStep().run(job_for(source, workdir), ClassifyParams.model_validate(params))


def files(result: StepResult) -> dict[str, Path]:
    return {a.name: a.path for a in result.artifacts}


def test_people_are_found_in_bus_and_zidane_with_boxes_inside_the_photo(tmp_path: Path) -> None:
    for photo, at_least, size in [(BUS, 3, (810, 1080)), (ZIDANE, 2, (1280, 720))]:
        result = detect(photo, tmp_path / photo.stem)
        out = files(result)
        stem = photo.stem
        assert sorted(out) == sorted(
            [f"{stem}.detections.json", f"{stem}.annotated.jpg", f"{stem}.detections.txt"]
        )
        report = json.loads(out[f"{stem}.detections.json"].read_text())
        assert (report["width"], report["height"]) == size
        people = report["detections"]
        assert len(people) >= at_least, people
        for found in people:
            x1, y1, x2, y2 = found["box"]
            assert 0 <= x1 < x2 <= size[0] and 0 <= y1 < y2 <= size[1], found
            assert found["label"] in ("Normal", "Fall") and 0.25 <= found["confidence"] <= 1
        with Image.open(out[f"{stem}.annotated.jpg"]) as drawn:
            assert (drawn.format, drawn.size) == ("JPEG", size)
            drawn.load()  # the whole file decodes
        assert result.data["detections"] == len(people) == sum(report["counts"].values())
        assert result.data["model"] == "fall-detection" and result.models == ["fall-detection"]
        words = out[f"{stem}.detections.txt"].read_text()
        assert words.startswith(f"{photo.name}: ") and "Normal (person)" in words


def test_boxes_are_in_the_frame_the_exif_orientation_shows(tmp_path: Path) -> None:
    """A camera held sideways stores the pixels on their side and says so in EXIF: the boxes
    must be those of the photo as a viewer shows it, upright."""
    upright = detect(BUS, tmp_path / "upright")
    sideways = tmp_path / "sideways.jpg"
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    with Image.open(BUS) as img:
        img.transpose(Image.Transpose.ROTATE_90).save(sideways, exif=exif, quality=95)
    with Image.open(sideways) as stored:
        assert stored.size == (1080, 810)  # as stored: on its side
    result = detect(sideways, tmp_path / "turned")
    report = json.loads(files(result)["sideways.detections.json"].read_text())
    assert (report["width"], report["height"]) == (810, 1080)
    with Image.open(files(result)["sideways.annotated.jpg"]) as drawn:
        assert drawn.size == (810, 1080)
    expected = json.loads(files(upright)["bus.detections.json"].read_text())
    for person in (d for d in expected["detections"] if d["confidence"] > 0.5):
        assert max(iou(person["box"], d["box"]) for d in report["detections"]) > 0.8, person
    assert upright.data["counts"] == result.data["counts"]


def iou(a: list[float], b: list[float]) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area


def test_classes_keep_only_the_labels_asked_for_and_unknown_ones_are_named(
    tmp_path: Path,
) -> None:
    result = detect(BUS, tmp_path / "falls", classes=["FALL"])  # any case
    assert result.data["counts"] == {} and result.data["detections"] == 0
    assert files(result)["bus.detections.txt"].read_text() == (
        "bus.jpg: nothing detected by fall-detection.\n"
    )
    with pytest.raises(StepError, match=r"fall-detection has no class 'dog'.*Normal, Fall"):
        detect(BUS, tmp_path / "dogs", classes=["Normal", "dog"])


def test_bus_is_classified_as_a_vehicle(tmp_path: Path) -> None:
    result = classify(BUS, tmp_path / "bus")
    out = files(result)
    assert sorted(out) == ["bus.labels.json", "bus.labels.txt"]
    labels = json.loads(out["bus.labels.json"].read_text())["labels"]
    assert len(labels) == 5 and VEHICLES & {x["label"] for x in labels}, labels
    chances = [x["probability"] for x in labels]
    assert chances == sorted(chances, reverse=True) and 0 < sum(chances) <= 1.0001
    assert result.data["labels"] == labels and result.models == ["efficientnet-lite0"]
    words = out["bus.labels.txt"].read_text()
    assert words.startswith("bus.jpg looks like: ") and labels[0]["label"] in words
    assert len(classify(BUS, tmp_path / "one", top=1).data["labels"]) == 1


@pytest.fixture(scope="module")
def tiny_cls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ultralytics `-cls` weights file with Portuguese class names, built here from
    ultralytics' own YOLOv8n-cls config (random weights: it exercises the loading path, not
    accuracy), and saved as a user's trained model would be."""
    folder = tmp_path_factory.mktemp("cls")
    model = yolo.library(folder).YOLO("yolov8n-cls.yaml")
    from ultralytics.nn.tasks import ClassificationModel

    model.model = ClassificationModel("yolov8n-cls.yaml", nc=3, verbose=False)
    model.model.names = {0: "gato", 1: "cão", 2: "pássaro"}
    model.model.task = "classify"  # as training records it
    path = folder / "animais-cls.pt"
    model.save(path)
    return path


def test_an_ultralytics_cls_model_classifies_by_its_own_names(
    tiny_cls: Path, tmp_path: Path
) -> None:
    result = classify(ZIDANE, tmp_path / "cls", model=str(tiny_cls))
    labels = result.data["labels"]
    assert len(labels) == 3 and {x["label"] for x in labels} == {"gato", "cão", "pássaro"}
    assert abs(sum(x["probability"] for x in labels) - 1) < 0.01
    assert result.models == ["animais-cls.pt"]
    assert "cão" in files(result)["zidane.labels.txt"].read_text(encoding="utf-8")


def test_a_model_of_the_wrong_kind_is_refused_saying_which_kind_it_is(
    tiny_cls: Path, tmp_path: Path
) -> None:
    with pytest.raises(StepError, match=r"animais-cls\.pt is an ultralytics classify model"):
        detect(BUS, tmp_path / "d", model=str(tiny_cls))
    from caixa.models import locate

    with pytest.raises(StepError, match=r"is an ultralytics detect model; .* classify model"):
        classify(BUS, tmp_path / "c", model=str(locate("fall-detection")))


def test_a_file_that_is_not_yolo_weights_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"not a checkpoint")
    with pytest.raises(StepError, match=r"cannot load .*fake.pt as ultralytics YOLO weights"):
        detect(BUS, tmp_path / "d", model=str(fake))


def test_params_are_checked_when_the_rules_load(tmp_path: Path) -> None:
    weights = tmp_path / "mine.onnx"
    weights.write_bytes(b"")
    assert DetectParams(model=str(weights)).model == str(weights)
    assert DetectStep.model_of(DetectParams()) == "fall-detection"
    assert DetectParams(classes="Fall").classes == ["Fall"]  # type: ignore[arg-type]
    assert ClassifyStep.model_of(ClassifyParams(model=str(weights))) == str(weights)
    bad = [
        (DetectParams, {"model": "efficientnet-lite0"}, "not a model for this step"),
        (ClassifyParams, {"model": "fall-detection"}, "not a model for this step"),
        (DetectParams, {"model": "yolo11n.pt"}, "relative to the rules file"),  # it downloads
        (DetectParams, {"model": str(tmp_path / "missing.pt")}, "no model file at"),
        (DetectParams, {"model": str(tmp_path / "mine.pth")}, r"\.pt or \.onnx"),
        (DetectParams, {"imgsz": 500}, "multiple of 32"),
        (DetectParams, {"confidence": 1.5}, "less than or equal to 1"),
        (DetectParams, {"classes": []}, "at least 1"),
        (ClassifyParams, {"top": 0}, "greater than or equal to 1"),
        (ClassifyParams, {"labels": 3}, "Extra inputs are not permitted"),
    ]
    for params, values, message in bad:
        with pytest.raises(ValueError, match=message):
            params.model_validate(values)
    # in rules.yaml a relative path is the rules file's neighbour, never a name to download
    relative = DetectParams.model_validate({"model": "mine.onnx"}, context={"base": tmp_path})
    assert relative.model == str(weights)
    with pytest.raises(ValueError, match="no model file at"):
        DetectParams.model_validate({"model": "yolo11n.pt"}, context={"base": tmp_path})


# --- the image guards, shared with ocr ----------------------------------------------------


def test_damaged_huge_and_unsupported_images_are_refused_clearly(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(BUS.read_bytes()[:40_000])
    with pytest.raises(InputError, match=r"truncated.*damaged or was cut short"):
        load_photo(cut, "image/jpeg", "detect")
    bomb = png_claiming(tmp_path / "bomb.png", 60_000, 60_000)
    with pytest.raises(InputError, match=r"claims 3,600,000,000 pixels.*decompression bomb"):
        load_photo(bomb, "image/png", "detect")
    big = png_claiming(tmp_path / "big.png", 9_500, 9_000)
    with pytest.raises(InputError, match=r"9500 x 9000 pixels .* max_pixels"):
        load_photo(big, "image/png", "classify")
    with pytest.raises(InputError, match=r"810 x 1080 pixels \(874,800\), over .* 800,000"):
        load_photo(BUS, "image/jpeg", "detect", max_pixels=800_000)
    with pytest.raises(InputError, match=r"detect reads images \(JPEG, PNG, WebP.*image/gif"):
        load_photo(big, "image/gif", "detect")


def test_transparent_and_16_bit_images_become_plain_rgb(tmp_path: Path) -> None:
    clear = tmp_path / "clear.png"
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(clear)
    assert load_photo(clear, "image/png", "detect").getpixel((0, 0)) == (255, 255, 255)
    deep = tmp_path / "deep.png"
    Image.new("I;16", (8, 8), 0x8000).save(deep)
    assert load_photo(deep, "image/png", "detect").getpixel((0, 0)) == (128, 128, 128)
