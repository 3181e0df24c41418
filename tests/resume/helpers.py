"""Running `dalle-data generate` as a real process, and comparing run directories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

# Small but not trivial: several rounds (the zero-shot filter rejects), several shards per round.
SPEC = ["--model", "tiny", "--steps", "2", "--prior-steps", "2", "--classes", "cat,dog", "--per-class", "5",
        "--max-attempts", "16", "--shard-size", "4", "--batch-size", "2", "--keep-rejected",
        "--format", "parquet", "--format", "imagefolder", "--quiet", "--allow-short"]


def run_cli(out: Path, *extra: str, env: dict[str, str] | None = None, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dalle_data", "generate", *SPEC, "--out", str(out), *extra],
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def popen_cli(out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "dalle_data", "generate", *SPEC, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def snapshot(out: Path) -> dict[str, object]:
    """Everything that makes up the dataset, independent of timing."""
    parquet = {}
    for part in sorted((out / "parquet" / "train").glob("*.parquet")):
        for row in pq.read_table(part).to_pylist():
            assert row["id"] not in parquet, f"duplicate id {row['id']} in Parquet"
            parquet[row["id"]] = row["image"]["bytes"]
    rejected = {r["id"]: r["image"]["bytes"] for p in sorted((out / "rejected" / "parquet").glob("*.parquet"))
                for r in pq.read_table(p).to_pylist()}
    folder = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("imagefolder/train/*/*.png"))}
    folder_rejected = {p.relative_to(out).as_posix(): p.read_bytes()
                       for p in sorted(out.glob("rejected/imagefolder/*/*.png"))}
    metadata = [json.loads(x)["file_name"] for x in (out / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()]
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    assert len(metadata) == len(set(metadata)), "duplicate rows in metadata.jsonl"
    summary = json.loads((out / "summary.json").read_text())
    from dalle_data.embeddings import read_shard

    embedded = {}  # every scored image has its scorer embedding, in its own shard's file
    for path in sorted((out / "embeddings").glob("*.npz")):
        arrays = read_shard(path)
        assert arrays is not None, f"{path} does not hold up"
        embedded.update({str(i): path.stem for i in arrays["ids"]})
    assert embedded == {r["id"]: r["shard"] for r in manifest if r["status"] in ("kept", "rejected")}
    return {
        "parquet": parquet, "rejected": rejected, "imagefolder": folder, "imagefolder_rejected": folder_rejected,
        "metadata": sorted(metadata),
        "manifest": [(r["id"], r["status"], r["shard"], r["seed"]) for r in manifest],
        "counts": {k: summary[k] for k in ("generated", "kept", "rounds", "shards", "classes")},
    }


def leftovers(out: Path) -> list[str]:
    return [p.as_posix() for p in out.rglob(".tmp-*")]
