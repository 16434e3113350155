"""Opening images safely, for every step that reads one.

The pixel count is checked from the header before anything is decoded (a 100-byte PNG can
claim 3.6 billion pixels), a damaged or truncated file is the user's problem and is said so,
and a photo is turned upright by its EXIF orientation, so that what a step reports (a box, a
label) matches what any viewer shows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from PIL import Image, ImageOps

from caixa.errors import InputError

# media type (as libmagic sniffs it) -> the format's name, for the formats caixa reads
FORMATS = {
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/webp": "WebP",
    "image/tiff": "TIFF",
    "image/bmp": "BMP",
    "image/x-ms-bmp": "BMP",
}
KINDS = ", ".join(dict.fromkeys(FORMATS.values()))
# Below PIL's own bomb warning (89 Mpx); a 12,000 x 6,500 panorama fits.
MAX_PIXELS = 80_000_000
DAMAGED = "the file is damaged or was cut short; copy it again from where it came from"


def check_type(media_type: str, step: str) -> None:
    """Refuse a file that is not an image in a format caixa reads, naming those it does."""
    if media_type not in FORMATS:
        raise InputError(
            f"{step} reads images ({KINDS}); this file is {media_type}. Point this rule's "
            "`match` at those images only, or convert the file to one of them"
        )


def check_pixels(what: str, width: int, height: int, limit: int, hint: str = "") -> None:
    if width * height > limit:
        raise InputError(
            f"{what} is {width} x {height} pixels ({width * height:,}), over this rule's limit "
            f"of {limit:,} (max_pixels); {hint}raise max_pixels in the rule if the file is "
            "genuine"
        )


@contextmanager
def opened(path: Path, limit: int) -> Iterator[Image.Image]:
    """The image opened lazily (its header only, until pixels are asked for); a bomb, a
    damaged or truncated file, or something that is not an image at all, met here or while
    decoding in the block, becomes an InputError that says so."""
    try:
        with Image.open(path) as img:
            yield img
    except Image.DecompressionBombError as exc:
        claimed = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels than is safe"
        raise InputError(
            f"the image claims {size}, far over this rule's limit of {limit:,} (max_pixels) "
            "and over what caixa ever decodes: it may be a decompression bomb. If it is a "
            "genuine image, scale it down first"
        ) from exc
    except OSError as exc:
        if exc.errno is not None:
            raise  # the disk failed, not the file: let the daemon decide whether to retry
        raise InputError(f"cannot read the image ({exc}): {DAMAGED}") from exc
    except (SyntaxError, ValueError) as exc:  # PIL's parsers raise these on broken headers
        raise InputError(f"cannot read the image ({exc}): {DAMAGED}") from exc


def load_photo(path: Path, media_type: str, step: str, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """The image (its first frame) decoded in full, turned upright by its EXIF orientation,
    in RGB. Decoding it all here is what finds a truncated file: PIL would otherwise pad it
    with gray and a model would see half a photo."""
    check_type(media_type, step)
    with opened(path, max_pixels) as img:
        check_pixels("the image", img.width, img.height, max_pixels)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)
        return flatten(img, "RGB")


def flatten(img: Image.Image, mode: Literal["L", "RGB"]) -> Image.Image:
    """`img` in 8-bit `mode`: transparent areas become white paper, 16-bit images keep their
    tones (a plain conversion clips them to white)."""
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, "white"), img)
    elif img.mode.startswith("I"):
        img = img.convert("I").point(lambda v: v * (1 / 256))
    return img if img.mode == mode else img.convert(mode)
