"""Kandinsky 2.2 (an unCLIP model: CLIP prior + diffusion decoder) through diffusers.

The prior maps a prompt to a CLIP image embedding; the decoder (a UNet over
MoVQ latents) turns the embedding into an image. ``KandinskyGenerator``
holds both pipelines, loaded once, and generates in batches with one seeded
``torch.Generator`` per image, so image ``i`` depends only on its own prompt
and seed.

A saved model is a directory with ``prior/`` and ``decoder/`` (each a
diffusers ``save_pretrained`` folder) and ``dalle_data_model.json`` holding
the default sampling settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dalle_data.config import setting_problem
from dalle_data.device_images import from_decoder
from dalle_data.errors import ModelLoadError
from dalle_data.generators.base import Defect, GenerationSettings, cpu_generators
from dalle_data.hub import load_with_hub_fallback, quiet_libraries
from dalle_data.masks import feathered_composite

if TYPE_CHECKING:
    import torch
    from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline
    from PIL.Image import Image

log = logging.getLogger(__name__)

PRIOR_ID = "kandinsky-community/kandinsky-2-2-prior"
DECODER_ID = "kandinsky-community/kandinsky-2-2-decoder"
INPAINT_ID = "kandinsky-community/kandinsky-2-2-decoder-inpaint"
MODEL_CARD = "dalle_data_model.json"

# Settings that suit the released 2.2 checkpoints (the pipeline defaults are
# 100 decoder steps; 50 gives the same quality at half the cost).
KANDINSKY_DEFAULTS = GenerationSettings(
    width=512, height=512, num_inference_steps=50, prior_num_inference_steps=25,
    guidance_scale=4.0, prior_guidance_scale=4.0,
)


def read_model_card(folder: Path, *, prior: bool) -> GenerationSettings | None:
    """The sampling defaults in ``folder``'s ``dalle_data_model.json`` (None without one), each in the range
    of its flag; the prior's only for a model that has a prior."""
    card = folder / MODEL_CARD
    if not card.is_file():
        return None
    try:
        values = json.loads(card.read_text(encoding="utf-8"))["defaults"]
        settings = GenerationSettings(**values)
    except (ValueError, KeyError, TypeError) as err:
        raise ModelLoadError(f"{card} is not valid: {err}") from None
    for key, value in values.items():
        problem = None if key.startswith("prior_") and not prior else setting_problem(key, value)
        if problem:
            raise ModelLoadError(f"{card}: defaults.{key} is {value!r}: {problem}; fix the file")
    return settings


NEGATIVE_SALT = 0x5EED_0F_4E6  # the negative prompt's prior noise: another stream than the image's own


class KandinskyGenerator:
    """Text → image with a Kandinsky 2.2 prior and decoder."""

    backend = "kandinsky2.2"

    def __init__(
        self,
        prior: KandinskyV22PriorPipeline,
        decoder: KandinskyV22Pipeline,
        *,
        model: str,
        defaults: GenerationSettings = KANDINSKY_DEFAULTS,
        device: str = "cpu",
    ) -> None:
        self.prior = _ready(prior, device)
        self.decoder = _ready(decoder, device)
        self.model = model
        self.defaults = defaults
        self.device = device
        # On a GPU the decoder output stays there as tensors (dalle_data.device_images): checked and
        # preprocessed for CLIP on the device, copied to the host once, to be encoded.
        self.tensor_outputs = str(device).startswith("cuda")
        self.negative_prompt: str | None = None  # set_negative_prompt (--option negative_prompt)
        self.compiled = False
        self._inpaint: Any = None
        self._inpaint_loader: Callable[[], Any] | None = None

    def compile(self, backend: str | None = None) -> None:
        """``torch.compile`` the denoisers (the prior transformer, the decoder UNet) with fixed shapes: the
        executor then pads every batch to the same size, so they compile once per worker."""
        import os

        import torch

        backend = backend or os.environ.get("DALLE_DATA_COMPILE_BACKEND", "inductor")
        self.prior.prior = torch.compile(self.prior.prior, dynamic=False, backend=backend)
        self.decoder.unet = torch.compile(self.decoder.unet, dynamic=False, backend=backend)
        self.compiled = True

    def set_inpaint(self, pipeline: Any = None, loader: Callable[[], Any] | None = None) -> None:
        """The inpainting decoder, or a loader called on first use (it is large)."""
        self._inpaint = _ready(pipeline, self.device) if pipeline is not None else None
        self._inpaint_loader = loader

    @property
    def capabilities(self) -> frozenset[str]:
        """What this model can do (``dalle_data.modes``): inpainting needs an inpainting decoder."""
        caps = {"text-to-image", "variation", "fuse"}
        if self._inpaint is not None or self._inpaint_loader is not None:
            caps.add("inpaint")
        return frozenset(caps)

    @property
    def inpaint_decoder(self) -> Any:
        if self._inpaint is None:
            if self._inpaint_loader is None:
                raise ModelLoadError(f"model {self.model!r} has no inpainting decoder (a saved model needs inpaint/)")
            self._inpaint = _ready(self._inpaint_loader(), self.device)
        return self._inpaint

    # -- loading and saving -------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        prior: str | Path,
        decoder: str | Path,
        *,
        model: str,
        device: str = "cpu",
        dtype: torch.dtype | None = None,
        defaults: GenerationSettings = KANDINSKY_DEFAULTS,
        inpaint: str | Path | None = None,
    ) -> KandinskyGenerator:
        """Load prior and decoder from hub ids or local ``save_pretrained`` folders
        (the inpainting decoder, if named, is loaded on first use)."""
        from diffusers import KandinskyV22Pipeline, KandinskyV22PriorPipeline

        quiet_libraries()

        def loader(pipeline_cls: Any, name: str | Path) -> Any:
            kwargs = {"dtype": dtype} if dtype is not None else {}
            if Path(name).is_dir():
                try:
                    return pipeline_cls.from_pretrained(str(name), **kwargs)
                except Exception as err:  # noqa: BLE001 - a broken folder is a user error
                    raise ModelLoadError(f"cannot load {name}: {str(err).splitlines()[0]}") from err
            return load_with_hub_fallback(
                lambda local: pipeline_cls.from_pretrained(str(name), local_files_only=local, **kwargs),
                what="model", name=str(name),
            )

        prior_pipe = loader(KandinskyV22PriorPipeline, prior)
        decoder_pipe = loader(KandinskyV22Pipeline, decoder)
        generator = cls(prior_pipe, decoder_pipe, model=model, defaults=defaults, device=device)
        if inpaint is not None:
            from diffusers import KandinskyV22InpaintPipeline

            generator.set_inpaint(loader=lambda: loader(KandinskyV22InpaintPipeline, inpaint))
        return generator

    @classmethod
    def from_directory(cls, path: str | Path, *, device: str = "cpu", dtype: torch.dtype | None = None) -> KandinskyGenerator:
        """Load a directory written by ``save_pretrained``."""
        path = Path(path)
        if not (path / "prior").is_dir() or not (path / "decoder").is_dir():
            raise ModelLoadError(
                f"{path} is not a dalle-data model directory: it needs prior/ and decoder/ "
                "folders (as written by save_pretrained)"
            )
        defaults = read_model_card(path, prior=True) or KANDINSKY_DEFAULTS
        inpaint = path / "inpaint" if (path / "inpaint").is_dir() else None
        return cls.from_pretrained(
            path / "prior", path / "decoder", model=str(path), device=device, dtype=dtype, defaults=defaults,
            inpaint=inpaint,
        )

    def save_pretrained(self, path: str | Path) -> None:
        path = Path(path)
        self.prior.save_pretrained(str(path / "prior"))
        self.decoder.save_pretrained(str(path / "decoder"))
        if self._inpaint is not None or self._inpaint_loader is not None:
            self.inpaint_decoder.save_pretrained(str(path / "inpaint"))
        card = {"backend": self.backend, "defaults": dataclasses.asdict(self.defaults)}
        (path / MODEL_CARD).write_text(json.dumps(card, indent=2) + "\n")

    # -- generation -----------------------------------------------------------
    def __call__(
        self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings
    ) -> list[Image | Defect]:
        import torch

        if len(prompt) != len(seeds):
            raise ValueError("one seed per prompt is needed")
        if not prompt:
            return []
        # CPU generators make the noise independent of the device and of the batch.
        generators = cpu_generators(seeds)
        with torch.inference_mode():
            prior_out = self._prior(prompt, seeds, generators, settings)
            images = self.decoder(
                image_embeds=prior_out.image_embeds,
                negative_image_embeds=prior_out.negative_image_embeds,
                width=settings.width,
                height=settings.height,
                num_inference_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale,
                generator=generators,
                output_type=self._output_type,
            ).images
        return self._images(images)

    def set_negative_prompt(self, text: str | None, settings: GenerationSettings | None = None) -> None:
        """What every image should not show: the prior embeds it too and the decoder steers away from it (in
        every mode: a variation's or fusion's negative image embedding is the negative prompt's)."""
        self.negative_prompt = text

    def _prior(self, prompt: Sequence[str], seeds: Sequence[int], generators: list[Any],
               settings: GenerationSettings) -> Any:
        """The prior's image embeddings for ``prompt``. With a negative prompt the prior also embeds it, once
        per image, and the decoder steers away from that: its noise comes from a second seeded generator per
        image, so image ``i`` still depends only on its own prompt and seed."""
        negatives = None
        if self.negative_prompt:
            negatives = [self.negative_prompt] * len(prompt)
            generators = generators + cpu_generators([(int(s) ^ NEGATIVE_SALT) % 2**63 for s in seeds])
        return self.prior(prompt=list(prompt), negative_prompt=negatives, generator=generators,
                          num_inference_steps=settings.prior_num_inference_steps,
                          guidance_scale=settings.prior_guidance_scale)

    @property
    def _output_type(self) -> str:
        return "pt" if self.tensor_outputs else "np"

    def _images(self, images: Any) -> list[Image | Defect]:
        if self.tensor_outputs:
            return from_decoder(images)  # type: ignore[return-value]
        return [_to_image(array) for array in images]

    def variation(
        self, conditions: Sequence[Sequence[Image | str]], weights: Sequence[Sequence[float]],
        seeds: Sequence[int], settings: GenerationSettings,
    ) -> list[Image | Defect]:
        """Images from weighted mixes of CLIP image embeddings (and text), via ``prior.interpolate``.

        ``conditions[i]`` is one image (a variation), two images (a fusion), plus
        optionally the class prompt (a text nudge), with ``weights[i]`` to match.
        """
        import torch

        embeds, negatives = [], []
        with torch.inference_mode():
            for conds, ws, seed in zip(conditions, weights, seeds):
                out = self.prior.interpolate(
                    list(conds), list(ws), num_inference_steps=settings.prior_num_inference_steps,
                    generator=cpu_generators([seed])[0], negative_prompt=self.negative_prompt or "",
                    guidance_scale=settings.prior_guidance_scale, device=self.device,
                )
                embeds.append(out.image_embeds)
                negatives.append(out.negative_image_embeds)
            images = self.decoder(
                image_embeds=torch.cat(embeds), negative_image_embeds=torch.cat(negatives),
                width=settings.width, height=settings.height, num_inference_steps=settings.num_inference_steps,
                guidance_scale=settings.guidance_scale, output_type=self._output_type,
                generator=cpu_generators(seeds),
            ).images
        return self._images(images)

    def inpaint(
        self, images: Sequence[Image], masks: Sequence[Image], prompt: Sequence[str],
        seeds: Sequence[int], settings: GenerationSettings,
    ) -> list[Image | Defect]:
        """Repaint the white part of each mask, guided by the prompt; the black part is kept.

        The decoder's output is composited over the source with a feathered
        edge (``masks.feathered_composite``): kept pixels beyond the blend band
        are the source's own (the MoVQ round trip would blur them), and there is
        no hard seam at the mask edge.
        One decoder call per image: diffusers' Kandinsky inpainting blends the
        latents of the first image of a batch only.
        """
        import torch

        generators = cpu_generators(seeds)
        out: list[Image | Defect] = []
        with torch.inference_mode():
            prior_out = self._prior(prompt, seeds, generators, settings)
            for i, (image, mask) in enumerate(zip(images, masks)):
                array = self.inpaint_decoder(
                    image_embeds=prior_out.image_embeds[i : i + 1],
                    negative_image_embeds=prior_out.negative_image_embeds[i : i + 1],
                    image=image, mask_image=mask, width=settings.width, height=settings.height,
                    num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
                    generator=generators[i], output_type="np",
                ).images[0]
                out.append(repaint(_to_image(array), image, mask))
        return out


def repaint(result: Image | Defect, image: Image, mask: Image) -> Image | Defect:
    """An inpainting decoder's output over its source: the source's own pixels outside the mask, a feathered
    edge between (``masks.feathered_composite``), at the output's size; a ``Defect`` stays one."""
    from PIL import Image as PILImage

    if isinstance(result, Defect):
        return result
    source = image.convert("RGB")
    if source.size != result.size:
        source = source.resize(result.size, PILImage.Resampling.BICUBIC)
    return feathered_composite(result, source, mask)


def _to_image(array: Any) -> Image | Defect:
    import numpy as np
    from PIL import Image as PILImage

    if not np.isfinite(array).all():
        return Defect("non-finite values in the decoder output (fp16 overflow?)")
    return PILImage.fromarray((array * 255).round().astype("uint8"))  # exactly diffusers' numpy_to_pil


def _ready(pipe: Any, device: str) -> Any:
    if pipe is None:
        return None
    pipe = pipe.to(device)
    if str(device).startswith("cuda"):  # convolutions (UNet, MoVQ) run faster channels-last on GPUs
        import torch

        for name in ("unet", "movq"):
            module = getattr(pipe, name, None)
            if module is not None:
                module.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    for component in pipe.components.values():
        if hasattr(component, "eval") and hasattr(component, "parameters"):
            component.eval()  # freshly built modules start in training mode
    return pipe
