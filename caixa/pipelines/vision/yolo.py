"""ultralytics (YOLO detection and classification) behind one door.

ultralytics reaches for the network unless told not to (MODELS.md): its switches are set before
it is first imported, its settings file and the font it draws labels with live in caixa's home
(a missing `Arial.ttf` is otherwise downloaded at the first plot), and weights are always
loaded by absolute path (a bare `yolo11n.pt` means "download it"). Importing it also sets
OMP_NUM_THREADS=1 for the whole process; caixa puts that back and sets torch's threads itself
(`threads.py`). Each model is loaded once per process and device and stays resident.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from PIL import Image

from caixa import models
from caixa.errors import StepError
from caixa.home import Home
from caixa.pipelines.common import side_by_side
from caixa.pipelines.common.threads import use_torch_threads

MODULE = "ultralytics"
SWITCHES = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "0"}
# What ultralytics looks for before it downloads a font: one for ASCII labels, one for others.
FONT_NAMES = ("Arial.ttf", "Arial.Unicode.ttf")
DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")  # fonts-dejavu-core
BOX_TASKS = ("detect", "segment", "pose")  # models whose results carry boxes
WARM_UP = (64, 64)  # a blank image predicted once at load: ultralytics sets up lazily


@dataclass(frozen=True)
class Detection:
    label: str
    confidence: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the input image's pixels


@dataclass(frozen=True)
class Found:
    detections: list[Detection]
    result: Any  # ultralytics' Results, for drawing

    def save_annotated(self, target: Path) -> None:
        """The image with its boxes and labels drawn, as ultralytics draws them."""
        self.result.save(filename=str(target))


def load(path: Path, device: str, home: Path, tasks: tuple[str, ...], copy: int = 0) -> Any:
    """The YOLO model at `path` (absolute), ready on `device`; a StepError when the file is not
    ultralytics weights or its task is not one of `tasks`. A copy other than 0 is a model of
    its own for the thread of a batch that runs in that slot (`side_by_side.slot`): ultralytics'
    predictor serves one call at a time, under a lock."""
    yolo = library(home).YOLO  # outside models.load: it holds its lock while loading

    def loader() -> Any:
        try:
            model = yolo(str(path.resolve()))
        except Exception as exc:  # ultralytics raises anything from a pickle to a KeyError
            raise StepError(
                f"cannot load {path} as ultralytics YOLO weights ({type(exc).__name__}: {exc}); "
                "give a .pt or .onnx file exported by ultralytics"
            ) from exc
        _check_task(model, path, tasks)  # before running it: a wrong kind fails obscurely
        model.predict(Image.new("RGB", WARM_UP), device=device, verbose=False)
        return model

    key = f"ultralytics:{path.resolve()}:{device}" + (f"#{copy}" if copy else "")
    model = models.load(key, loader, adds=path.stat().st_size if copy else None)
    _check_task(model, path, tasks)  # loaded before, perhaps by another step
    return model


def copies(model: str) -> int:
    """How many copies of a model a batch may hold side by side (about its file's size each);
    1 when it cannot be found, which each job's own run then says."""
    try:
        return side_by_side.copies(models.locate(model).stat().st_size)
    except (models.ModelNotFoundError, OSError):
        return 1


def _check_task(model: Any, path: Path, tasks: tuple[str, ...]) -> None:
    if model.task not in tasks:
        raise StepError(
            f"{path.name} is an ultralytics {model.task} model; this step needs a "
            f"{' or '.join(tasks)} model"
        )


def names(model: Any) -> dict[int, str]:
    return dict(model.names)


def detect(
    model: Any,
    image: Image.Image,
    *,
    device: str,
    threads: int,
    confidence: float,
    iou: float,
    classes: list[int] | None,
    imgsz: int,
    max_det: int,
) -> Found:
    use_torch_threads(threads)
    (result,) = model.predict(
        image,
        device=device,
        conf=confidence,
        iou=iou,
        classes=classes,
        imgsz=imgsz,
        max_det=max_det,
        verbose=False,
    )
    boxes = result.boxes
    found = [
        Detection(result.names[int(c)], float(p), (x1, y1, x2, y2))
        for (x1, y1, x2, y2), c, p in zip(
            boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True
        )
    ]
    return Found(found, result)


def classify(
    model: Any, image: Image.Image, *, device: str, threads: int, top: int
) -> list[tuple[str, float]]:
    """The `top` most probable labels of a `-cls` model, best first."""
    use_torch_threads(threads)
    (result,) = model.predict(image, device=device, verbose=False)
    probabilities = result.probs.data.float()
    best = probabilities.topk(min(top, probabilities.numel()))
    return [
        (result.names[int(i)], float(p))
        for p, i in zip(best.values.tolist(), best.indices.tolist(), strict=True)
    ]


def library(home: Path) -> ModuleType:
    """ultralytics, imported with the network switched off and its files in `home`."""

    def load() -> ModuleType:
        config = Home(home).ultralytics
        before = os.environ.get("OMP_NUM_THREADS")
        os.environ.update(SWITCHES, YOLO_CONFIG_DIR=str(config))
        os.environ.setdefault("YOLO_VERBOSE", "False")  # no banners in the daemon's log
        import ultralytics
        from ultralytics.utils import USER_CONFIG_DIR

        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)  # caixa's threads are set per call
        _place_fonts(Path(USER_CONFIG_DIR))
        ultralytics.settings.update({"sync": False})  # no analytics, no crash reports
        return ultralytics

    return models.load(MODULE, load)


def _place_fonts(folder: Path) -> None:
    """A TTF under each name ultralytics looks for, so that it never downloads one."""
    source = next((f for f in _fonts() if f.exists()), None)
    if source is None:
        raise StepError(
            "no DejaVuSans.ttf to label boxes with (ultralytics would download a font); "
            "install fonts-dejavu-core"
        )
    folder.mkdir(parents=True, exist_ok=True)
    for name in FONT_NAMES:
        if not (folder / name).exists():
            part = folder / f".{name}.{os.getpid()}"  # never a half-copied font for another
            shutil.copyfile(source, part)
            part.replace(folder / name)


def _fonts() -> list[Path]:
    """Debian's DejaVu Sans, then matplotlib's copy (ultralytics depends on matplotlib)."""
    found = [DEJAVU]
    matplotlib = models.package_folder("matplotlib")
    if matplotlib is not None:
        found.append(matplotlib / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf")
    return found
