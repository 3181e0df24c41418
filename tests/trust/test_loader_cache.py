"""The recommended loading lines return exactly the files on disk: two runs in one process, and after an apply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST

pytestmark = pytest.mark.slow


def make_run(out: Path, seed: int) -> Path:
    from typer.testing import CliRunner

    from dalle_data.cli import app

    result = CliRunner().invoke(app, [
        "generate", *FAST, "--classes", "cat,dog", "--per-class", "3", "--filter", "none", "--seed", str(seed),
        "--format", "parquet", "--format", "imagefolder", "--out", str(out), "--quiet",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


def kept_ids(out: Path) -> set[str]:
    rows = map(json.loads, (out / "manifest.jsonl").read_text().splitlines())
    return {r["id"] for r in rows if r["status"] == "kept"}


def load_both(out: Path, cache: str) -> tuple[set[str], set[str]]:
    import datasets

    folder = datasets.load_dataset(str(out / "imagefolder"), split="train", cache_dir=cache)
    parquet = datasets.load_dataset("parquet", data_dir=str(out / "parquet"), split="train", cache_dir=cache)
    return set(folder["id"]), set(parquet["id"])


def test_two_runs_with_the_same_classes_in_one_process(tmp_path: Path) -> None:
    a = make_run(tmp_path / "A" / "out", seed=1)
    b = make_run(tmp_path / "B" / "out", seed=2)
    cache = str(tmp_path / "cache")
    assert kept_ids(a) != kept_ids(b)
    assert load_both(a, cache) == (kept_ids(a), kept_ids(a))
    assert load_both(b, cache) == (kept_ids(b), kept_ids(b))


def test_after_review_apply_the_loaders_see_the_change(tmp_path: Path) -> None:
    from dalle_data.review.apply import apply_decisions
    from dalle_data.review.run import load_run
    from dalle_data.review.selection import SelectionOptions
    from dalle_data.review.session import ReviewSession

    out = make_run(tmp_path / "out", seed=3)
    cache = str(tmp_path / "cache")
    before = kept_ids(out)
    assert load_both(out, cache) == (before, before)
    victim = sorted(before)[0]
    session = ReviewSession.open(out, SelectionOptions(lowest=100))
    session.decide(json.dumps({"id": victim, "action": "reject"}).encode())
    apply_decisions(load_run(out), session.log)
    after = kept_ids(out)
    assert after == before - {victim}
    assert load_both(out, cache) == (after, after)
