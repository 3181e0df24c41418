"""`--mode variation --from DIR`: K images per source, labels and lineage from the sources."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import FAST
from tests.image_modes.helpers import (
    cli,
    generate,
    make_tree,
    manifest,
    parquet_images,
    source_ids,
)

COUNTS = {"cat": 2, "dog": 3}
K = 2


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src") / "photos", COUNTS)


@pytest.fixture(scope="module")
def plain(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plain") / "out"
    generate(out, "--mode", "variation", "--from", tree, "--per-source", K, "--filter", "none",
             "--format", "parquet", "--format", "imagefolder")
    return out


@pytest.fixture(scope="module")
def nudged(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nudged") / "out"
    generate(out, "--mode", "variation", "--from", tree, "--per-source", K, "--filter", "none",
             "--prompt-weight", "0.3")
    return out


def test_per_source_gives_exactly_k_kept_images_per_source(plain: Path, tree: Path) -> None:
    rows = manifest(plain)
    assert len(rows) == K * sum(COUNTS.values()), "nothing beyond the quota was generated"
    kept = Counter(r["source_id"] for r in rows if r["status"] == "kept")
    every_source = [i for ids in source_ids(tree).values() for i in ids]
    assert kept == {sid: K for sid in every_source}


def test_records_carry_the_source_label_and_lineage(plain: Path, tree: Path) -> None:
    from dalle_data.discovery import discover_sources

    ids_by_path = {s.path: s.id for s in discover_sources(tree)}
    for row in manifest(plain):
        assert row["mode"] == "variation"
        assert row["label"] == Path(row["source_path"]).parent.name, "label comes from the source's folder"
        assert ids_by_path[row["source_path"]] == row["source_id"]
        assert row["source2_id"] is None and row["mask"] is None
        assert row["role"] == "positive" and row["status"] == "kept"


def test_variation_output_loads_as_parquet_with_class_labels(plain: Path) -> None:
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(plain / "parquet"), split="train")
    assert len(ds) == K * sum(COUNTS.values())
    assert ds.features["label"].names == ["cat", "dog"]
    assert isinstance(ds.features["image"], datasets.Image)
    for row in ds:
        assert ds.features["label"].int2str(row["label"]) == row["label_name"] == Path(row["source_path"]).parent.name
        assert row["image"].size == (64, 64) and row["mode"] == "variation"
    files = sorted(p.relative_to(plain / "imagefolder" / "train").parent.as_posix()
                   for p in (plain / "imagefolder" / "train").rglob("*.png"))
    assert Counter(files) == {"cat": K * COUNTS["cat"], "dog": K * COUNTS["dog"]}


def test_prompt_weight_changes_ids_and_images_but_not_the_plan(plain: Path, nudged: Path) -> None:
    a, b = manifest(plain), manifest(nudged)
    assert all(r["status"] == "kept" for r in b) and len(b) == len(a)
    # Same units (source, seed) ...
    assert [(r["source_id"], r["seed"]) for r in a] == [(r["source_id"], r["seed"]) for r in b]
    # ... but the text nudge is part of what made each image, so it is part of its id,
    assert {r["id"] for r in a}.isdisjoint(r["id"] for r in b)
    # and it really went into the embedding: the pictures differ.
    images_a, images_b = parquet_images(plain), parquet_images(nudged)
    for ra, rb in zip(a, b, strict=True):
        assert not np.array_equal(np.asarray(images_a[ra["id"]]), np.asarray(images_b[rb["id"]]))


def test_variation_weights_mix_source_and_prompt() -> None:
    from dalle_data.execution.plan import Unit
    from dalle_data.image_modes import ImageOptions, weights_for
    from dalle_data.prompts import PromptItem

    unit = Unit(("cat", "variation", 0), 0, PromptItem("cat", "variation", "a photo of a cat", "class-prompt"), 1)
    assert weights_for(unit, ImageOptions()) == [1.0]
    assert weights_for(unit, ImageOptions(prompt_weight=0.3)) == pytest.approx([0.7, 0.3])


# -- --from a dalle-data output --------------------------------------------------

@pytest.fixture(scope="module", params=["imagefolder", "parquet"])
def earlier(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A text-mode run written in one format; the zero-shot filter rejects some images (kept apart)."""
    out = tmp_path_factory.mktemp(f"earlier-{request.param}") / "out"
    generate(out, "--classes", "cat,dog", "--per-class", "2", "--max-attempts", "3", "--keep-rejected",
             "--format", request.param)
    formats = {p.name for p in out.iterdir() if p.is_dir()} & {"imagefolder", "parquet"}
    assert formats == {request.param}
    return out


def test_from_a_dalle_data_output_uses_its_kept_images_with_their_labels_and_ids(
    earlier: Path, tmp_path: Path
) -> None:
    before = manifest(earlier)
    kept = {r["id"]: r["label"] for r in before if r["status"] == "kept"}
    assert kept and any(r["status"] == "rejected" for r in before), "the check needs kept and rejected images"
    out = tmp_path / "out"
    generate(out, "--mode", "variation", "--from", earlier, "--per-source", "1", "--filter", "none")
    rows = manifest(out)
    assert {r["source_id"] for r in rows} == set(kept), "every kept image, and only those, is a source"
    assert len(rows) == len(kept)
    for row in rows:
        assert row["status"] == "kept", row["error"]
        assert row["label"] == kept[row["source_id"]]
        if (earlier / "imagefolder").is_dir():
            assert Path(row["source_path"]).is_file() and Path(row["source_path"]).stem == row["source_id"]
        else:
            assert row["source_path"].endswith(f".parquet#{row['source_id']}")


# -- flat folders ------------------------------------------------------------------

@pytest.fixture(scope="module")
def flat(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.image_modes.helpers import noise

    root = tmp_path_factory.mktemp("flat") / "tabbies"
    root.mkdir()
    for i in range(3):
        noise(100 + i).save(root / f"tabby{i}.png")
    return root


def test_flat_folder_with_one_class_name(flat: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = generate(out, "--mode", "variation", "--from", flat, "--classes", "tabby cat", "--per-source", "1",
                       "--filter", "none")
    assert summary["complete"] and summary["kept"] == 3
    rows = manifest(out)
    assert {r["label"] for r in rows} == {"tabby cat"}
    assert sorted(Path(r["source_path"]).name for r in rows) == ["tabby0.png", "tabby1.png", "tabby2.png"]


def test_flat_folder_without_classes_says_to_pass_classes(flat: Path, tmp_path: Path) -> None:
    result = cli("generate", *FAST, "--mode", "variation", "--from", flat, "--per-source", "1",
                 "--out", tmp_path / "out")
    assert_one_line_error(result, "flat folder", "--classes")
    assert not (tmp_path / "out").exists()
