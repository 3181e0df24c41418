"""A backend written the way a new one would be: a generator module plus one registration.

``ToyGenerator`` paints noise drawn from each image's prompt and seed, shifted by the ``tint`` option; its
price model charges a flat cent per image. Tests register it in ``dalle_data.backends.BACKENDS`` and run
the real ``generate`` with it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from pydantic import Field

from dalle_data.backends import Backend, Options
from dalle_data.generators.base import GenerationSettings

CENT = 0.01


class ToyOptions(Options):
    tint: int = Field(0, ge=0, le=255, description="a fifth of it is added to the red channel")


class ToyGenerator:
    backend = "toy"
    capabilities = frozenset({"text-to-image"})
    defaults = GenerationSettings(width=32, height=32, num_inference_steps=1, prior_num_inference_steps=1)

    def __init__(self, model: str, tint: int) -> None:
        self.model, self.tint = model, tint

    def __call__(self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings) -> list[Any]:
        out = []
        for text, seed in zip(prompt, seeds):
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(f"{text}|{seed}".encode()).digest()[:8]))
            pixels = rng.integers(0, 200, (settings.height, settings.width, 3), dtype=np.uint8)
            pixels[..., 0] += np.uint8(self.tint // 5)
            out.append(Image.fromarray(pixels))
        return out


def load(spec: Any, device: str) -> ToyGenerator:
    return ToyGenerator(spec.model, int(spec.options.get("tint", 0)))


def price(spec: Any, images: int, most: int, flat: float | None = None) -> dict[str, Any]:
    """One cent per image."""
    return {"cost": {"currency": "USD", "per_image": CENT, "expected": round(CENT * images, 4),
                     "max": round(CENT * most, 4), "source": "toy", "note": "a flat cent"}}


TOY = Backend(name="toy", description="seeded noise (a test backend)", capabilities=frozenset({"text-to-image"}),
              default_model="toy-1", loader=f"{__name__}:load", price=f"{__name__}:price", options=ToyOptions,
              default_scorer="tiny", needs_device=False)
