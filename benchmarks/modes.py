"""Throughput of each generation mode relative to text-to-image, on the tiny model.

Runs the generate job (plan → generate → score → write) for the same number
of images in each mode — vanilla (text to image), variation, fuse, inpaint —
with the models loaded once, and prints images per second and the ratio to
vanilla. Also measures inpainting's fidelity outside the mask: the mean
absolute pixel difference (0-255) between output and source where the mask
is black, as written (composited) and straight from the decoder.

    .venv/bin/python benchmarks/modes.py [--images 48] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_sources(root: Path, classes: list[str], per_class: int) -> None:
    import numpy as np
    from PIL import Image

    for c, cls in enumerate(classes):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            rng = np.random.default_rng(100 * c + i)
            y, x = np.mgrid[0:96, 0:96]
            base = np.stack([(x * 2 + i * 7) % 256, (y * 2 + c * 50) % 256, ((x + y) + 30 * i) % 256], axis=-1)
            noise = rng.integers(-20, 20, base.shape)
            Image.fromarray(np.clip(base + noise, 0, 255).astype("uint8")).save(root / cls / f"img{i}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="best of N per mode, modes interleaved")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import ImageOps

    from dalle_data.config import build_spec
    from dalle_data.generators import load_generator
    from dalle_data.job import run_generate
    from dalle_data.masks import auto_mask
    from dalle_data.progress import NullProgress
    from dalle_data.scoring import load_scorer

    generator, scorer = load_generator("tiny"), load_scorer("tiny")
    classes = ["cat", "dog", "fox", "owl"]
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        make_sources(src, classes, 6)
        generator(["warm up"], [0], generator.defaults)
        for rep in range(args.repeats):
            for mode in ("vanilla", "variation", "fuse", "inpaint"):
                spec = build_spec({"classes": classes, "per_class": args.images // len(classes), "modes": mode,
                                   "model": "tiny", "filter": "none", "batch_size": args.batch_size,
                                   "from_dir": str(src) if mode != "vanilla" else None,
                                   "out": Path(tmp) / f"{mode}{rep}", "formats": ["parquet"]})
                t = time.perf_counter()
                summary = run_generate(spec, progress=NullProgress(), generator=generator, scorer=scorer)
                rate = summary["generated"] / (time.perf_counter() - t)
                rates[mode] = max(rates.get(mode, 0.0), rate)
        source = ImageOps.fit(__import__("PIL.Image", fromlist=["Image"]).open(src / "cat" / "img0.png").convert("RGB"), (64, 64))
        results = {}
        for kind in ("center", "border"):
            mask, _ = auto_mask(kind, (64, 64), 0)
            keep = np.asarray(mask) < 128
            out = np.asarray(generator.inpaint([source], [mask], ["a photo of a cat"], [1], generator.defaults)[0], int)
            with torch.inference_mode():
                emb = generator.prior(prompt=["a photo of a cat"], generator=torch.Generator().manual_seed(1),
                                      num_inference_steps=generator.defaults.prior_num_inference_steps)
                raw = generator.inpaint_decoder(image_embeds=emb.image_embeds, negative_image_embeds=emb.negative_image_embeds,
                                                image=source, mask_image=mask, width=64, height=64,
                                                num_inference_steps=generator.defaults.num_inference_steps,
                                                generator=torch.Generator().manual_seed(1), output_type="np").images[0]
            raw = (raw * 255).round().astype(int)
            diff = lambda a, where: float(np.abs(a - np.asarray(source, int))[where].mean())  # noqa: E731
            results[kind] = (diff(out, keep), diff(out, ~keep), diff(raw, keep))

    s = generator.defaults
    print(f"tiny model, {args.images} images per mode, batch {args.batch_size}, "
          f"{s.width}px, decoder {s.num_inference_steps} steps, prior {s.prior_num_inference_steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'mode':<10} {'img/s':>7} {'vs vanilla':>11}")
    for mode, rate in rates.items():
        print(f"{mode:<10} {rate:>7.2f} {rate / rates['vanilla']:>10.2f}x")
    print("inpainting, mean |output - source| (0-255):")
    print(f"{'mask':<8} {'outside (written)':>18} {'inside (written)':>17} {'outside (decoder alone)':>24}")
    for kind, (out_keep, out_paint, raw_keep) in results.items():
        print(f"{kind:<8} {out_keep:>18.2f} {out_paint:>17.2f} {raw_keep:>24.2f}")


if __name__ == "__main__":
    main()
