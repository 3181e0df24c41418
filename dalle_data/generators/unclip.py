"""Stable unCLIP (``StableUnCLIPImg2ImgPipeline``) as a variation and fuse backend.

An unCLIP decoder: a CLIP image embedding in, an image out. A variation
decodes one source's embedding; a fuse decodes the weighted mean of two
sources' embeddings (the same weights as Kandinsky's ``interpolate``); a
class prompt among the conditions (``--prompt-weight``) is passed as the
text prompt. ``noise_level`` 0 keeps the embedding as it is. One seeded CPU
generator per image, as everywhere.

It has no text-to-image: pair it with text modes of another run, or use
Kandinsky 2.2, which does both.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dalle_data.errors import ModelLoadError
from dalle_data.generators.base import GenerationSettings, cpu_generators, split_conditions
from dalle_data.generators.kandinsky import _ready, _to_image, read_model_card
from dalle_data.generators.text2image import FALLBACK, _guess_defaults, save_pipeline
from dalle_data.hub import load_with_hub_fallback, quiet_libraries
from dalle_data.presets import PRESETS

PIPELINE = "StableUnCLIPImg2ImgPipeline"
PRESET_REPO = str(PRESETS["stable-unclip"].repo)  # the one preset table


class StableUnCLIPGenerator:
    """Variation and fuse with a Stable unCLIP image-to-image pipeline."""

    backend = f"diffusers:{PIPELINE}"
    capabilities = frozenset({"variation", "fuse"})

    def __init__(self, pipe: Any, *, model: str, defaults: GenerationSettings = FALLBACK, device: str = "cpu") -> None:
        self.pipe = _ready(pipe, device)
        self.model = model
        self.defaults = defaults
        self.device = device
        self.compiled = False

    @classmethod
    def from_pretrained(cls, name: str | Path, *, model: str | None = None, device: str = "cpu",
                        dtype: Any = None) -> StableUnCLIPGenerator:
        from diffusers import StableUnCLIPImg2ImgPipeline

        quiet_libraries()
        kwargs = {"torch_dtype": dtype} if dtype is not None else {}
        folder = Path(name).expanduser()
        if folder.is_dir():
            try:
                pipe = StableUnCLIPImg2ImgPipeline.from_pretrained(str(folder), **kwargs)
            except Exception as err:  # noqa: BLE001 - a broken folder is a user error
                raise ModelLoadError(f"cannot load {folder}: {str(err).strip().splitlines()[0]}") from err
            defaults = read_model_card(folder, prior=False) or _guess_defaults(pipe)
        else:
            pipe = load_with_hub_fallback(
                lambda local: StableUnCLIPImg2ImgPipeline.from_pretrained(str(name), local_files_only=local, **kwargs),
                what="model", name=str(name))
            defaults = _guess_defaults(pipe)
        return cls(pipe, model=model or str(name), defaults=defaults, device=device)

    def save_pretrained(self, path: str | Path) -> None:
        save_pipeline(self, path)

    def __call__(self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings) -> list[Any]:
        raise ModelLoadError(f"{self.model} is a Stable unCLIP image-to-image model: it makes variations and "
                             "fusions, not images from text")

    def embed(self, images: Sequence[Any]) -> Any:
        """The CLIP image embeddings the decoder is conditioned on (unnormalised, as the pipeline makes them)."""
        import torch

        pixels = self.pipe.feature_extractor(images=list(images), return_tensors="pt").pixel_values
        encoder = self.pipe.image_encoder
        with torch.inference_mode():
            return encoder(pixels.to(device=self.device, dtype=next(encoder.parameters()).dtype)).image_embeds

    def variation(self, conditions: Sequence[Sequence[Any]], weights: Sequence[Sequence[float]], seeds: Sequence[int],
                  settings: GenerationSettings) -> list[Any]:
        import torch

        if not conditions:
            return []
        embeds, prompts = [], []
        for conds, ws in zip(conditions, weights):
            pictures, image_weights, text = split_conditions(conds, ws)
            emb = self.embed(pictures)
            w = torch.tensor(image_weights, dtype=emb.dtype, device=emb.device)
            embeds.append((emb * w[:, None]).sum(dim=0) / w.sum())
            prompts.append(text)
        with torch.inference_mode():
            images = self.pipe(
                image_embeds=torch.stack(embeds), prompt=prompts, width=settings.width, height=settings.height,
                num_inference_steps=settings.num_inference_steps, guidance_scale=settings.guidance_scale,
                noise_level=0, output_type="np",
                generator=cpu_generators(seeds)).images
        return [_to_image(array) for array in images]
