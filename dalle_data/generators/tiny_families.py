"""Tiny text-to-image pipelines of other families, built offline from configs (as diffusers' own tests do).

Random weights, real classes: ``StableDiffusionPipeline`` (SD 1.x/2.x layout)
and ``StableDiffusionXLPipeline`` (two text encoders, size conditioning).
Saved with ``save_pretrained`` they are folders that ``--model`` loads like
any downloaded model, through the same code (tests, benchmarks).

``save_tiny_ip_adapter`` writes a tiny IP-Adapter for one of them, laid out as
the real ``h94/IP-Adapter`` repository is (original ``image_proj.*`` /
``ip_adapter.*`` keys, a CLIP image encoder in ``image_encoder/`` next to the
weights), so ``--option ip_adapter=FOLDER`` loads it like a downloaded one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dalle_data.generators.base import GenerationSettings
from dalle_data.generators.ip_adapter import IP_ADAPTERS, ip_adapter_family
from dalle_data.generators.text2image import Text2ImageGenerator
from dalle_data.generators.tiny import clip_tokenizer, seeded
from dalle_data.generators.unclip import StableUnCLIPGenerator


def _text_config(hidden: int, layers: int, projection: int | None = None) -> Any:
    from transformers import CLIPTextConfig

    return CLIPTextConfig(bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_size=hidden,
                          intermediate_size=2 * hidden, layer_norm_eps=1e-5, num_attention_heads=4,
                          num_hidden_layers=layers, vocab_size=49408, projection_dim=projection or hidden,
                          max_position_embeddings=77, hidden_act="gelu")


def _vae(seed: int) -> Any:
    from diffusers import AutoencoderKL

    with seeded(seed):
        return AutoencoderKL(block_out_channels=[16, 32], in_channels=3, out_channels=3,
                             down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
                             up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"], latent_channels=4,
                             norm_num_groups=8, sample_size=64)


def tiny_sd(seed: int = 0) -> Any:
    """A ``StableDiffusionPipeline`` (64×64: 32×32 latents, a 2× VAE)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel

    with seeded(seed):
        unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                    norm_num_groups=8, attention_head_dim=4)
    with seeded(seed + 1):
        text_encoder = CLIPTextModel(_text_config(32, 2)).eval()
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(unet=unet, scheduler=scheduler, vae=_vae(seed + 2), text_encoder=text_encoder,
                                   tokenizer=clip_tokenizer(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def tiny_sdxl(seed: int = 0) -> Any:
    """A ``StableDiffusionXLPipeline`` (64×64): two text encoders, size and crop conditioning."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    with seeded(seed):
        unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=4,
                                    out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                    use_linear_projection=True, addition_embed_type="text_time",
                                    addition_time_embed_dim=8, transformer_layers_per_block=(1, 1),
                                    projection_class_embeddings_input_dim=6 * 8 + 32, cross_attention_dim=64,
                                    norm_num_groups=8)
    with seeded(seed + 1):
        text_encoder = CLIPTextModel(_text_config(32, 2)).eval()
        text_encoder_2 = CLIPTextModelWithProjection(_text_config(32, 2, projection=32)).eval()
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                       beta_schedule="scaled_linear", timestep_spacing="leading")
    return StableDiffusionXLPipeline(unet=unet, scheduler=scheduler, vae=_vae(seed + 2), text_encoder=text_encoder,
                                     text_encoder_2=text_encoder_2, tokenizer=clip_tokenizer(),
                                     tokenizer_2=clip_tokenizer(), force_zeros_for_empty_prompt=True)


def tiny_stable_unclip(seed: int = 0) -> Any:
    """A tiny ``StableUnCLIPImg2ImgPipeline`` (64×64), random weights, built offline."""
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableUnCLIPImg2ImgPipeline, UNet2DConditionModel
    from diffusers.pipelines.stable_diffusion.stable_unclip_image_normalizer import StableUnCLIPImageNormalizer
    from transformers import CLIPImageProcessor, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection

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


FAMILIES = {"sd": tiny_sd, "sdxl": tiny_sdxl, "stable-unclip": tiny_stable_unclip}


TINY_IMAGE_DIM = 40  # the tiny image encoder's projection width (real ones: 1024 ViT-H, 1280 ViT-bigG)


def _tiny_image_encoder(seed: int) -> Any:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    with seeded(seed):
        return CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=32, projection_dim=TINY_IMAGE_DIM, num_hidden_layers=2, num_attention_heads=4, image_size=32,
            intermediate_size=64, patch_size=8)).eval()


def _hidden_size(config: Any, name: str) -> int:
    """The width of the block an attention processor sits in (as diffusers' IP-Adapter loader computes it)."""
    channels = list(config.block_out_channels)
    if name.startswith("mid_block"):
        return channels[-1]
    if name.startswith("up_blocks"):
        return list(reversed(channels))[int(name.split(".")[1])]
    return channels[int(name.split(".")[1])]


def tiny_ip_adapter_weights(unet: Any, image_dim: int, seed: int = 0) -> dict[str, Any]:
    """An IP-Adapter's tensors in the original (h94) key layout: ``image_proj.proj``/``image_proj.norm`` (4
    image tokens) and ``ip_adapter.{1,3,5,...}.to_{k,v}_ip`` for each cross-attention layer in UNet order."""
    import torch
    from diffusers.models.embeddings import ImageProjection

    cross = unet.config.cross_attention_dim
    with seeded(seed):
        proj = ImageProjection(image_embed_dim=image_dim, cross_attention_dim=cross, num_image_text_embeds=4)
        weights = {"image_proj.proj.weight": proj.image_embeds.weight, "image_proj.proj.bias": proj.image_embeds.bias,
                   "image_proj.norm.weight": proj.norm.weight, "image_proj.norm.bias": proj.norm.bias}
        key_id = 1  # the original counts every processor (attn1, attn2, attn1, ...): cross-attentions are odd
        for name in unet.attn_processors:
            if name.endswith("attn1.processor") or "motion_module" in name:
                continue
            for kind in ("to_k_ip", "to_v_ip"):
                layer = torch.nn.Linear(cross, _hidden_size(unet.config, name), bias=False)
                weights[f"ip_adapter.{key_id}.{kind}.weight"] = layer.weight
            key_id += 2
    return {key: value.detach().clone().contiguous() for key, value in weights.items()}


def save_tiny_ip_adapter(pipe: Any, path: str | Path, seed: int = 0) -> Path:
    """Write a tiny IP-Adapter for ``pipe`` (a tiny SD or SDXL pipeline) under ``path``, as h94/IP-Adapter lays it
    out: ``sdxl_models/ip-adapter_sdxl.safetensors`` + ``sdxl_models/image_encoder/`` for SDXL,
    ``models/ip-adapter_sd15.safetensors`` + ``models/image_encoder/`` for SD. Deterministic from ``seed``."""
    from safetensors.torch import save_file

    family = ip_adapter_family(pipe)
    if family is None:
        raise ValueError(f"{type(pipe).__name__} takes no IP-Adapter")
    source = IP_ADAPTERS[family]
    folder = Path(path) / source.subfolder
    folder.mkdir(parents=True, exist_ok=True)
    encoder = _tiny_image_encoder(seed)
    encoder.save_pretrained(str(folder / "image_encoder"))
    weights = tiny_ip_adapter_weights(pipe.unet, encoder.config.projection_dim, seed + 1)
    save_file(weights, str(folder / source.weight_name), metadata={"format": "pt"})
    return Path(path)


def save_tiny(family: str, path: str | Path, seed: int = 0) -> Path:
    """Build the tiny pipeline of ``family`` and ``save_pretrained`` it to ``path`` (a folder for --model)."""
    kind = StableUnCLIPGenerator if family == "stable-unclip" else Text2ImageGenerator
    generator = kind(FAMILIES[family](seed), model=str(path), defaults=GenerationSettings(
        width=64, height=64, num_inference_steps=4, prior_num_inference_steps=0, guidance_scale=4.0,
        prior_guidance_scale=0.0))
    generator.save_pretrained(path)
    return Path(path)
