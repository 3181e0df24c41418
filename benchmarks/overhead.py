"""Overhead of `dalle-data generate` over bare generation, on the tiny model.

Runs the same prompts and seeds (the plan of a 64-image spec) twice:

* bare: the Kandinsky 2.2 prior + decoder pipelines called in batches, nothing else;
* end to end: the generate job (plan → generate → CLIP score → filter → PNG
  encode → Parquet + ImageFolder + manifest), with the same generator object.

Model loading is excluded from both (it happens once per worker either way)
and reported apart, as is the CLI's wall time from a cold process.
Prints the ratio end-to-end / bare. Goal: at most 1.10 at 64 images.

    .venv/bin/python benchmarks/overhead.py [--images 64] [--batch-size 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="also time the CLI from a cold process")
    args = parser.parse_args()

    import torch

    from dalle_data.config import build_spec
    from dalle_data.generators import load_generator, resolve_settings
    from dalle_data.job import run_generate
    from dalle_data.planning import plan
    from dalle_data.progress import NullProgress
    from dalle_data.scoring import load_scorer

    t = time.perf_counter()
    generator = load_generator("tiny")
    scorer = load_scorer("tiny")
    load_s = time.perf_counter() - t
    classes = ["dalmatian", "golden retriever", "tabby cat", "red fox"]
    values = {"classes": classes, "per_class": args.images // len(classes), "model": "tiny",
              "filter": "none", "formats": ["parquet", "imagefolder"], "batch_size": args.batch_size}
    spec = build_spec(values)
    from dalle_data.execution.ledger import SlotCounts
    from dalle_data.execution.plan import take

    units = [u for slot in plan(spec).slots() for u in take(SlotCounts.of(slot), slot.target, lambda *a: "")[0]]
    settings = resolve_settings(spec, generator.defaults)
    generator(["warm up"], [0], settings)

    bare, e2e = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            t = time.perf_counter()
            for start in range(0, len(units), args.batch_size):
                batch = units[start : start + args.batch_size]
                generator([u.prompt.prompt for u in batch], [u.seed for u in batch], settings)
            bare.append(time.perf_counter() - t)
            run_spec = build_spec({**values, "out": Path(tmp) / f"run{rep}"})
            t = time.perf_counter()
            summary = run_generate(run_spec, progress=NullProgress(), generator=generator, scorer=scorer)
            e2e.append(time.perf_counter() - t)
            assert summary["generated"] == len(units), summary["generated"]
        stages = summary["stage_seconds"]
        cli_s = None
        if args.cli:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "dalle_data", "generate", "--quiet", "--out", str(Path(tmp) / "cli"),
                            "--classes", ",".join(classes), "--per-class", str(args.images // len(classes)),
                            "--model", "tiny", "--filter", "none", "--format", "parquet", "--format", "imagefolder"],
                           check=True)
            cli_s = time.perf_counter() - t

    b, e = min(bare), min(e2e)
    print(f"images: {len(units)}  batch size: {args.batch_size}  steps: decoder {settings.num_inference_steps}, "
          f"prior {settings.prior_num_inference_steps}  size: {settings.width}px  torch threads: {torch.get_num_threads()}")
    print(f"model load (once per worker): {load_s:.2f} s")
    print(f"bare generation:   {b:.3f} s  (best of {args.repeats}: {', '.join(f'{x:.3f}' for x in bare)})")
    print(f"dalle-data generate: {e:.3f} s  (best of {args.repeats}: {', '.join(f'{x:.3f}' for x in e2e)})")
    print("last run's stages: " + ", ".join(f"{k} {v:.3f} s" for k, v in stages.items()))
    import statistics

    print(f"overhead ratio (end-to-end / bare): {e / b:.3f} best-of, "
          f"{statistics.median(e2e) / statistics.median(bare):.3f} median  (goal <= 1.10)")
    if cli_s is not None:
        print(f"CLI from a cold process (imports + model build + run): {cli_s:.2f} s")


if __name__ == "__main__":
    main()
