"""Any diffusers text-to-image pipeline: Stable Diffusion 1.x/2.x, SDXL (Turbo, Lightning), SD3/3.5,
FLUX.1, PixArt, Sana, ...

``--model`` names a hub id or a ``save_pretrained`` folder; the pipeline class
comes from its ``model_index.json`` (``AutoPipelineForText2Image``, or the
class the file names when the auto mapping does not know it). Generation is
the same as for Kandinsky: batches, one seeded CPU ``torch.Generator`` per
image (image ``i`` depends only on its own prompt and seed), half precision on
CUDA, ``--compile`` of the denoiser (UNet or transformer) with fixed shapes,
and unusable output (non-finite values) recorded as a defect.

Inpainting uses the family's inpaint pipeline built from the same weights
(``AutoPipelineForInpainting.from_pipe``) where diffusers has one, with the
source composited back outside the mask (as for Kandinsky). Variation and
fuse need an unCLIP model: Kandinsky 2.2, or Stable unCLIP (``variation.py``).

``PRESETS`` holds a few popular models with the steps, guidance and size their
authors recommend; a folder may carry its own defaults in
``dalle_data_model.json`` (as a Kandinsky folder does).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalle_data.errors import ModelLoadError
from dalle_data.generators.base import GenerationSettings, cpu_generators
from dalle_data.generators.kandinsky import MODEL_CARD, _ready, _to_image, repaint
from dalle_data.hub import load_with_hub_fallback, quiet_libraries

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Preset:
    repo: str
    description: str
    defaults: GenerationSettings


def _settings(size: int, steps: int, guidance: float) -> GenerationSettings:
    return GenerationSettings(width=size, height=size, num_inference_steps=steps, prior_num_inference_steps=0,
                              guidance_scale=guidance, prior_guidance_scale=0.0)


# Recommended settings from each model's card (checked 2026-11-30).
PRESETS: dict[str, Preset] = {
    "sdxl-turbo": Preset("stabilityai/sdxl-turbo", "SDXL-Turbo: 1-4 steps, no guidance, 512²", _settings(512, 4, 0.0)),
    "sd-turbo": Preset("stabilityai/sd-turbo", "SD-Turbo (SD 2.1 distilled): 1-4 steps, no guidance, 512²",
                       _settings(512, 4, 0.0)),
    "sdxl": Preset("stabilityai/stable-diffusion-xl-base-1.0", "SDXL 1.0 base: 30 steps, guidance 5, 1024²",
                   _settings(1024, 30, 5.0)),
    "sd3.5-large-turbo": Preset("stabilityai/stable-diffusion-3.5-large-turbo",
                                "SD 3.5 Large Turbo: 4 steps, no guidance, 1024²", _settings(1024, 4, 0.0)),
    "flux-schnell": Preset("black-forest-labs/FLUX.1-schnell", "FLUX.1 [schnell]: 4 steps, no guidance, 1024²",
                           _settings(1024, 4, 0.0)),
    "sana-1600m": Preset("Efficient-Large-Model/Sana_1600M_1024px_diffusers", "Sana 1.6B: 20 steps, guidance 4.5, 1024²",
                         _settings(1024, 20, 4.5)),
}
FALLBACK = _settings(512, 30, 5.0)
KANDINSKY_CLASSES = ("KandinskyV22Pipeline", "KandinskyV22PriorPipeline", "KandinskyV22CombinedPipeline")


def pipeline_class_of(folder: Path) -> str | None:
    """The ``_class_name`` of a diffusers folder's ``model_index.json`` (None when it has none)."""
    try:
        return str(json.loads((folder / "model_index.json").read_text(encoding="utf-8"))["_class_name"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class Text2ImageGenerator:
    """Text → image with one diffusers pipeline."""

    def __init__(self, pipe: Any, *, model: str, defaults: GenerationSettings = FALLBACK, device: str = "cpu") -> None:
        self.pipe = _ready(pipe, device)
        self.model = model
        self.defaults = defaults
        self.device = device
        self.backend = f"diffusers:{type(pipe).__name__}"
        self.compiled = False
        self._inpaint: Any = None
        self._no_inpaint = False

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"text-to-image"}
        if self.inpaint_pipeline(check=True) is not None:
            caps.add("inpaint")
        return frozenset(caps)

    # -- loading and saving -------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str | Path, *, model: str | None = None, device: str = "cpu", dtype: Any = None,
                        defaults: GenerationSettings | None = None) -> Text2ImageGenerator:
        """Load a hub id or a ``save_pretrained`` folder; the pipeline class comes from ``model_index.json``."""
        quiet_libraries()
        kwargs = {"torch_dtype": dtype} if dtype is not None else {}

        def load(local: bool, where: str = str(name)) -> Any:
            from diffusers import AutoPipelineForText2Image, DiffusionPipeline

            try:
                return AutoPipelineForText2Image.from_pretrained(where, local_files_only=local, **kwargs)
            except ValueError as err:  # a class the auto mapping does not know: take the one the folder names
                if "AutoPipeline" not in str(err):
                    raise
                return DiffusionPipeline.from_pretrained(where, local_files_only=local, **kwargs)

        folder = Path(name).expanduser()
        if folder.is_dir():
            try:
                pipe = load(True, str(folder))
            except Exception as err:  # noqa: BLE001 - a broken folder is a user error
                raise ModelLoadError(f"cannot load {folder}: {str(err).strip().splitlines()[0]}") from err
            defaults = defaults or _card_defaults(folder) or _guess_defaults(pipe)
        else:
            pipe = load_with_hub_fallback(load, what="model", name=str(name))
            defaults = defaults or _guess_defaults(pipe)
        if not callable(getattr(pipe, "__call__", None)) or "prompt" not in _parameters(pipe):
            raise ModelLoadError(f"{name}: {type(pipe).__name__} is not a text-to-image pipeline")
        return cls(pipe, model=model or str(name), defaults=defaults, device=device)

    def save_pretrained(self, path: str | Path) -> None:
        save_pipeline(self, path)

    def compile(self, backend: str | None = None) -> None:
        """``torch.compile`` the denoiser (UNet or transformer) with fixed shapes (batches are padded)."""
        import os

        import torch

        backend = backend or os.environ.get("DALLE_DATA_COMPILE_BACKEND", "inductor")
        for name in ("unet", "transformer"):
            module = getattr(self.pipe, name, None)
            if module is not None:
                setattr(self.pipe, name, torch.compile(module, dynamic=False, backend=backend))
        self.compiled = True

    # -- generation -----------------------------------------------------------
    def __call__(self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings) -> list[Any]:
        import torch

        if len(prompt) != len(seeds):
            raise ValueError("one seed per prompt is needed")
        if not prompt:
            return []
        generators = cpu_generators(seeds)
        with torch.inference_mode():
            images = self.pipe(prompt=list(prompt), generator=generators, width=settings.width,
                               height=settings.height, num_inference_steps=settings.num_inference_steps,
                               guidance_scale=settings.guidance_scale, output_type="np").images
        return [_to_image(array) for array in images]

    def inpaint_pipeline(self, check: bool = False) -> Any:
        """The family's inpaint pipeline on the same weights, or None when diffusers has none for it."""
        if self._inpaint is None and not self._no_inpaint:
            from diffusers import AutoPipelineForInpainting

            try:
                self._inpaint = _ready(AutoPipelineForInpainting.from_pipe(self.pipe), self.device)
            except (ValueError, KeyError, TypeError, AttributeError) as err:
                log.debug("no inpaint pipeline for %s: %s", type(self.pipe).__name__, err)
                self._no_inpaint = True  # asked once: capabilities are read often
        if self._inpaint is None:
            if check:
                return None
            raise ModelLoadError(f"model {self.model!r} ({type(self.pipe).__name__}) has no inpaint pipeline in "
                                  "diffusers; use --model kandinsky-2-2 or an SD/SDXL/FLUX model")
        return self._inpaint

    def inpaint(self, images: Sequence[Any], masks: Sequence[Any], prompt: Sequence[str], seeds: Sequence[int],
                settings: GenerationSettings) -> list[Any]:
        """Repaint the white part of each mask (one call per image), the source composited back outside it."""
        import torch

        pipe = self.inpaint_pipeline()
        out: list[Any] = []
        with torch.inference_mode():
            for image, mask, text, seed in zip(images, masks, prompt, seeds):
                array = pipe(prompt=text, image=image, mask_image=mask, width=settings.width, height=settings.height,
                             num_inference_steps=max(settings.num_inference_steps, 2), strength=1.0,
                             guidance_scale=settings.guidance_scale, output_type="np",
                             generator=cpu_generators([seed])[0]).images[0]
                out.append(repaint(_to_image(array), image, mask))
        return out


def save_pipeline(generator: Any, path: str | Path) -> None:
    """``save_pretrained`` of a one-pipeline generator, with its defaults in ``dalle_data_model.json``."""
    path = Path(path)
    generator.pipe.save_pretrained(str(path))
    card = {"backend": generator.backend, "defaults": dataclasses.asdict(generator.defaults)}
    (path / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")


def _parameters(pipe: Any) -> set[str]:
    import inspect

    return set(inspect.signature(pipe.__call__).parameters)


def _card_defaults(folder: Path) -> GenerationSettings | None:
    card = folder / MODEL_CARD
    if not card.is_file():
        return None
    try:
        return GenerationSettings(**json.loads(card.read_text())["defaults"])
    except (ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{card} is not valid: {err}") from None


def _guess_defaults(pipe: Any) -> GenerationSettings:
    """The pipeline's native size (denoiser sample size × VAE scale), 30 steps, guidance 5."""
    size = FALLBACK.width
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    scale = getattr(pipe, "vae_scale_factor", None)
    if isinstance(sample, int) and isinstance(scale, int):
        size = sample * scale
    return dataclasses.replace(FALLBACK, width=size, height=size)
