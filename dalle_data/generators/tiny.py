"""The ``tiny`` preset: real Kandinsky 2.2 pipeline classes with small random weights.

Built offline in about a second from configs and a fixed seed, so tests,
benchmarks and ``make demo`` exercise exactly the code path real checkpoints
take (the same pipelines, schedulers, tokenizer and batching), only with
noise for pictures. The tokenizer is OpenAI CLIP's real BPE vocabulary, built
from the copy that ships inside ``open_clip``.
"""

from __future__ import annotations

from contextlib import contextmanager
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING

from dalle_data.generators.base import GenerationSettings
from dalle_data.generators.kandinsky import KandinskyGenerator
from dalle_data.hub import quiet_libraries

if TYPE_CHECKING:
    from transformers import CLIPTokenizer

TINY_DIM = 32
TINY_DEFAULTS = GenerationSettings(
    width=64, height=64, num_inference_steps=20, prior_num_inference_steps=10,
    guidance_scale=4.0, prior_guidance_scale=4.0,
)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for weight init without disturbing the caller's state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@lru_cache(maxsize=1)
def _clip_bpe() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from open_clip.tokenizer import SimpleTokenizer

    simple = SimpleTokenizer()
    vocab = dict(simple.encoder)
    vocab["<|startoftext|>"] = vocab.pop("<start_of_text>")
    vocab["<|endoftext|>"] = vocab.pop("<end_of_text>")
    merges = sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)
    return vocab, [tuple(m) for m in merges]


def clip_tokenizer() -> CLIPTokenizer:
    """OpenAI CLIP's tokenizer (49,408 tokens), built offline."""
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=77)


def _tiny_prior(seed: int):  # noqa: ANN202 - diffusers pipeline
    import torch
    from diffusers import KandinskyV22PriorPipeline, PriorTransformer, UnCLIPScheduler
    from transformers import (
        CLIPImageProcessor, CLIPTextConfig, CLIPTextModelWithProjection,
        CLIPVisionConfig, CLIPVisionModelWithProjection,
    )

    d = TINY_DIM
    with seeded(seed):
        text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=49408, hidden_size=d, projection_dim=d, intermediate_size=64,
            num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=77,
            bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        ))
        image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=d, projection_dim=d, intermediate_size=64, num_attention_heads=4,
            num_hidden_layers=2, image_size=32, patch_size=8, num_channels=3,
        ))
        prior = PriorTransformer(num_attention_heads=2, attention_head_dim=16, embedding_dim=d, num_layers=2)
        # The stored CLIP statistics start at zero, which would map every embedding to 0.
        prior.clip_std = torch.nn.Parameter(torch.ones_like(prior.clip_std))
    processor = CLIPImageProcessor(
        size=32, crop_size=32, do_resize=True, do_center_crop=True, do_normalize=True,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3,
    )
    scheduler = UnCLIPScheduler(
        variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
        clip_sample=True, clip_sample_range=10.0,
    )
    return KandinskyV22PriorPipeline(
        prior=prior, image_encoder=image_encoder, text_encoder=text_encoder,
        tokenizer=clip_tokenizer(), scheduler=scheduler, image_processor=processor,
    )


def tiny_unet(seed: int, in_channels: int = 4):  # noqa: ANN201 - diffusers model
    from diffusers import UNet2DConditionModel

    with seeded(seed):
        return UNet2DConditionModel(
            in_channels=in_channels, out_channels=8, addition_embed_type="image",
            down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
            up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(32, 64),
            layers_per_block=1, encoder_hid_dim=TINY_DIM, encoder_hid_dim_type="image_proj",
            cross_attention_dim=32, attention_head_dim=4, resnet_time_scale_shift="scale_shift",
            class_embed_type=None,
        )


def tiny_movq(seed: int):  # noqa: ANN201 - diffusers model
    from diffusers import VQModel

    # Three blocks: a 4x downscale, so a 64x64 image is a 16x16 latent.
    with seeded(seed):
        return VQModel(
            block_out_channels=[32, 32, 64], in_channels=3, out_channels=3, latent_channels=4,
            down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
            up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
            layers_per_block=1, norm_num_groups=8, norm_type="spatial", num_vq_embeddings=12, vq_embed_dim=4,
        )


def tiny_decoder_scheduler():  # noqa: ANN201 - diffusers scheduler
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, prediction_type="epsilon", thresholding=False,
    )


def build_tiny_generator(seed: int = 0, device: str = "cpu") -> KandinskyGenerator:
    """The ``tiny`` preset: a full Kandinsky 2.2 prior + decoder with random weights."""
    from diffusers import KandinskyV22Pipeline

    quiet_libraries()
    decoder = KandinskyV22Pipeline(
        unet=tiny_unet(seed + 1), scheduler=tiny_decoder_scheduler(), movq=tiny_movq(seed + 2)
    )
    generator = KandinskyGenerator(_tiny_prior(seed), decoder, model="tiny", defaults=TINY_DEFAULTS, device=device)
    generator.set_inpaint(tiny_inpaint_decoder(seed))
    return generator


def tiny_inpaint_decoder(seed: int = 0):  # noqa: ANN201 - diffusers pipeline
    """The inpainting decoder: a UNet that also sees the masked image and the mask (4 + 4 + 1 channels)."""
    from diffusers import KandinskyV22InpaintPipeline

    return KandinskyV22InpaintPipeline(
        unet=tiny_unet(seed + 3, in_channels=9), scheduler=tiny_decoder_scheduler(), movq=tiny_movq(seed + 2)
    )
