"""One small generated run for the whole review suite, copied per test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import FAST

CLASSES = ("cat", "dog")


@pytest.fixture(scope="session")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cat and dog, 2 vanilla + 1 adversarial each, Parquet and ImageFolder, 3 shards."""
    from typer.testing import CliRunner

    from dalle_data.cli import app

    out = tmp_path_factory.mktemp("review-base") / "out"
    result = CliRunner().invoke(app, [
        "generate", *FAST, "--classes", ",".join(CLASSES), "--per-class", "3", "--mode", "vanilla=2,adversarial=1",
        "--format", "parquet", "--format", "imagefolder", "--filter", "none", "--shard-size", "2",
        "--out", str(out), "--quiet",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture()
def run_dir(base_run: Path, tmp_path: Path) -> Path:
    """A private copy of the generated run."""
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    return out


def manifest(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]
    return {row["id"]: row for row in rows}


def lowest_ids(out: Path, n: int) -> list[str]:
    rows = sorted(manifest(out).values(), key=lambda r: (r["clip_score"], r["id"]))
    return [r["id"] for r in rows if r["status"] == "kept"][:n]


def snapshot(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` and its bytes (to prove that nothing changed); the lock file, which
    says who last held the run, is not data."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != ".dalle-data.lock"}
