"""`--mode fuse`: pairs of two different images of one class, in the documented, deterministic order."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_bad_input import assert_one_line_error
from tests.conftest import FAST
from tests.image_modes.helpers import cli, generate, make_tree, manifest, source_ids

COUNTS = {"cat": 3, "dog": 2}
K = 2  # cat: 6 units = every ordered pair of its 3 images once; dog: 4 units over its 2 ordered pairs


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("src") / "photos", COUNTS)


def _fuse(tree: Path, out: Path) -> list[dict]:
    generate(out, "--mode", "fuse", "--from", tree, "--per-source", K, "--filter", "none")
    return manifest(out)


@pytest.fixture(scope="module")
def runs(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], list[dict]]:
    return _fuse(tree, tmp_path_factory.mktemp("a") / "out"), _fuse(tree, tmp_path_factory.mktemp("b") / "out")


def test_pairs_are_two_different_images_of_the_records_class(runs, tree: Path) -> None:
    from dalle_data.discovery import discover_sources

    label_of = {s.id: s.label for s in discover_sources(tree)}
    rows = runs[0]
    assert len(rows) == K * sum(COUNTS.values())
    for row in rows:
        assert row["mode"] == "fuse" and row["status"] == "kept"
        assert row["source_id"] != row["source2_id"]
        assert label_of[row["source_id"]] == label_of[row["source2_id"]] == row["label"]
        assert Path(row["source2_path"]).parent.name == row["label"]


def test_pairing_is_deterministic(runs) -> None:
    a, b = runs
    key = [(r["source_id"], r["source2_id"], r["seed"]) for r in a]
    assert key == [(r["source_id"], r["source2_id"], r["seed"]) for r in b]
    assert [r["id"] for r in a] == [r["id"] for r in b]


def test_pairing_follows_the_documented_order(runs, tree: Path) -> None:
    from dalle_data.execution.plan import fuse_pair

    ids = source_ids(tree)
    for cls, n in COUNTS.items():
        rows = [r for r in runs[0] if r["label"] == cls]
        pairs = [(r["source_id"], r["source2_id"]) for r in rows]
        order = ids[cls]
        # The first pass pairs each source (in id order) with its next neighbour ...
        assert pairs[:n] == [(order[k], order[(k + 1) % n]) for k in range(n)]
        assert [fuse_pair(k, n) for k in range(n)] == [(k, (k + 1) % n) for k in range(n)]
        # ... and every unit is the pair fuse_pair names.
        assert pairs == [(order[a], order[b]) for a, b in (fuse_pair(k, n) for k in range(len(rows)))]
    cat = [(r["source_id"], r["source2_id"]) for r in runs[0] if r["label"] == "cat"]
    assert len(set(cat)) == 6, "all 3 x 2 ordered pairs before any repeat"


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_fuse_pair_covers_all_ordered_pairs_before_repeating(n: int) -> None:
    from dalle_data.execution.plan import fuse_pair

    first = [fuse_pair(k, n) for k in range(n * (n - 1))]
    assert len(set(first)) == n * (n - 1) and all(a != b for a, b in first)


def test_fuse_weight_changes_the_ids(tree: Path, tmp_path: Path, runs) -> None:
    out = tmp_path / "out"
    generate(out, "--mode", "fuse", "--from", tree, "--per-source", K, "--filter", "none", "--fuse-weight", "0.8")
    rows = manifest(out)
    assert [(r["source_id"], r["source2_id"], r["seed"]) for r in rows] == \
        [(r["source_id"], r["source2_id"], r["seed"]) for r in runs[0]]
    assert {r["id"] for r in rows}.isdisjoint(r["id"] for r in runs[0])


def test_a_class_with_a_single_image_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "photos", {"cat": 2, "snow leopard": 1})
    out = tmp_path / "out"
    result = cli("generate", *FAST, "--mode", "fuse", "--from", tree, "--per-source", "1", "--out", out)
    assert_one_line_error(result, "fuse", "'snow leopard'", "two source images")
    assert not out.exists()
