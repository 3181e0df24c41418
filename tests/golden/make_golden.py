"""Writes tests/golden/golden.json: record ids and image hashes of fixed specs.

The golden file was made with this script on main at b41309b (before the
execution core was reshaped), by running, from a checkout of that commit:

    HF_HUB_OFFLINE=1 python tests/golden/make_golden.py tests/golden/golden.json

``test_golden.py`` runs the same specs with today's code and compares: the
same spec and seed must give the same record ids, statuses and image bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

FAST = ["--model", "tiny", "--steps", "2", "--prior-steps", "2", "--batch-size", "2", "--shard-size", "4",
        "--keep-rejected", "--format", "parquet", "--format", "imagefolder", "--quiet"]
SPECS: dict[str, list[str]] = {
    "text-modes": [*FAST, "--classes", "cat,dog", "--per-class", "6", "--seed", "3",
                   "--mode", "vanilla=0.5,style=0.25,adversarial=0.25"],
    "image-modes": [*FAST, "--per-class", "4", "--seed", "5", "--mode", "variation=0.5,fuse=0.5",
                    "--from", "{sources}"],
    "shapes-demo": ["--model", "shapes-demo", "--templates", "templates/shapes.yaml", "--batch-size", "8",
                    "--classes", "red circle,blue square,green triangle,yellow star,red triangle,blue star,green circle,yellow square",
                    "--per-class", "8", "--seed", "1",
                    "--mode", "vanilla=0.75,style=0.25", "--keep-rejected", "--format", "parquet", "--quiet"],
}


def make_sources(root: Path) -> None:
    """Six small deterministic PNGs in two class folders."""
    from PIL import Image

    rng = np.random.default_rng(7)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(3):
            array = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / cls / f"{i}.png")


def run_spec(args: list[str], out: Path, sources: Path, cwd: Path) -> list[list[object]]:
    argv = [a.replace("{sources}", str(sources)) for a in args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "dalle_data", "generate", *argv, "--out", str(out)],
                            env=env, cwd=cwd)
    assert result.returncode in (0, 3), f"generate exited {result.returncode}"  # 3: a short dataset
    return collect(out)


def collect(out: Path) -> list[list[object]]:
    """[id, status, sha256 of the image bytes or None] for every record, sorted by id."""
    import pyarrow.parquet as pq

    images: dict[str, bytes] = {}
    for part in sorted(out.glob("parquet/*/*.parquet")) + sorted(out.glob("rejected/parquet/*.parquet")):
        for row in pq.read_table(part, columns=["id", "image"]).to_pylist():
            images[row["id"]] = row["image"]["bytes"]
    rows = []
    for line in (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        data = images.get(record["id"])
        rows.append([record["id"], record["status"], hashlib.sha256(data).hexdigest() if data else None])
    return sorted(rows)


def main(target: str) -> None:
    cwd = Path(__file__).resolve().parents[2]
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        sources = Path(tmp) / "sources"
        make_sources(sources)
        for name, args in SPECS.items():
            result[name] = run_spec(args, Path(tmp) / name, sources, cwd)
    Path(target).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
