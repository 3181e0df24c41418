"""Time to rerun a finished run, for two dataset sizes (should be a small constant).

For each size the benchmark generates a dataset with the tiny model, then
times the same `dalle-data generate` command again (it must find the run
finished and do nothing), and times a resume after a SIGKILL just before the
last shard's marker (replaying every finished shard, redoing one).

    .venv/bin/python benchmarks/resume.py [--sizes 32 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli(out: Path, per_class: int, env: dict[str, str] | None = None) -> float:
    args = [sys.executable, "-m", "dalle_data", "generate", "--model", "tiny", "--steps", "2", "--prior-steps", "2",
            "--classes", "cat,dog,car,tree", "--per-class", str(per_class), "--filter", "none",
            "--shard-size", "16", "--format", "parquet", "--format", "imagefolder", "--quiet", "--out", str(out)]
    t = time.perf_counter()
    result = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    elapsed = time.perf_counter() - t
    if env is None and result.returncode != 0:
        raise SystemExit(result.stderr)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"{'images':>7} {'first run':>10} {'rerun finished':>15} {'resume after kill':>18} {'shards':>7}")
    for size in args.sizes:
        per_class = size // 4
        shards = -(-size // 16)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "out"
            first = cli(out, per_class)
            rerun = min(cli(out, per_class) for _ in range(args.repeats))
            killed = Path(tmp) / "killed"
            cli(killed, per_class, env={"DALLE_DATA_FAULT": f"shard_marker:{shards}"})
            resume = cli(killed, per_class)
        print(f"{size:>7} {first:>9.2f}s {rerun:>14.3f}s {resume:>17.2f}s {shards:>7}")


if __name__ == "__main__":
    main()
