"""Near-duplicate images within a class: exact (same PNG hash) and near (embedding cosine ≥ threshold).

Two images of a class are near-duplicates when the cosine between their
scorer image embeddings is at least ``threshold`` (default 0.95: the same
picture re-encoded, cropped a little or recoloured slightly stays above it,
while two different pictures of one class from one prompt usually fall
well below it; lower it to group looser look-alikes). Groups are the
connected components of that relation, so a chain a≈b≈c is one group.

The cosines are exact, computed block by block (``BLOCK`` rows against
``BLOCK`` columns, upper triangle only) and folded into a union-find as they
come: memory stays O(n·D + BLOCK²) however many images a class has, and time
is O(n²·D / 2) multiply-adds (measured in benchmarks/analysis.py).

Within a group the image to keep is the one the scorer is surest of (highest
class probability, then highest CLIP score, then smallest id); ``dedup``
sets the others aside.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from dalle_data.records import Record

if TYPE_CHECKING:
    from dalle_data.embeddings import EmbeddingSet

DEFAULT_THRESHOLD = 0.95
BLOCK = 2048


@dataclass(frozen=True)
class DuplicateGroup:
    """Images of one class that are (near-)copies of each other; ``ids[0]`` is the one to keep."""

    label: str
    ids: tuple[str, ...]
    exact: bool  # every image has the same bytes
    min_similarity: float  # the lowest cosine of a member to the kept image (1.0 for exact copies)

    @property
    def keeper(self) -> str:
        return self.ids[0]

    @property
    def extra(self) -> tuple[str, ...]:
        return self.ids[1:]

    def as_json(self) -> dict[str, object]:
        return {"label": self.label, "keep": self.keeper, "set_aside": list(self.extra), "exact": self.exact,
                "min_similarity": round(self.min_similarity, 4)}


def _compress(parent: np.ndarray) -> None:
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def union(parent: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """Join the sets of ``a[k]`` and ``b[k]`` for every k (vectorised union-find; roots are set minima)."""
    while len(a):
        _compress(parent)
        ra, rb = parent[a], parent[b]
        differ = ra != rb
        if not differ.any():
            return
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))


def similar_pairs(x: np.ndarray, threshold: float, block: int = BLOCK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Index pairs (i < j) with ``x[i]·x[j] ≥ threshold``, one block of the upper triangle at a time."""
    n = len(x)
    for i0 in range(0, n, block):
        rows = x[i0 : i0 + block]
        for j0 in range(i0, n, block):
            sims = rows @ x[j0 : j0 + block].T
            if j0 == i0:
                sims[np.tril_indices(len(rows), 0, sims.shape[1])] = -np.inf
            ii, jj = np.nonzero(sims >= threshold)
            if len(ii):
                yield ii + i0, jj + j0


def near_duplicate_components(x: np.ndarray, threshold: float = DEFAULT_THRESHOLD, block: int = BLOCK) -> np.ndarray:
    """For each row of ``x`` (L2-normalised), the smallest row index of its near-duplicate group."""
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"the near-duplicate threshold must be in (0, 1], not {threshold}")
    parent = np.arange(len(x))
    x = np.ascontiguousarray(x, dtype=np.float32)
    for a, b in similar_pairs(x, threshold - 1e-6, block):  # float16 storage: a copy's cosine is 1 ± 1e-3
        union(parent, a, b)
    _compress(parent)
    return parent


def keep_order(record: Record) -> tuple[float, float, str]:
    """Sort key: the image to keep first (see the module docstring)."""
    return (-(record.class_prob if record.class_prob is not None else -1.0),
            -(record.clip_score if record.clip_score is not None else -2.0), record.id)


def duplicate_groups(records: Sequence[Record], emb: EmbeddingSet | None = None,
                     threshold: float = DEFAULT_THRESHOLD, block: int = BLOCK) -> list[DuplicateGroup]:
    """Groups of two or more kept images of one label that are (near-)copies; sorted by label, then size."""
    by_label: dict[str, list[Record]] = {}
    for record in records:
        if record.status == "kept":
            by_label.setdefault(record.label, []).append(record)
    groups: list[DuplicateGroup] = []
    for label in sorted(by_label):
        members = sorted(by_label[label], key=lambda r: r.id)
        n = len(members)
        parent = np.arange(n)
        first_of: dict[str, int] = {}
        for k, record in enumerate(members):  # exact copies by hash
            if record.sha256:
                first = first_of.setdefault(record.sha256, k)
                if first != k:
                    union(parent, np.array([first]), np.array([k]))
        rows = [k for k, r in enumerate(members) if emb is not None and r.id in emb.row]
        x = None
        if emb is not None and len(rows) > 1:
            x = emb.take(members[k].id for k in rows)
            local = near_duplicate_components(x, threshold, block)
            moved = local != np.arange(len(rows))
            union(parent, np.array(rows)[moved], np.array(rows)[local[moved]])
        _compress(parent)
        component: dict[int, list[int]] = {}
        for k, root in enumerate(parent.tolist()):
            component.setdefault(root, []).append(k)
        position = {k: i for i, k in enumerate(rows)}
        index_of = {r.id: k for k, r in enumerate(members)}
        for ks in component.values():
            if len(ks) < 2:
                continue
            ordered = sorted((members[k] for k in ks), key=keep_order)
            exact = len({r.sha256 for r in ordered}) == 1 and ordered[0].sha256 is not None
            lowest = 1.0
            keeper = index_of[ordered[0].id]
            if x is not None and keeper in position:
                for r in ordered[1:]:
                    k = index_of[r.id]
                    if k in position and r.sha256 != ordered[0].sha256:
                        lowest = min(lowest, float(x[position[keeper]] @ x[position[k]]))
            groups.append(DuplicateGroup(label, tuple(r.id for r in ordered), exact, lowest))
    groups.sort(key=lambda g: (g.label, -len(g.ids), g.keeper))
    return groups


def cross_label_copies(records: Sequence[Record]) -> list[tuple[str, tuple[str, ...]]]:
    """Identical images (same hash) kept under different labels: (hash, ids), each a labelling conflict."""
    seen: dict[str, list[Record]] = {}
    for record in records:
        if record.status == "kept" and record.sha256:
            seen.setdefault(record.sha256, []).append(record)
    return [(h, tuple(sorted(r.id for r in rs))) for h, rs in sorted(seen.items())
            if len({r.label for r in rs}) > 1]
