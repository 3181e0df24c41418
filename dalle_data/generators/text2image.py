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
source composited back outside the mask (as for Kandinsky).

Variation and fuse: SD 1.x and SDXL models take an IP-Adapter
(``use_ip_adapter``; ``h94/IP-Adapter`` by default, a folder laid out like it,
or a hub id): the CLIP image embedding of a source image (the weighted mean of
two for a fuse) is the image prompt, the class prompt the text prompt. Each
image of a batch gets its own image prompt, so image ``i`` still depends only
on its own sources and seed. Text-to-image and inpaint run with the adapter
off. Other families need an unCLIP model: Kandinsky 2.2, or Stable unCLIP
(``unclip.py``).

``PRESETS`` holds a few popular models with the steps, guidance and size their
authors recommend (from ``dalle_data.presets``, the one preset table); a folder may carry its own defaults in
``dalle_data_model.json`` (as a Kandinsky folder does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dalle_data.errors import ModelLoadError
from dalle_data.generators.base import GenerationSettings, cpu_generators, split_conditions
from dalle_data.generators.ip_adapter import (
    FAMILY_NAMES,
    IP_ADAPTER_OPTION,
    IP_ADAPTERS,
    IPAdapterSource,
    adapter_state,
    blank_image,
    ip_adapter_family,
    ip_adapter_source,
    project,
    reason,
    restore_adapter_state,
)
from dalle_data.backends import folder_pipeline
from dalle_data.generators.kandinsky import MODEL_CARD, _ready, _to_image, read_model_card, repaint
from dalle_data.hub import load_with_hub_fallback, quiet_libraries
from dalle_data.presets import PRESET_TABLE

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Preset:
    repo: str
    description: str
    defaults: GenerationSettings


def _settings(size: int, steps: int, guidance: float) -> GenerationSettings:
    return GenerationSettings(width=size, height=size, num_inference_steps=steps, prior_num_inference_steps=0,
                              guidance_scale=guidance, prior_guidance_scale=0.0)


# The presets' recommended settings (from each model's card), read from the one preset table.
PRESETS: dict[str, Preset] = {
    p.name: Preset(p.repo, p.description, _settings(p.size, p.steps, p.guidance))  # type: ignore[arg-type]
    for p in PRESET_TABLE if p.text_to_image_pipeline and p.repo is not None
}
FALLBACK = _settings(512, 30, 5.0)
KANDINSKY_CLASSES = ("KandinskyV22Pipeline", "KandinskyV22PriorPipeline", "KandinskyV22CombinedPipeline")


def pipeline_class_of(folder: Path) -> str | None:
    """The ``_class_name`` of a diffusers folder's ``model_index.json`` (None when it has none)."""
    return folder_pipeline(folder)


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
        self.negative_prompt: str | None = None  # set_negative_prompt (--option negative_prompt)
        self.ip_adapter: str | None = None  # where the loaded IP-Adapter came from (None: none loaded)
        self.ip_adapter_scale = 1.0
        self._ip_base: dict[str, Any] = {}  # the pipeline's state before the adapter (to unload it)
        self._ip_blank: tuple[Any, Any] | None = None  # an image prompt for calls without one (at scale 0)

    @property
    def capabilities(self) -> frozenset[str]:
        caps = {"text-to-image"}
        if self.inpaint_pipeline(check=True) is not None:
            caps.add("inpaint")
        if self.ip_adapter is not None:
            caps |= {"variation", "fuse"}
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
            defaults = defaults or read_model_card(folder, prior=False) or _guess_defaults(pipe)
        else:
            pipe = load_with_hub_fallback(load, what="model", name=str(name))
            defaults = defaults or _guess_defaults(pipe)
        if not callable(getattr(pipe, "__call__", None)) or "prompt" not in _parameters(pipe):
            raise ModelLoadError(f"{name}: {type(pipe).__name__} is not a text-to-image pipeline")
        return cls(pipe, model=model or str(name), defaults=defaults, device=device)

    def save_pretrained(self, path: str | Path) -> None:
        """Save the model (without an IP-Adapter: that is loaded separately, as it came)."""
        if self.ip_adapter is None:
            save_pipeline(self, path)
            return
        loaded = adapter_state(self.pipe)
        restore_adapter_state(self.pipe, self._ip_base)
        try:
            save_pipeline(self, path)
        finally:
            restore_adapter_state(self.pipe, loaded)

    def set_negative_prompt(self, text: str | None, settings: GenerationSettings | None = None) -> None:
        """What every image should not show: classifier-free guidance steers away from it, so it needs guidance
        above 1 (``settings``, the run's; refused otherwise, as it would change nothing)."""
        params = _parameters(self.pipe)
        name = f"model {self.model!r} ({type(self.pipe).__name__})"
        if text is not None and ("negative_prompt" not in params or "true_cfg_scale" in params):
            raise ModelLoadError(f"{name} takes no negative prompt here (FLUX-family models need true CFG); "
                                 "drop --option negative_prompt")
        guidance = (settings or self.defaults).guidance_scale
        if text is not None and guidance <= 1:
            raise ModelLoadError(f"--option negative_prompt does nothing at guidance {guidance:g}, and {name} runs "
                                 "there; set --guidance-scale above 1 as well, or drop the option")
        self.negative_prompt = text

    def _negatives(self, n: int) -> dict[str, Any]:
        return {"negative_prompt": [self.negative_prompt] * n} if self.negative_prompt else {}

    # -- IP-Adapter: image prompts ----------------------------------------------
    def use_ip_adapter(self, source: str | Path | None = None, *, scale: float = 1.0) -> None:
        """Load an IP-Adapter: image prompts then give this model the variation and fuse modes.

        ``source``: a folder laid out as h94/IP-Adapter, a weight file, a hub id, or None (``"default"``) for
        the family's h94/IP-Adapter; ``scale``: how strongly the image prompt steers. Replaces an adapter loaded
        before. Call it before ``compile``.
        """
        family = ip_adapter_family(self.pipe)
        if family is None:
            raise ModelLoadError(f"model {self.model!r} ({type(self.pipe).__name__}) takes no IP-Adapter: variation "
                                 "and fuse by image prompt work with SD 1.x and SDXL models; or use an unCLIP model "
                                 "(--model kandinsky-2-2)")
        where = ip_adapter_source(source, family)
        self._unload_ip_adapter()
        before = adapter_state(self.pipe)
        try:
            self._load_ip_adapter(where, before)
            self._ip_blank = self._embed([blank_image()], [1.0])
            project(self.pipe, self._ip_blank[0])  # a dry run: the image encoder must fit the adapter
        except Exception as err:
            restore_adapter_state(self.pipe, before)
            self._ip_blank = None
            if isinstance(err, ModelLoadError):
                raise
            default = IP_ADAPTERS[family]
            raise ModelLoadError(
                f"IP-Adapter {where.label} does not fit model {self.model!r} ({type(self.pipe).__name__}): "
                f"{reason(err)}; pass one made for {FAMILY_NAMES[family]} models, laid out as {default.repo} "
                f"({default.subfolder}/{default.weight_name} next to {default.subfolder}/image_encoder/)") from err
        self.pipe.set_ip_adapter_scale(scale)
        _ready(self.pipe, self.device)
        self.ip_adapter, self.ip_adapter_scale, self._ip_base = where.label, scale, before
        self._inpaint, self._no_inpaint = None, False  # rebuilt from the pipeline with its new components

    def _load_ip_adapter(self, where: IPAdapterSource, before: dict[str, Any]) -> None:
        def load(local: bool) -> None:
            try:
                self.pipe.load_ip_adapter(where.repo, subfolder=where.subfolder, weight_name=where.weight_name,
                                          local_files_only=local)
            except Exception:
                restore_adapter_state(self.pipe, before)  # nothing half-loaded stays for the next try
                raise

        if where.local:
            load(True)
        else:
            load_with_hub_fallback(load, what="IP-Adapter", name=where.repo)

    def _unload_ip_adapter(self) -> None:
        if self.ip_adapter is not None:
            restore_adapter_state(self.pipe, self._ip_base)
            self.ip_adapter, self._ip_base, self._ip_blank = None, {}, None
            self._inpaint, self._no_inpaint = None, False

    def _embed(self, images: Sequence[Any], weights: Sequence[float]) -> tuple[Any, Any]:
        """The weighted mean of the images' image-prompt embeddings and of their negatives, as the pipeline
        makes them (CLIP image embeddings; penultimate hidden states for an IP-Adapter Plus)."""
        import torch
        from diffusers.models.embeddings import ImageProjection

        if not images or len(images) != len(weights) or sum(weights) <= 0:
            raise ValueError("an image prompt needs at least one image, one weight per image and a positive sum")
        layer = self.pipe.unet.encoder_hid_proj.image_projection_layers[0]
        with torch.inference_mode():
            pos, neg = self.pipe.encode_image(list(images), self.device, 1, not isinstance(layer, ImageProjection))
        w = torch.tensor(list(weights), dtype=torch.float32, device=pos.device).view(-1, *[1] * (pos.ndim - 1))
        mean = [((x.float() * w).sum(dim=0) / w.sum()).to(x.dtype) for x in (pos, neg)]
        return mean[0], mean[1]

    @contextlib.contextmanager
    def _image_prompts(self, pipe: Any, prompts: tuple[Any, Any] | None, count: int) -> Iterator[dict[str, Any]]:
        """Keyword arguments for a call of ``pipe`` that give image ``i`` the image prompt ``prompts[*][i]``
        (positive, negative); None: no image prompt (the adapter is off for the call, scale 0).

        diffusers repeats precomputed ``ip_adapter_image_embeds`` for every prompt of a batch (one image prompt
        per call), so the pipeline's ``prepare_ip_adapter_image_embeds`` is replaced for the call by one that
        hands the UNet a row per image (negatives first, as the latents are, under guidance).
        """
        import torch

        if self.ip_adapter is None:
            yield {}
            return
        if prompts is None:
            assert self._ip_blank is not None
            prompts = (self._ip_blank[0].expand(count, *self._ip_blank[0].shape),
                       self._ip_blank[1].expand(count, *self._ip_blank[1].shape))
            self.pipe.set_ip_adapter_scale(0.0)
        pos, neg = (x.unsqueeze(1) for x in prompts)  # (images, 1 image prompt each, ...)

        def prepare(image: Any, embeds: Any, device: Any, num_images_per_prompt: int, guidance: bool) -> list[Any]:
            if num_images_per_prompt != count:
                raise ValueError(f"{count} image prompts for a batch of {num_images_per_prompt}")
            return [(torch.cat([neg, pos]) if guidance else pos).to(device)]

        pipe.prepare_ip_adapter_image_embeds = prepare
        try:
            yield {"ip_adapter_image_embeds": [pos]}
        finally:
            del pipe.prepare_ip_adapter_image_embeds
            self.pipe.set_ip_adapter_scale(self.ip_adapter_scale)

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
        if len(prompt) != len(seeds):
            raise ValueError("one seed per prompt is needed")
        if not prompt:
            return []
        return self._generate(list(prompt), seeds, settings, None)

    def _generate(self, prompts: list[str], seeds: Sequence[int], settings: GenerationSettings,
                  image_prompts: tuple[Any, Any] | None) -> list[Any]:
        """One pipeline call: text prompts, one seeded CPU generator per image, and image prompts (an IP-Adapter's
        positive and negative embeddings per image; None: none)."""
        import torch

        with torch.inference_mode(), self._image_prompts(self.pipe, image_prompts, len(prompts)) as extra:
            images = self.pipe(prompt=prompts, generator=cpu_generators(seeds), width=settings.width,
                               height=settings.height, num_inference_steps=settings.num_inference_steps,
                               guidance_scale=settings.guidance_scale, output_type="np", **extra,
                               **self._negatives(len(prompts))).images
        return [_to_image(array) for array in images]

    def variation(self, conditions: Sequence[Sequence[Any]], weights: Sequence[Sequence[float]], seeds: Sequence[int],
                  settings: GenerationSettings) -> list[Any]:
        """Images from image prompts (needs ``use_ip_adapter``), as ``StableUnCLIPGenerator.variation``.

        ``conditions[i]`` is one image (a variation) or two (a fuse: the ``weights[i]``-weighted mean of their
        image embeddings), and optionally the class prompt, the text prompt (else the empty prompt).
        """
        import torch

        if self.ip_adapter is None:
            raise ModelLoadError(f"model {self.model!r} makes variations and fusions with an IP-Adapter: pass one "
                                 f"with {IP_ADAPTER_OPTION}")
        if not len(conditions) == len(weights) == len(seeds):
            raise ValueError("one weight list and one seed per condition are needed")
        if not conditions:
            return []
        prompts, positives, negatives = [], [], []
        for conds, ws in zip(conditions, weights):
            pictures, image_weights, text = split_conditions(conds, ws)
            pos, neg = self._embed(pictures, image_weights)
            positives.append(pos)
            negatives.append(neg)
            prompts.append(text)
        return self._generate(prompts, seeds, settings, (torch.stack(positives), torch.stack(negatives)))

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
        with torch.inference_mode(), self._image_prompts(pipe, None, 1) as extra:
            for image, mask, text, seed in zip(images, masks, prompt, seeds):
                array = pipe(prompt=text, image=image, mask_image=mask, width=settings.width, height=settings.height,
                             num_inference_steps=max(settings.num_inference_steps, 2), strength=1.0,
                             guidance_scale=settings.guidance_scale, output_type="np",
                             generator=cpu_generators([seed])[0], **extra, **self._negatives(1)).images[0]
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


def _guess_defaults(pipe: Any) -> GenerationSettings:
    """The pipeline's native size (denoiser sample size × VAE scale), 30 steps, guidance 5."""
    size = FALLBACK.width
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
    scale = getattr(pipe, "vae_scale_factor", None)
    if isinstance(sample, int) and isinstance(scale, int):
        size = sample * scale
    return dataclasses.replace(FALLBACK, width=size, height=size)
