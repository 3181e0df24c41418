"""Architectures of the shapes-demo unCLIP, in the Kandinsky 2.2 component layout.

Small enough to train on a two-core CPU within the budget and to ship as
safetensors under 25 MB in half precision; built from the same diffusers and
transformers classes as the released Kandinsky 2.2, so the product's backend
loads them unchanged.
"""

from __future__ import annotations

from typing import Any

from dalle_data.demo.world import SIZE
from dalle_data.generators.tiny import _clip_bpe

EMBED_DIM = 64  # CLIP projection size = prior embedding size = decoder conditioning size
CONTEXT = 32  # text tokens; demo captions are under 20
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def tokenizer() -> Any:
    from transformers import CLIPTokenizer

    vocab, merges = _clip_bpe()
    return CLIPTokenizer(vocab=dict(vocab), merges=list(merges), model_max_length=CONTEXT)


def clip_config(width: int = 64, layers: int = 4, patch: int = 4) -> Any:
    from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig

    text = CLIPTextConfig(
        vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=CONTEXT, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
        projection_dim=EMBED_DIM,
    )
    vision = CLIPVisionConfig(
        hidden_size=width, intermediate_size=2 * width, num_hidden_layers=layers, num_attention_heads=4,
        image_size=SIZE, patch_size=patch, projection_dim=EMBED_DIM,
    )
    return CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=EMBED_DIM)


def image_processor() -> Any:
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(
        size=SIZE, crop_size=SIZE, do_resize=True, do_center_crop=True, do_normalize=True,
        image_mean=CLIP_MEAN, image_std=CLIP_STD, resample=3,
    )


def movq() -> Any:
    from diffusers import VQModel

    return VQModel(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[32, 64, 64],
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D", "AttnDownEncoderBlock2D"],
        up_block_types=["AttnUpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        layers_per_block=1, norm_num_groups=8, norm_type="spatial", num_vq_embeddings=256, vq_embed_dim=4,
    )


def unet(in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=SIZE // 4, in_channels=in_channels, out_channels=8, addition_embed_type="image",
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn", block_out_channels=(48, 96), layers_per_block=1, norm_num_groups=16,
        encoder_hid_dim=EMBED_DIM, encoder_hid_dim_type="image_proj", cross_attention_dim=64,
        attention_head_dim=16, resnet_time_scale_shift="scale_shift", class_embed_type=None,
    )


def prior() -> Any:
    from diffusers import PriorTransformer

    return PriorTransformer(
        num_attention_heads=4, attention_head_dim=16, num_layers=4, embedding_dim=EMBED_DIM,
        num_embeddings=CONTEXT, additional_embeddings=4,
    )


def prior_scheduler() -> Any:
    from diffusers import UnCLIPScheduler

    return UnCLIPScheduler(
        variance_type="fixed_small_log", prediction_type="sample", num_train_timesteps=1000,
        clip_sample=True, clip_sample_range=10.0,
    )


def decoder_scheduler() -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=1000, beta_schedule="linear", beta_start=0.00085, beta_end=0.012,
        clip_sample=False, prediction_type="epsilon", thresholding=False,
    )
