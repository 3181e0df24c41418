"""Throughput of a real-architecture SDXL (random weights) through dalle-data's text-to-image path.

The UNet, VAE and both text encoders are built from the configs of stabilityai/stable-diffusion-xl-base-1.0
(2.6 B UNet parameters) with random weights, so no download is needed; the pipeline is then driven exactly
as ``--model`` drives a downloaded SDXL (``Text2ImageGenerator``: per-image seeds, batching, half precision
on CUDA, optional ``torch.compile``). Random weights make noise, but the arithmetic, memory and speed are
those of the real model.

    .venv/bin/python benchmarks/real_arch.py --device cuda --size 1024 --steps 20 --batch 4 --images 16
    .venv/bin/python benchmarks/real_arch.py --device cpu --size 256 --steps 1 --batch 1 --images 1   # smoke
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def sdxl_pipeline(dtype):  # noqa: ANN001, ANN201 - torch dtype in, StableDiffusionXLPipeline out
    """SDXL 1.0 base's architecture with random weights (configs copied from its model repo)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dalle_data.generators.tiny import clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816, norm_num_groups=32)
    vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        layers_per_block=2, sample_size=1024, scaling_factor=0.13025, norm_num_groups=32)
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, projection_dim=768, hidden_act="quick_gelu"))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120,
                                                        num_attention_heads=20, num_hidden_layers=32,
                                                        projection_dim=1280, hidden_act="gelu"))
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    pipe = StableDiffusionXLPipeline(unet=unet, vae=vae, text_encoder=text, text_encoder_2=text_2,
                                     tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer(), scheduler=scheduler)
    return pipe.to(dtype=dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()

    import torch

    from dalle_data.device import default_dtype
    from dalle_data.generators.base import GenerationSettings
    from dalle_data.generators.text2image import Text2ImageGenerator

    dtype = default_dtype(args.device, "auto")
    t = time.perf_counter()
    generator = Text2ImageGenerator(sdxl_pipeline(dtype), model="sdxl-architecture (random weights)",
                                    device=args.device)
    built = time.perf_counter() - t
    if args.compile:
        generator.compile()
    settings = GenerationSettings(width=args.size, height=args.size, num_inference_steps=args.steps,
                                  prior_num_inference_steps=0, guidance_scale=5.0)
    unet_params = sum(p.numel() for p in generator.pipe.unet.parameters()) / 1e9
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    print(f"# SDXL architecture, UNet {unet_params:.2f} B parameters, {dtype}, {gpu}; built in {built:.1f} s")

    def batch(n: int, start: int) -> None:
        seeds = list(range(start, start + n))
        generator([f"a photo of a thing {s}" for s in seeds], seeds, settings)

    t = time.perf_counter()
    batch(args.batch, 0)  # warm-up (and compilation)
    warm = time.perf_counter() - t
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    for start in range(0, args.images, args.batch):
        batch(min(args.batch, args.images - start), 1000 + start)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t
    peak = f", peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device.startswith("cuda") else ""
    print(f"{args.size}², {args.steps} steps, batch {args.batch}: {args.images / seconds:.3f} img/s "
          f"({seconds / args.images:.2f} s/image; warm-up {warm:.1f} s{peak})")


if __name__ == "__main__":
    main()
