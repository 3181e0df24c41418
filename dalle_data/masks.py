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

The repainted part is blended into the kept one over a feathered edge
(``feathered_composite``), not pasted in with a hard seam that a classifier
could learn as a shortcut. The blend band is centred on the mask edge and
``feather_width`` pixels wide: ``2 * max(1, round(0.015 * min(w, h)))``, about
3% of the shorter side, always even so that half of it lies on each side
(2 px at 64x64, 6 px at 200x200, 16 px at 512x512). Its weight is the binary
mask averaged over a square window of side ``feather_width + 1`` (a box
filter, integer arithmetic, no randomness): a linear ramp across a straight
edge, rounded at box corners. Pixels farther than half the band outside the
mask (in every direction, diagonals included) are exactly the source's own;
pixels farther than half the band inside it are exactly the generator's.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from dalle_data.sources import IMAGE_SUFFIXES, SourceError, load_rgb

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

log = logging.getLogger(__name__)

CENTER_FRACTION = 0.5
BORDER_KEEP = 0.6
RANDOM_SIDE = (0.3, 0.6)
FEATHER_HALF_FRACTION = 0.015  # half the blend band, as a share of the shorter side


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


def feather_width(size: tuple[int, int]) -> int:
    """The default blend band width for an image of ``size``: even, about 3% of the shorter side, >= 2 px."""
    return 2 * max(1, round(FEATHER_HALF_FRACTION * min(size)))


def blend_weights(mask: Image, feather_px: int) -> tuple[np.ndarray, int]:
    """Integer weights of the generated image, 0..``scale``, HxW, and ``scale``.

    ``mask`` is binarized at 50% (white = repaint). ``feather_px`` is the band
    width; an odd width is rounded up to the next even one, 0 gives the hard
    (binary) composite. Each weight is the number of repaint pixels in the
    square window of side ``feather_px + 1`` around the pixel (edges
    replicated, so an image border is not an edge).
    """
    import numpy as np

    if feather_px < 0:
        raise ValueError(f"feather_px must be >= 0, not {feather_px}")
    repaint = (np.asarray(mask.convert("L")) >= 128).astype(np.int64)
    half = (feather_px + 1) // 2
    if half == 0:
        return repaint, 1
    side = 2 * half + 1
    counts = repaint
    for axis in (0, 1):  # separable box sum via cumulative sums
        pad = [(0, 0), (0, 0)]
        pad[axis] = (half + 1, half)
        cum = np.cumsum(np.pad(counts, pad, mode="edge"), axis=axis)
        n = counts.shape[axis]
        counts = np.take(cum, np.arange(side, side + n), axis=axis) - np.take(cum, np.arange(n), axis=axis)
    return counts, side * side


def feathered_composite(generated: Image, source: Image, mask: Image, feather_px: int | None = None) -> Image:
    """The generated image inside the mask, the source outside it, blended over a band ``feather_px`` wide.

    The result is RGB at the source's size: the generated image is resized to
    it (bicubic) and the mask too (nearest) when their sizes differ.
    ``feather_px=None`` picks ``feather_width(source.size)``; ``0`` is a hard
    composite. Beyond half the band outside the mask every pixel is exactly
    the source's; beyond half the band inside it, exactly the generator's.
    """
    import numpy as np
    from PIL import Image as PILImage

    size = source.size
    if generated.size != size:
        generated = generated.resize(size, PILImage.Resampling.BICUBIC)
    if mask.size != size:
        mask = mask.convert("L").resize(size, PILImage.Resampling.NEAREST)
    weight, scale = blend_weights(mask, feather_width(size) if feather_px is None else feather_px)
    gen = np.asarray(generated.convert("RGB"), dtype=np.int64)
    src = np.asarray(source.convert("RGB"), dtype=np.int64)
    w = weight[..., None]
    blended = (gen * w + src * (scale - w) + scale // 2) // scale  # exact at w = 0 and w = scale
    return PILImage.fromarray(blended.astype(np.uint8), "RGB")
