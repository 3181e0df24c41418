"""How varied each class is: the Vendi score and the mean pairwise distance of its image embeddings.

* Vendi score (Friedman & Dieng, 2023): the exponential of the entropy of the
  eigenvalues of K/n, K the cosine-similarity matrix of the class's images:
  the *effective number of distinct images* (1 when all are the same, n when
  all are orthogonal). K/n = X Xᵀ/n has the same non-zero eigenvalues as the
  D×D matrix Xᵀ X/n; whichever of the two is smaller is decomposed (O(n·D²)
  time and O(D²) memory for a large class; never an n×n matrix with n > D).
* mean pairwise distance: the mean of 1 − cos over all pairs, exactly, from
  the sum of the embeddings (‖Σx‖² = n + Σ_{i≠j} xᵢ·xⱼ for unit vectors).

The Vendi score grows with the number of images, so classes are compared on a
deterministic subsample of the same size (``basis``: the smallest class, at
most ``MAX_BASIS``): ``vendi_at``. A class is flagged when its ``vendi_at`` is
under half the median of the classes, or when it collapsed (effectively fewer
than ``COLLAPSED`` distinct images although it was made from several prompts).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from dalle_data.records import Record

if TYPE_CHECKING:
    from dalle_data.embeddings import EmbeddingSet

MAX_BASIS = 1000
LOW_SHARE = 0.5  # flagged under this share of the median vendi_at
COLLAPSED = 2.0  # effectively fewer distinct images than this ...
COLLAPSE_PROMPTS = 5  # ... from at least this many distinct prompts (and images)
_CHUNK = 8192


@dataclass(frozen=True)
class ClassDiversity:
    label: str
    images: int  # kept images with an embedding
    prompts: int  # distinct prompts among the class's kept images
    vendi: float  # effective number of distinct images, over all of them
    vendi_at: float  # the same on ``basis`` images (comparable between classes)
    basis: int
    mean_distance: float  # mean pairwise cosine distance (0: all the same)
    warning: str | None = None

    def as_json(self) -> dict[str, object]:
        data = asdict(self)
        for key in ("vendi", "vendi_at", "mean_distance"):
            data[key] = round(float(data[key]), 4)
        return data


def vendi_score(x: np.ndarray) -> float:
    """The Vendi score of L2-normalised rows ``x`` with the cosine kernel (see the module docstring)."""
    n = len(x)
    if n == 0:
        return 0.0
    if n <= x.shape[1]:  # the n×n Gram matrix is the smaller one
        gram = np.asarray(x, dtype=np.float64)
        eig = np.linalg.eigvalsh(gram @ gram.T / n)
    else:
        cov = np.zeros((x.shape[1], x.shape[1]), dtype=np.float64)
        for start in range(0, n, _CHUNK):
            chunk = np.asarray(x[start : start + _CHUNK], dtype=np.float64)
            cov += chunk.T @ chunk
        eig = np.linalg.eigvalsh(cov / n)
    eig = eig[eig > 1e-12]
    eig = eig / eig.sum()
    return float(np.exp(-(eig * np.log(eig)).sum()))


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean of 1 − xᵢ·xⱼ over all pairs i ≠ j of L2-normalised rows (0.0 for fewer than two)."""
    n = len(x)
    if n < 2:
        return 0.0
    total = np.asarray(x, dtype=np.float64).sum(axis=0)
    return float(1.0 - (total @ total - n) / (n * (n - 1)))


def diversity(records: Sequence[Record], emb: EmbeddingSet, labels: Sequence[str] = ()) -> list[ClassDiversity]:
    """Diversity of each label's kept images (labels in ``labels`` order, then any others), with warnings."""
    by_label: dict[str, list[Record]] = {}
    for record in records:
        if record.status == "kept" and record.id in emb.row:
            by_label.setdefault(record.label, []).append(record)
    order = [label for label in labels if label in by_label] + sorted(set(by_label) - set(labels))
    if not order:
        return []
    basis = max(2, min(MAX_BASIS, min(len(by_label[label]) for label in order)))
    rows = []
    for label in order:
        members = sorted(by_label[label], key=lambda r: r.id)
        x = emb.take(r.id for r in members)
        vendi = vendi_score(x)
        if len(members) <= basis:
            vendi_at = vendi
        else:
            vendi_at = vendi_score(emb.take(r.id for r in random.Random(0).sample(members, basis)))
        rows.append(ClassDiversity(
            label=label, images=len(members), prompts=len({r.prompt for r in members}), vendi=vendi,
            vendi_at=vendi_at, basis=min(basis, len(members)),
            mean_distance=mean_pairwise_distance(x)))
    median = float(np.median([r.vendi_at for r in rows]))
    out = []
    for row in rows:
        warning = None
        if row.images >= COLLAPSE_PROMPTS and row.prompts >= COLLAPSE_PROMPTS and row.vendi < COLLAPSED:
            warning = (f"{row.label!r} collapsed: its {row.images} images from {row.prompts} prompts amount to "
                       f"{row.vendi:.1f} distinct images")
        elif len(rows) > 1 and row.vendi_at < LOW_SHARE * median:
            warning = (f"{row.label!r} is markedly less diverse than the other classes "
                       f"(Vendi {row.vendi_at:.1f} on {row.basis} images; median {median:.1f})")
        out.append(ClassDiversity(**{**asdict(row), "warning": warning}))
    return out
