"""Throughput: a plain loop a user would write, against `dalle-data generate`, on the same prompts and seeds.

    python benchmarks/throughput.py                          # shapes-demo, 256 images, this machine's device
    python benchmarks/throughput.py --model tiny --size 512 --steps 50 --images 64   # a tiny Kandinsky 2.2 config

(a) `dalle-data generate` (--filter none, so exactly --images images; batch size auto unless given), then
(b) the plain loop over the same (prompt, seed) pairs: the diffusers prior and decoder at batch 1, the
same CLIP scoring the image, the PNG saved, one after the other. Model loading is timed in neither.
Prints images per second of both, their ratio, the generator-busy share of dalle-data's wall time and
the batch size it used, and the generator's utilisation by stage (the run's summary: FLOPs per image
counted once per network and shape, the achieved rate, its share of this device's practical matmul
limit). A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = "red circle,blue square,green triangle,yellow star,red triangle,blue star,green circle,yellow square"


def run_dalle_data(out: Path, args: argparse.Namespace) -> dict:
    classes = SHAPES if args.model == "shapes-demo" else "cat,dog,car,tree,boat,house,bird,fish"
    n_classes = len(classes.split(","))
    cmd = [sys.executable, "-m", "dalle_data", "generate", "--model", args.model, "--classes", classes,
           "--per-class", str(args.images // n_classes), "--filter", "none", "--format", "parquet",
           "--out", str(out), "--json", "--quiet", "--batch-size", args.batch_size]
    cmd += ["--size", str(args.size)] if args.size else []
    cmd += ["--steps", str(args.steps), "--prior-steps", str(args.prior_steps or args.steps)] if args.steps else []
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if result.returncode not in (0, 3):
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)


def plain_loop(out: Path, summary: dict, args: argparse.Namespace) -> float:
    """The same images, one at a time: prior, decoder, CLIP, PNG save."""
    import torch

    from dalle_data.device import resolve_device
    from dalle_data.generators import load_generator
    from dalle_data.generators.base import GenerationSettings
    from dalle_data.scoring import load_scorer, resolve_scorer_name

    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    device = resolve_device("auto")
    generator = load_generator(args.model, device=device)
    scorer = load_scorer(resolve_scorer_name("auto", args.model), device=device)
    scorer.set_labels(sorted({r["label"] for r in rows}))
    settings = GenerationSettings(**summary["settings"])
    prior, decoder = generator.prior, generator.decoder
    save = Path(tempfile.mkdtemp())
    t0 = time.perf_counter()
    for i, row in enumerate(rows):
        g = torch.Generator("cpu").manual_seed(int(row["seed"]))
        with torch.inference_mode():
            emb = prior(prompt=row["prompt"], generator=g, num_inference_steps=settings.prior_num_inference_steps,
                        guidance_scale=settings.prior_guidance_scale)
            image = decoder(image_embeds=emb.image_embeds, negative_image_embeds=emb.negative_image_embeds,
                            width=settings.width, height=settings.height, generator=g,
                            num_inference_steps=settings.num_inference_steps,
                            guidance_scale=settings.guidance_scale).images[0]
        scorer.score([image], [row["prompt"]])
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        (save / f"{i}.png").write_bytes(buf.getvalue())
    return len(rows) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="shapes-demo")
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--prior-steps", type=int, default=None)
    parser.add_argument("--batch-size", default="auto")
    args = parser.parse_args()
    import torch

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    print(f"hardware: {device}; {platform.platform()}; torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        summary = run_dalle_data(out, args)
        ours = summary["images_per_second"]
        plain = plain_loop(out, summary, args)
    print(f"model {args.model}, {summary['generated']} images, {summary['settings']['width']}x"
          f"{summary['settings']['height']}, decoder {summary['settings']['num_inference_steps']} / prior "
          f"{summary['settings']['prior_num_inference_steps']} steps")
    print(f"plain loop (batch 1, one stage after another): {plain:.2f} img/s")
    print(f"dalle-data generate (batch {summary['batch_size']}, pipelined):  {ours:.2f} img/s")
    print(f"ratio: {ours / plain:.2f}x; generator busy {summary['generator_busy']:.1%} of wall time; "
          f"stage seconds {summary['stage_seconds']}")
    u = summary.get("utilisation")
    if u:  # FLOPs per image counted once per network and shape; the limit is a dense matmul at the run's dtype
        print(f"utilisation ({u['device']}, {u['dtype']}; practical matmul limit {u['limit_gflop_per_s']} GFLOP/s):")
        for stage, row in u["stages"].items():
            share = f"{row['share_of_limit']:.0%}" if row.get("share_of_limit") is not None else "-"
            print(f"  {stage:<14} {row['seconds']:8.2f}s  {row['gflop_per_image'] or 0:8.3f} GFLOP/image  "
                  f"{row['gflop_per_s'] or 0:8.1f} GFLOP/s  {share} of the limit")


if __name__ == "__main__":
    main()
