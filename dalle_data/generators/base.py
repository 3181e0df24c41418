"""The generator contract every backend implements.

A generator turns prompts and per-image seeds into images. It is built once
per worker (models loaded, moved to the device) and then called in batches.
Argument names follow diffusers: ``prompt``, ``num_inference_steps``,
``guidance_scale``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True, slots=True)
class GenerationSettings:
    """Sampling settings shared by every image of a run."""

    width: int
    height: int
    num_inference_steps: int
    prior_num_inference_steps: int
    guidance_scale: float = 4.0
    prior_guidance_scale: float = 4.0


@dataclass(frozen=True, slots=True)
class Defect:
    """An image the backend produced but that is unusable (NaN output, a safety filter)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """The backend refused to make the image (a hosted API's moderation); recorded as ``status=refused``."""

    reason: str


@dataclass(frozen=True, slots=True)
class KeptState:
    """Files a backend keeps for work whose outputs it has handed out (the Batch API's finished jobs), until
    the shard holding those outputs is committed: a run stopped before its marker finds the work again instead
    of paying for it twice. ``release`` deletes them (the executors call it after the marker)."""

    paths: tuple[str, ...] = ()

    def release(self) -> None:
        for path in self.paths:
            Path(path).unlink(missing_ok=True)


def kept_state(generator: object) -> KeptState:
    """What ``generator`` keeps for the outputs it handed out since the last call (nothing for most backends)."""
    take = getattr(generator, "take_kept_state", None)
    return take() if callable(take) else KeptState()


def cpu_generators(seeds: Sequence[int]) -> list:  # noqa: ANN001 - torch.Generator, imported lazily
    """One seeded CPU ``torch.Generator`` per image: the noise is independent of the device and of the batch,
    so image ``i`` depends only on its own seed."""
    import torch

    return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]


def split_conditions(conditions: Sequence[Any], weights: Sequence[float]) -> tuple[list[Any], list[float], str]:
    """A variation's or fusion's conditions as (its RGB images, their weights, its text prompt or "").

    ``conditions`` are one or two images and optionally the class prompt (``--prompt-weight``), ``weights`` one
    per condition; a prompt's weight is the images' business only where the model mixes text into the
    embedding (Kandinsky's ``interpolate``), so it is dropped here.
    """
    pictures = [(c, w) for c, w in zip(conditions, weights) if not isinstance(c, str)]
    if not pictures:
        raise ValueError("a variation or fusion needs at least one source image")
    text = next((c for c in conditions if isinstance(c, str)), "")
    return [c.convert("RGB") for c, _ in pictures], [float(w) for _, w in pictures], text


@runtime_checkable
class Generator(Protocol):
    """A text-to-image backend.

    ``backend`` names the implementation (``"kandinsky2.2"``), ``model`` the
    weights (a hub id, a local path or a preset name); both are recorded with
    every image. ``defaults`` gives settings that suit the model when the run
    spec leaves them open.
    """

    backend: str
    model: str
    defaults: GenerationSettings
    capabilities: frozenset[str]  # of "text-to-image", "variation", "fuse", "inpaint" (dalle_data.modes)

    def __call__(
        self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings
    ) -> list[Image | Defect | Refusal]:
        """One image (or ``Defect`` / ``Refusal``) per prompt; image ``i`` depends only on
        ``prompt[i]``, ``seeds[i]`` and ``settings`` (and, within floating-point
        noise, not on the batch)."""
        ...
