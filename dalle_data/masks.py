"""Inpainting masks: white (255) = repaint, black (0) = keep.

Masks come from a mask directory (``--mask-dir``: the same relative path and
stem as the source image, any image suffix) or are made for each unit
(``--mask``):

* ``center``: a centred box of half the width and half the height (25% of
  the area) — replace or add the object in the middle;
* ``border``: everything but a centred box of 60% × 60% (64% of the area is
  repainted) — change the background, keep the subject;
* ``random-box``: a seeded box with sides between 30% and 60% of the image,
  anywhere inside it — add or remove things in varied places.

A mask from a file is resized to its image (with a warning) when the sizes
differ, binarized at 50%, and rejected when it is all black (nothing to
repaint) or all white (nothing kept: that is text-to-image, not inpainting).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from dalle_data.sources import IMAGE_SUFFIXES, SourceError, load_rgb

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

CENTER_FRACTION = 0.5
BORDER_KEEP = 0.6
RANDOM_SIDE = (0.3, 0.6)


def auto_mask(kind: str, size: tuple[int, int], seed: int) -> tuple[Image, str]:
    """A generated mask and its description (recorded in ``mask``)."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    w, h = size
    mask = PILImage.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    if kind == "center":
        bw, bh = round(w * CENTER_FRACTION), round(h * CENTER_FRACTION)
        box = ((w - bw) // 2, (h - bh) // 2, (w - bw) // 2 + bw - 1, (h - bh) // 2 + bh - 1)
        draw.rectangle(box, fill=255)
    elif kind == "border":
        mask = PILImage.new("L", size, 255)
        kw, kh = round(w * BORDER_KEEP), round(h * BORDER_KEEP)
        box = ((w - kw) // 2, (h - kh) // 2, (w - kw) // 2 + kw - 1, (h - kh) // 2 + kh - 1)
        ImageDraw.Draw(mask).rectangle(box, fill=0)
    elif kind == "random-box":
        rng = random.Random(seed)
        bw = round(w * rng.uniform(*RANDOM_SIDE))
        bh = round(h * rng.uniform(*RANDOM_SIDE))
        x, y = rng.randint(0, w - bw), rng.randint(0, h - bh)
        box = (x, y, x + bw - 1, y + bh - 1)
        draw.rectangle(box, fill=255)
    else:
        raise ValueError(f"unknown mask kind {kind!r}")
    what = "keeps" if kind == "border" else "repaints"
    return mask, f"{kind}: {what} box ({box[0]},{box[1]})-({box[2]},{box[3]}) of {w}x{h}"


def find_mask_file(mask_dir: Path, source_path: str, source_root: Path) -> Path | None:
    """The mask for a source: same relative path and stem under ``mask_dir``, any image suffix."""
    try:
        rel = Path(source_path).relative_to(source_root)
    except ValueError:
        rel = Path(Path(source_path).name)
    for suffix in sorted(IMAGE_SUFFIXES):
        candidate = (mask_dir / rel).with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None


def load_mask(path: Path, size: tuple[int, int]) -> Image:
    """A file mask as binary L at ``size``; raises ``SourceError`` with the reason."""
    from PIL import Image as PILImage

    mask = load_rgb(path, None, str(path)).convert("L")
    if mask.size != size:
        log.warning("mask %s is %dx%d, its image %dx%d: resizing the mask", path, *mask.size, *size)
        mask = mask.resize(size, PILImage.Resampling.NEAREST)
    mask = mask.point(lambda v: 255 if v >= 128 else 0)
    lo, hi = mask.getextrema()
    if hi == 0:
        raise SourceError(f"mask {path} is all black: nothing to repaint")
    if lo == 255:
        raise SourceError(f"mask {path} is all white: nothing would be kept (use a text mode instead)")
    return mask
