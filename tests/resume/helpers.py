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


def run_cli(out: Path, *extra: str, env: dict[str, str] | None = None, timeout: int = 300,
            warm: bool = True) -> subprocess.CompletedProcess[str]:
    """`dalle-data generate` as a process of its own (forked warm: tests/warm_cli.py; ``warm=False``: a fresh
    interpreter, for the reference a determinism test compares with)."""
    from tests.warm_cli import dalle_data_command

    command, full_env = dalle_data_command({**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if not warm:
        command = [sys.executable, "-m", "dalle_data"]
    return subprocess.run([*command, "generate", *SPEC, "--out", str(out), *extra],
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def popen_cli(out: Path, *extra: str, warm: bool = True) -> subprocess.Popen[str]:
    """Started, not waited for; ``warm=False`` where the test needs the command's own pid (it is the
    Popen's: a warm command is forked from the server, and the Popen is its client)."""
    from tests.warm_cli import dalle_data_command

    command, env = dalle_data_command({**os.environ, "HF_HUB_OFFLINE": "1"})
    if not warm:
        command, env = [sys.executable, "-m", "dalle_data"], {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([*command, "generate", *SPEC, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


TIMING_FIELDS = ("created_at",)  # the only fields a resumed run may differ in


def timeless(row: dict[str, object]) -> dict[str, object]:
    """A record's every field but when it was made (``image`` as its bytes)."""
    out = {k: v for k, v in row.items() if k not in TIMING_FIELDS}
    if isinstance(out.get("image"), dict):
        out["image"] = out["image"]["bytes"]  # type: ignore[index]
    return out


def snapshot(out: Path) -> dict[str, object]:
    """Everything that makes up the dataset, every field of every record, independent of timing."""
    parquet = {}
    for part in sorted((out / "parquet" / "train").glob("*.parquet")):
        for row in pq.read_table(part).to_pylist():
            assert row["id"] not in parquet, f"duplicate id {row['id']} in Parquet"
            parquet[row["id"]] = timeless(row)
    rejected = {r["id"]: timeless(r) for p in sorted((out / "rejected" / "parquet").glob("*.parquet"))
                for r in pq.read_table(p).to_pylist()}
    folder = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("imagefolder/train/*/*.png"))}
    folder_rejected = {p.relative_to(out).as_posix(): p.read_bytes()
                       for p in sorted(out.glob("rejected/imagefolder/*/*.png"))}
    metadata = [timeless(json.loads(x)) for x in (out / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()]
    manifest = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    names = [m["file_name"] for m in metadata]
    assert len(names) == len(set(names)), "duplicate rows in metadata.jsonl"
    summary = json.loads((out / "summary.json").read_text())
    from dalle_data.embeddings import read_shard

    embedded = {}  # every scored image has its scorer embedding, in its own shard's file
    vectors = {}
    for path in sorted((out / "embeddings").glob("*.npz")):
        arrays = read_shard(path)
        assert arrays is not None, f"{path} does not hold up"
        embedded.update({str(i): path.stem for i in arrays["ids"]})
        vectors[path.stem] = {k: arrays[k].tobytes() for k in sorted(arrays) if k != "ids"}
    assert embedded == {r["id"]: r["shard"] for r in manifest if r["status"] in ("kept", "rejected")}
    return {
        "parquet": parquet, "rejected": rejected, "imagefolder": folder, "imagefolder_rejected": folder_rejected,
        "metadata": sorted(metadata, key=lambda m: str(m["file_name"])),
        "manifest": [timeless(r) for r in manifest],
        "embeddings": vectors,
        "counts": {k: summary[k] for k in ("generated", "kept", "rounds", "shards", "classes")},
    }


def leftovers(out: Path) -> list[str]:
    return [p.as_posix() for p in out.rglob(".tmp-*")]
