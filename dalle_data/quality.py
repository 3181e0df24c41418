"""Detecting generated images that are unusable: black, constant, non-finite.

fp16 overflow turns a decoder's output into NaN (then black), safety filters
return black frames, and a broken checkpoint returns a flat colour. Such
images are recorded as ``status=failed`` with the reason and regenerated with
a new seed within the attempt budget, never scored or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from PIL.Image import Image

BLACK_MAX = 8  # brightest pixel at most this (of 255): a black frame, not a dark photo
FLAT_RANGE = 2  # max - min at most this in every channel: one flat colour



@dataclass(frozen=True, slots=True)
class Defect:
    """An image the backend produced but that is unusable (NaN output, a safety filter)."""

    reason: str

def image_defect(image: Image) -> str | None:
    """Why ``image`` is unusable, or None if it is fine."""
    array = np.asarray(image.convert("RGB"))
    if array.size == 0:
        return "empty image"
    if int(array.max()) <= BLACK_MAX:
        return "black image"
    lo, hi = array.reshape(-1, 3).min(axis=0), array.reshape(-1, 3).max(axis=0)
    if int((hi - lo).max()) <= FLAT_RANGE:
        return f"constant image (colour {tuple(int(v) for v in lo)})"
    return None
