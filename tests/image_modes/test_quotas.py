"""Quotas, the CLIP filter and mixed text + image runs in the image modes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.image_modes.helpers import generate, make_tree, manifest, source_ids

COUNTS = {"cat": 3, "dog": 3}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src") / "photos", COUNTS)


@pytest.fixture(scope="module")
def filtered(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    """Variation with the default zero-shot filter and the tiny random scorer (which rejects plenty)."""
    out = tmp_path_factory.mktemp("filtered") / "out"
    summary = generate(out, "--mode", "variation", "--from", tree, "--per-class", "4", "--max-attempts", "12")
    return summary, manifest(out)


def test_zero_shot_filter_rejects_and_more_rounds_run(filtered) -> None:
    summary, rows = filtered
    rejected = [r for r in rows if r["status"] == "rejected"]
    assert rejected and all(r["reject_reason"].startswith("zero-shot") for r in rejected)
    assert summary["rejections"].get("zero-shot") == len(rejected)
    assert summary["rounds"] >= 2
    for cls, row in summary["classes"].items():
        if row["kept"] < row["target"]:
            assert row["generated"] == 12, f"{cls}: short of its quota only once the attempt budget is spent"


def test_kept_never_exceeds_the_quota(filtered) -> None:
    summary, rows = filtered
    kept = Counter(r["label"] for r in rows if r["status"] == "kept")
    assert all(n <= 4 for n in kept.values())
    assert {c: r["kept"] for c, r in summary["classes"].items()} == {c: kept.get(c, 0) for c in COUNTS}
    assert all(r["kept"] <= r["target"] == 4 for r in summary["classes"].values())


def test_per_class_cycles_through_the_sources(filtered, tree: Path) -> None:
    _, rows = filtered
    ids = source_ids(tree)
    for cls, n in COUNTS.items():
        used = [r["source_id"] for r in rows if r["label"] == cls]
        assert len(used) > n, "the check needs more units than sources"
        assert used == [ids[cls][k % n] for k in range(len(used))], "each source once before any twice"


@pytest.fixture(scope="module")
def mixed(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict]]:
    out = tmp_path_factory.mktemp("mixed") / "out"
    summary = generate(out, "--mode", "vanilla=0.5,variation=0.25,inpaint=0.25", "--from", tree, "--per-class", "4",
                       "--filter", "none")
    return summary, manifest(out)


def test_mixed_run_splits_the_quota_over_text_and_image_modes(mixed) -> None:
    summary, rows = mixed
    assert {m: r["target"] for m, r in summary["modes"].items()} == {"vanilla": 4, "variation": 2, "inpaint": 2}
    assert summary["complete"] and summary["kept"] == 8
    per = Counter((r["label"], r["mode"]) for r in rows if r["status"] == "kept")
    assert per == {(c, m): n for c in COUNTS for m, n in (("vanilla", 2), ("variation", 1), ("inpaint", 1))}


def test_mixed_run_records_carry_lineage_only_for_image_modes(mixed) -> None:
    _, rows = mixed
    for row in rows:
        if row["mode"] == "vanilla":
            assert row["source_id"] is None and row["mask"] is None
        else:
            assert Path(row["source_path"]).parent.name == row["label"]
        if row["mode"] == "inpaint":
            assert row["mask"].startswith("border: ")  # the default mask
            assert row["label"] in row["prompt"].lower(), "inpainting is guided by a scene prompt of the class"
