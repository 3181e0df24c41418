"""Near-duplicates, diversity, gates and review orders, on synthetic embeddings (exact answers known)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dalle_data.analysis import (
    diversity,
    duplicate_groups,
    mean_pairwise_distance,
    near_duplicate_components,
    vendi_score,
)
from dalle_data.embeddings import EmbeddingSet
from dalle_data.records import Record


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def record(i: int, label: str = "cat", *, sha: str | None = None, prob: float = 0.9, clip: float = 0.3,
           prompt: str | None = None, role: str = "positive", imitates: str | None = None) -> Record:
    return Record(id=f"id{i:05d}", label=label, label_id=0, class_dir=label, role=role, imitates=imitates,
                  prompt=prompt or f"a {label} #{i}", prompt_source="default:vanilla#0", mode="vanilla",
                  backend="kandinsky2.2", model="tiny", seed=i, width=8, height=8, clip_score=clip, class_prob=prob,
                  top_class=label, kept=True, status="kept", reject_reason=None, error=None, source_id=None,
                  source_path=None, source2_id=None, source2_path=None, mask=None, shard="r001-s0000",
                  created_at="2026-01-01T00:00:00+00:00", sha256=sha or f"{i:064x}")


def brute_components(x: np.ndarray, threshold: float) -> list[set[int]]:
    n = len(x)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            a = parent[a]
        return a

    for i, j in itertools.combinations(range(n), 2):
        if float(x[i] @ x[j]) >= threshold - 1e-6:
            parent[find(i)] = find(j)
    groups: dict[int, set[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), set()).add(i)
    return sorted((g for g in groups.values()), key=min)


@pytest.mark.parametrize("block", [3, 7, 2048])
def test_near_duplicate_components_equal_brute_force(block: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 16))
    copies = base[[0, 0, 5, 9, 9, 9]] + rng.normal(scale=0.02, size=(6, 16))  # planted near-copies (and a chain)
    x = unit(np.concatenate([base, copies]))
    roots = near_duplicate_components(x, 0.95, block=block)
    got: dict[int, set[int]] = {}
    for i, r in enumerate(roots.tolist()):
        got.setdefault(r, set()).add(i)
    assert sorted(got.values(), key=min) == brute_components(x, 0.95)
    assert {0, 40, 41} in got.values() and {9, 43, 44, 45} in got.values()


def test_duplicate_groups_keep_the_surest_image_and_find_exact_copies_without_embeddings() -> None:
    x = unit(np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64))
    records = [record(0, prob=0.5), record(1, prob=0.99), record(2, sha="ab" * 32), record(3, sha="ab" * 32)]
    emb = EmbeddingSet([r.id for r in records], x, np.ones((4, 1), np.float32), ("cat",), "test")
    groups = duplicate_groups(records, emb, 0.95)
    assert [(g.keeper, g.extra) for g in groups] == [("id00001", ("id00000",)), ("id00002", ("id00003",))]
    assert groups[1].exact and not groups[0].exact and groups[0].min_similarity > 0.99
    only_exact = duplicate_groups(records, None)
    assert [g.ids for g in only_exact] == [("id00002", "id00003")]
    other_label = [record(0, sha="cd" * 32), record(1, "dog", sha="cd" * 32)]
    assert duplicate_groups(other_label, None) == []  # never across labels (the report lists those as conflicts)


def test_vendi_score_and_mean_distance_have_their_known_values() -> None:
    same = unit(np.ones((10, 4)))
    assert vendi_score(same) == pytest.approx(1.0)
    assert mean_pairwise_distance(same) == pytest.approx(0.0, abs=1e-6)
    eye = np.eye(6, dtype=np.float32)
    assert vendi_score(eye) == pytest.approx(6.0)
    assert mean_pairwise_distance(eye) == pytest.approx(1.0)
    rng = np.random.default_rng(1)
    x = unit(rng.normal(size=(30, 8)))
    k = x.astype(np.float64) @ x.T.astype(np.float64)
    eig = np.linalg.eigvalsh(k / len(x))
    eig = eig[eig > 1e-12]
    assert vendi_score(x) == pytest.approx(float(np.exp(-(eig * np.log(eig)).sum())), rel=1e-6)  # the n×n definition
    pairs = [1 - float(x[i] @ x[j]) for i, j in itertools.combinations(range(30), 2)]
    assert mean_pairwise_distance(x) == pytest.approx(np.mean(pairs), rel=1e-5)


def test_a_collapsed_class_is_flagged_and_a_varied_one_is_not() -> None:
    rng = np.random.default_rng(2)
    varied = unit(rng.normal(size=(20, 16)))
    collapsed = unit(np.ones((20, 16)) + rng.normal(scale=0.01, size=(20, 16)))
    records = [record(i, "cat") for i in range(20)] + [record(100 + i, "dog") for i in range(20)]
    emb = EmbeddingSet([r.id for r in records], np.concatenate([varied, collapsed]), np.ones((40, 2), np.float32),
                       ("cat", "dog"), "test")
    rows = {d.label: d for d in diversity(records, emb, ["cat", "dog"])}
    assert rows["cat"].warning is None and rows["cat"].vendi > 10
    assert rows["dog"].vendi < 2 and "collapsed" in (rows["dog"].warning or "")
    assert rows["cat"].prompts == 20 and rows["cat"].basis == 20


def test_gates_parse_and_fail_with_one_line() -> None:
    from dalle_data.errors import SpecError
    from dalle_data.report.gates import failed_gate, parse_gates

    figures = {"classes": {"cat": {"kept": 3, "target": 5, "met": False, "generated": 10, "acceptance": 0.3}},
               "warnings": ["w"], "diversity": [{"label": "cat", "vendi": 1.5, "mean_distance": 0.1}],
               "duplicates": {"share": 0.2, "set_aside": 1}, "images": 3}
    assert failed_gate(figures, parse_gates(["images<3"])) is None
    assert failed_gate(figures, parse_gates(["short"])) == "--fail-if short: 'cat' has 3 of 5"
    assert "duplicates>0.1" in failed_gate(figures, parse_gates(["duplicates>0.1,vendi<1"]))
    assert "Vendi score of 1.5" in failed_gate(figures, parse_gates(["vendi<2"]))
    assert failed_gate(figures, parse_gates(["acceptance<0.2"])) is None
    for bad in ("dups>1", "vendi>3", "short<1", "images"):
        with pytest.raises(SpecError):
            parse_gates([bad])


def test_margins_rank_boundary_cases_first_for_positives_and_hard_negatives() -> None:
    from dalle_data.review.orderings import margin_of
    from dalle_data.review.selection import SelectionOptions, select

    labels = ("cat", "dog", "car")
    sure = record(0)
    torn = record(1)
    negative = record(2, "hard_negative", role="hard_negative", imitates="cat")
    assert margin_of(sure, np.array([0.9, 0.05, 0.05]), labels) == pytest.approx(0.85)
    assert margin_of(torn, np.array([0.45, 0.4, 0.15]), labels) == pytest.approx(0.05)
    assert margin_of(negative, np.array([0.3, 0.1, 0.6]), labels) == pytest.approx(0.3)  # car leads cat by 0.3
    values = {"id00000": 0.85, "id00001": 0.05, "id00002": 0.3}
    items = select([sure, torn, negative], SelectionOptions(lowest=2, order="margin"), values=values)
    assert [i.record.id for i in items] == ["id00001", "id00002"]
    by_prob = select([record(5, prob=0.6), record(6, prob=0.99), record(7, "x", prob=0.001, role="hard_negative")],
                     SelectionOptions(lowest=3, order="prob"))
    assert [i.record.id for i in by_prob] == ["id00005", "id00006", "id00007"]  # a hard negative at p=0.001 is sure
