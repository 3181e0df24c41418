"""Scaling figures: executors, merge, and the planning cost of one part of a very large run.

    python benchmarks/scale.py                 # all three
    python benchmarks/scale.py --only plan     # planning only (no model, seconds)

1. local vs Ray executor with 1 and 2 workers on the tiny model (images per second, ratio to local);
2. `dalle-data merge` of a sharded run with 10 and 100 shards;
3. the planning time of `--shard 0/100` for a spec of 10,000 classes, against planning the whole run.
A benchmark, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", "tiny", "--steps", "8", "--prior-steps", "4", "--filter", "none", "--format", "parquet", "--quiet"]


def cli(*args: str, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess[str]]:
    t = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "dalle_data", *args], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if result.returncode not in (0, 3):
        raise SystemExit(result.stderr)
    return time.perf_counter() - t, result


def executors(tmp: Path, images: int) -> None:
    spec = [*TINY, "--classes", "cat,dog,car,tree", "--per-class", str(images // 4), "--batch-size", "8", "--json"]
    rows = []
    for name, extra, env in (
        ("local (2 torch threads)", [], {}),
        ("ray, 1 actor (2 threads)", ["--executor", "ray", "--ray-actors", "1"],
         {"DALLE_DATA_RAY_CPUS": "2", "DALLE_DATA_RAY_THREADS": "2"}),
        ("ray, 2 actors (1 thread each)", ["--executor", "ray", "--ray-actors", "2"],
         {"DALLE_DATA_RAY_CPUS": "2", "DALLE_DATA_RAY_THREADS": "1"}),
    ):
        wall, result = cli("generate", *spec, *extra, "--out", str(tmp / name.split()[0] / str(len(rows))), env=env)
        summary = json.loads(result.stdout)
        rows.append((name, summary["images_per_second"], wall))
    base = rows[0][1]
    print(f"executors, tiny model ({images} images, decoder 8 / prior 4 steps, batch 8, {os.cpu_count()} CPU cores):")
    for name, rate, wall in rows:
        print(f"  {name:<32} {rate:6.2f} img/s  ({rate / base:.2f}x local; whole command {wall:.1f} s, "
              "Ray start and model loads included)")


def merges(tmp: Path) -> None:
    print("merge of a sharded run (2 parts):")
    for shards, per_class in ((10, 5), (100, 50)):
        out = tmp / f"merge{shards}"
        spec = [*TINY, "--steps", "1", "--prior-steps", "2", "--classes", "cat,dog", "--per-class", str(per_class),
                "--shard-size", "1", "--batch-size", "1", "--format", "imagefolder", "--out", str(out)]
        for i in range(2):
            cli("generate", *spec, "--shard", f"{i}/2")
        wall, _ = cli("merge", str(out), "--json")
        print(f"  {shards:>4} shards ({2 * per_class} images): {wall:.2f} s (the whole command, imports included)")


def planning() -> None:
    from dalle_data.config import build_spec
    from dalle_data.execution.parts import Part
    from dalle_data.planning import plan

    classes = [f"class {i:05d}" for i in range(10_000)]
    spec = build_spec({"classes": classes, "per_class": 20, "modes": {"vanilla": 0.75, "style": 0.25}})
    t = time.perf_counter()
    whole = plan(spec)
    slots = whole.slots()
    whole_s = time.perf_counter() - t
    t = time.perf_counter()
    part = plan(spec, part=Part(0, 100))
    mine = part.slots()
    part_s = time.perf_counter() - t
    print(f"planning 10,000 classes x 2 modes (20 images each): the whole run {whole_s:.2f} s ({len(slots)} slots); "
          f"one part of 100 {part_s:.2f} s ({len(mine)} slots, {len(part.prompts)} prompts expanded)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["executors", "merge", "plan"])
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "plan"):
            planning()
        if args.only in (None, "merge"):
            merges(Path(tmp))
        if args.only in (None, "executors"):
            executors(Path(tmp), args.images)


if __name__ == "__main__":
    main()
