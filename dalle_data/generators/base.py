"""The generator contract every backend implements.

A generator turns prompts and per-image seeds into images. It is built once
per worker (models loaded, moved to the device) and then called in batches.
Argument names follow diffusers: ``prompt``, ``num_inference_steps``,
``guidance_scale``. What a generator can do beyond ``__call__`` (variation,
fuse, inpaint, a negative prompt, an IP-Adapter, ``--compile``) is a
``runtime_checkable`` protocol each, asked with ``isinstance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dalle_data.quality import Defect  # re-exported: the outputs a backend returns

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
    """A text-to-image backend (what else it can do: the capability protocols below).

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


# -- capabilities ------------------------------------------------------------------------------------------------
# A generator declares what it can do in ``capabilities`` (it may depend on what is loaded: an IP-Adapter gives an
# SD model variation and fuse) and implements the protocol of each; the optional features a backend's options
# need are protocols too. Callers ask ``isinstance(generator, Protocol)`` (``runtime_checkable``: the methods are
# there), never ``hasattr``; ``dalle_data.testing.BackendContract`` holds every declared capability to its protocol.


@runtime_checkable
class TextToImage(Protocol):
    """``text-to-image`` (the vanilla, style and adversarial modes): ``Generator.__call__``."""

    def __call__(self, prompt: Sequence[str], seeds: Sequence[int],
                 settings: GenerationSettings) -> list[Image | Defect | Refusal]: ...


@runtime_checkable
class Variation(Protocol):
    """``variation`` and ``fuse``: images from the CLIP image embeddings of one source (variation) or the weighted
    mix of two (fuse); ``conditions[i]`` are image ``i``'s sources, optionally with its prompt (see
    ``split_conditions``), ``weights[i]`` one weight per condition."""

    def variation(self, conditions: Sequence[Sequence[Any]], weights: Sequence[Sequence[float]],
                  seeds: Sequence[int], settings: GenerationSettings) -> list[Image | Defect | Refusal]: ...


Fuse = Variation  # a fuse is a variation of two sources


@runtime_checkable
class Inpaint(Protocol):
    """``inpaint``: repaint the masked region of each source image after its prompt, keep the rest."""

    def inpaint(self, images: Sequence[Any], masks: Sequence[Any], prompt: Sequence[str], seeds: Sequence[int],
                settings: GenerationSettings) -> list[Image | Defect | Refusal]: ...


@runtime_checkable
class NegativePrompt(Protocol):
    """Takes a negative prompt (``--option negative_prompt``) for every image it makes from now on."""

    def set_negative_prompt(self, text: str | None, settings: GenerationSettings | None = None) -> None: ...


@runtime_checkable
class ImagePrompt(Protocol):
    """Takes an IP-Adapter (``--option ip_adapter``), which gives it ``variation`` and ``fuse`` by image prompt."""

    def use_ip_adapter(self, source: str | Path | None = None, *, scale: float = 1.0) -> None: ...


@runtime_checkable
class Compilable(Protocol):
    """Compiles its denoiser (``--compile``)."""

    def compile(self, backend: str | None = None) -> None: ...


# The protocol a generator implements for each capability it declares (dalle_data.modes names the capabilities).
CAPABILITY_PROTOCOLS: dict[str, type] = {
    "text-to-image": TextToImage,
    "variation": Variation,
    "fuse": Fuse,
    "inpaint": Inpaint,
}


def capabilities_of(generator: object) -> frozenset[str]:
    """What a loaded generator says it can do: its ``capabilities``, else text-to-image only."""
    return frozenset(getattr(generator, "capabilities", ("text-to-image",)))


def missing_protocols(generator: object) -> list[str]:
    """The capabilities ``generator`` declares without implementing their protocol (none, for a sound one)."""
    return [c for c in sorted(capabilities_of(generator))
            if c in CAPABILITY_PROTOCOLS and not isinstance(generator, CAPABILITY_PROTOCOLS[c])]
