"""Images per second of each backend family on tiny configs (random weights), CPU or CUDA.

Kandinsky 2.2 (the ``tiny`` preset), Stable Diffusion, SDXL, SDXL with an IP-Adapter (variations by image
prompt) and Stable unCLIP (variations), each built from configs, saved and loaded back through
``--model PATH``; 64×64, 4 denoising steps, batches of 4.
The figures compare the families' overheads, not real models (those need a GPU and their weights).

    .venv/bin/python benchmarks/backends.py [--images 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from dalle_data.generators.registry import load_generator
    from dalle_data.generators.tiny_families import save_tiny, save_tiny_ip_adapter

    print(f"# {platform.machine()}, {os.cpu_count()} CPU(s), torch {torch.__version__}, device {args.device}; "
          f"{args.images} images, batches of {args.batch}")
    print(f"{'family':<15} {'backend':<42} {'img/s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"kandinsky": Path(tmp) / "kandinsky"}
        load_generator("tiny").save_pretrained(folders["kandinsky"])
        for family in ("sd", "sdxl", "stable-unclip"):
            folders[family] = save_tiny(family, Path(tmp) / family)
        folders["sdxl+ip-adapter"] = folders["sdxl"]
        adapter = save_tiny_ip_adapter(load_generator(str(folders["sdxl"])).pipe, Path(tmp) / "ip-adapter")
        source = Image.new("RGB", (64, 64), (120, 60, 200))
        for family, folder in folders.items():
            generator = load_generator(str(folder), device=args.device)
            if family == "sdxl+ip-adapter":
                generator.use_ip_adapter(adapter)
            settings = replace(generator.defaults, width=64, height=64, num_inference_steps=4,
                               prior_num_inference_steps=min(4, generator.defaults.prior_num_inference_steps) or 0)

            def batch(n: int, start: int) -> None:
                seeds = list(range(start, start + n))
                if "text-to-image" in generator.capabilities and getattr(generator, "ip_adapter", None) is None:
                    generator([f"a photo of a thing {s}" for s in seeds], seeds, settings)
                else:
                    generator.variation([[source]] * n, [[1.0]] * n, seeds, settings)

            batch(args.batch, 0)  # warm-up
            t = time.perf_counter()
            for start in range(0, args.images, args.batch):
                batch(min(args.batch, args.images - start), 1000 + start)
            rate = args.images / (time.perf_counter() - t)
            print(f"{family:<15} {generator.backend:<42} {rate:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
