"""Throughput of each generation mode relative to text-to-image, on the tiny model.

Runs the generate job (plan → generate → score → write) for the same number
of images in each mode — vanilla (text to image), variation, fuse, inpaint —
with the models loaded once, and prints images per second and the ratio to
vanilla. Also measures inpainting's fidelity outside the mask: the mean
absolute pixel difference (0-255) between output and source where the mask
is black, as written (composited) and straight from the decoder; and the seam
at the mask edge, for the feathered composite (``masks.feathered_composite``)
against a hard one made from the same decoder output: the blend band's width,
the mean |output - source| beyond mask + band (0 by construction), and the
largest adjacent-pixel step across the edge (over the 2r+1 pixel pairs from
the last fully kept pixel to the first fully repainted one, r = half the band;
per edge crossing, then the mean and the max over all crossings).

    .venv/bin/python benchmarks/modes.py [--images 48] [--batch-size 8] [--seam-only]
"""

from __future__ import annotations

import argparse
import dataclasses
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


def grow(region, px: int):  # noqa: ANN001, ANN201 - numpy in, numpy out
    """``region`` grown by ``px`` pixels in every direction (a square neighbourhood)."""
    import numpy as np

    h, w = region.shape
    padded = np.pad(region, px)
    out = np.zeros_like(region)
    for dy in range(2 * px + 1):
        for dx in range(2 * px + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def edge_steps(image, repaint, r: int) -> list[int]:  # noqa: ANN001 - numpy arrays
    """Per mask-edge crossing (rows and columns), the largest |step| between adjacent pixels from the last
    fully kept to the first fully repainted pixel (2r + 1 pairs), max over channels."""
    import numpy as np

    out: list[int] = []
    for img, rep in ((image, repaint), (image.transpose(1, 0, 2), repaint.T)):
        img = img.astype(int)
        for y in range(rep.shape[0]):
            for x in np.nonzero(rep[y, :-1] != rep[y, 1:])[0]:  # the edge lies between x and x + 1
                lo, hi = max(0, x - r), min(rep.shape[1] - 1, x + 1 + r)
                out.append(int(np.abs(np.diff(img[y, lo : hi + 1], axis=0)).max()))
    return out


def seam_figures(generator, source, kind: str) -> dict:  # noqa: ANN001 - a KandinskyGenerator, a PIL image
    """Hard vs feathered composite of the same inpainting decoder output (the one ``generator.inpaint`` made)."""
    import numpy as np
    import torch

    from dalle_data.generators.kandinsky import _to_image
    from dalle_data.masks import auto_mask, feather_width, feathered_composite

    size = source.size
    settings = dataclasses.replace(generator.defaults, width=size[0], height=size[1])
    mask = auto_mask(kind, size, 0)[0]
    prompt, seed = "a photo of a cat", 1
    written = generator.inpaint([source], [mask], [prompt], [seed], settings)[0]
    g = torch.Generator(device="cpu").manual_seed(seed)  # the seeding inpaint() uses: prior, then decoder
    with torch.inference_mode():
        emb = generator.prior(prompt=[prompt], generator=[g], num_inference_steps=settings.prior_num_inference_steps,
                              guidance_scale=settings.prior_guidance_scale)
        raw = generator.inpaint_decoder(image_embeds=emb.image_embeds, negative_image_embeds=emb.negative_image_embeds,
                                        image=source, mask_image=mask, width=size[0], height=size[1],
                                        num_inference_steps=settings.num_inference_steps,
                                        guidance_scale=settings.guidance_scale, generator=g, output_type="np").images[0]
    decoded = _to_image(raw)
    hard, feathered = feathered_composite(decoded, source, mask, 0), feathered_composite(decoded, source, mask)
    band = feather_width(size)
    repaint = np.asarray(mask) > 127
    src = np.asarray(source, int)
    beyond = ~grow(repaint, band // 2)
    steps = {name: edge_steps(np.asarray(im), repaint, band // 2) for name, im in (("hard", hard), ("feathered", feathered))}
    return {
        "band": band, "same_as_written": np.array_equal(np.asarray(feathered), np.asarray(written)),
        "beyond_mad": float(np.abs(np.asarray(written, int) - src)[beyond].mean()),
        "kept_mad": float(np.abs(np.asarray(written, int) - src)[~repaint].mean()),
        **{f"{name}_{stat}": fn(v) for name, v in steps.items() for stat, fn in (("mean", np.mean), ("max", max))},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2, help="best of N per mode, modes interleaved")
    parser.add_argument("--seam-only", action="store_true", help="only the inpainting figures (no throughput)")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image, ImageOps

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
        for rep in range(0 if args.seam_only else args.repeats):
            for mode in ("vanilla", "variation", "fuse", "inpaint"):
                spec = build_spec({"classes": classes, "per_class": args.images // len(classes), "modes": mode,
                                   "model": "tiny", "filter": "none", "batch_size": args.batch_size,
                                   "from_dir": str(src) if mode != "vanilla" else None,
                                   "out": Path(tmp) / f"{mode}{rep}", "formats": ["parquet"]})
                t = time.perf_counter()
                summary = run_generate(spec, progress=NullProgress(), generator=generator, scorer=scorer)
                rate = summary["generated"] / (time.perf_counter() - t)
                rates[mode] = max(rates.get(mode, 0.0), rate)
        original = Image.open(src / "cat" / "img0.png").convert("RGB")
        source = ImageOps.fit(original, (64, 64))
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
        seams = {("tiny", px, kind): seam_figures(generator, ImageOps.fit(original, (px, px)), kind)
                 for px in (64, 256) for kind in ("center", "border")}
    seams.update(shapes_seams())

    s = generator.defaults
    print(f"tiny model, {args.images} images per mode, batch {args.batch_size}, "
          f"{s.width}px, decoder {s.num_inference_steps} steps, prior {s.prior_num_inference_steps} steps, "
          f"torch threads {torch.get_num_threads()}")
    if rates:
        print(f"{'mode':<10} {'img/s':>7} {'vs vanilla':>11}")
        for mode, rate in rates.items():
            print(f"{mode:<10} {rate:>7.2f} {rate / rates['vanilla']:>10.2f}x")
    print("inpainting at 64px, mean |output - source| (0-255):")
    print(f"{'mask':<8} {'outside (written)':>18} {'inside (written)':>17} {'outside (decoder alone)':>24}")
    for kind, (out_keep, out_paint, raw_keep) in results.items():
        print(f"{kind:<8} {out_keep:>18.2f} {out_paint:>17.2f} {raw_keep:>24.2f}")
    print("(outside includes the kept half of the feathered band; beyond the band it is 0, below)")
    print("seam at the mask edge: hard vs feathered composite of the same decoder output (0-255):")
    print(f"{'model':<12} {'size':>4} {'mask':<7} {'band px':>7} {'|out-src| beyond band':>22} "
          f"{'hard step mean/max':>19} {'feathered mean/max':>19} {'= written':>9}")
    for (model, px, kind), f in seams.items():
        print(f"{model:<12} {px:>4} {kind:<7} {f['band']:>7} {f['beyond_mad']:>22.2f} "
              f"{f['hard_mean']:>12.1f} / {f['hard_max']:>3} {f['feathered_mean']:>12.1f} / {f['feathered_max']:>3} "
              f"{'yes' if f['same_as_written'] else 'NO':>9}")


def shapes_seams() -> dict:
    """Seam figures on the shapes-demo model (flat colours: the seam is not hidden by texture), held-out renders."""
    from dalle_data.demo.world import SPLIT_SEEDS, seeded_renders
    from dalle_data.errors import ModelLoadError
    from dalle_data.generators import load_generator

    try:
        generator = load_generator("shapes-demo")
    except ModelLoadError:
        return {}
    source = seeded_renders(SPLIT_SEEDS["test"], 1)[0].image
    return {("shapes-demo", source.size[0], kind): seam_figures(generator, source, kind) for kind in ("center", "border")}


if __name__ == "__main__":
    main()
