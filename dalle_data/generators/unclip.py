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

PIPELINE = "StableUnCLIPImg2ImgPipeline"
PRESET_REPO = "stabilityai/stable-diffusion-2-1-unclip-small"


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


def tiny_stable_unclip(seed: int = 0) -> Any:
    """A tiny ``StableUnCLIPImg2ImgPipeline`` (64×64), random weights, built offline."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

    from dalle_data.generators.tiny import clip_tokenizer, seeded
    from dalle_data.generators.tiny_families import _text_config

    dim = 32
    with seeded(seed):
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=dim, projection_dim=dim, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            intermediate_size=64, patch_size=8)).eval()
        text_encoder = CLIPTextModel(_text_config(dim, 2)).eval()
    with seeded(seed + 1):
        unet = UNet2DConditionModel(sample_size=32, in_channels=4, out_channels=4,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(16, 32),
                                    attention_head_dim=(2, 4), class_embed_type="projection",
                                    projection_class_embeddings_input_dim=dim * 2, cross_attention_dim=dim,
                                    layers_per_block=1, upcast_attention=True, use_linear_projection=True,
                                    norm_num_groups=8)
        vae = AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                            up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                            norm_num_groups=8, sample_size=64)
    return StableUnCLIPImg2ImgPipeline(
        feature_extractor=CLIPImageProcessor(crop_size=32, size=32), image_encoder=image_encoder,
        image_normalizer=StableUnCLIPImageNormalizer(embedding_dim=dim),
        image_noising_scheduler=DDPMScheduler(beta_schedule="squaredcos_cap_v2"), tokenizer=clip_tokenizer(),
        text_encoder=text_encoder, unet=unet,
        scheduler=DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                prediction_type="v_prediction", set_alpha_to_one=False, steps_offset=1),
        vae=vae)
