"""The values that some review orders rank by, computed once per session (see ``selection``).

* ``margin``: from the scorer's class probabilities stored with the
  embeddings (``OUT/embeddings/``): for a positive image, p(its label) minus
  the highest other probability; for a hard negative, the highest
  probability of a class other than the one it imitates minus p(imitated).
  Negative or near zero: the scorer barely (or wrongly) put it where it is.
  Runs made before embeddings were kept fall back on the one probability
  recorded per image (2·p − 1, the margin over everything else together).
* ``disagree``: a second, independent scorer (any ``--scorer`` name) gives
  the probability of the image's label over the run's labels (a hard
  negative: of not being the class it imitates); low means it doubts what
  the first scorer accepted.
* ``duplicates``: the near-duplicate groups of ``analysis.duplicates``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from dalle_data import embeddings
from dalle_data.analysis import duplicate_groups
from dalle_data.records import Record
from dalle_data.report import load_embeddings
from dalle_data.review.images import ImageStore
from dalle_data.review.run import ReviewRun
from dalle_data.review.selection import SelectionOptions, confidence
from dalle_data.scoring import load_scorer
from dalle_data.scoring.registry import check_scorer_name

log = logging.getLogger(__name__)


def margin_of(record: Record, probs: np.ndarray, labels: Sequence[str]) -> float | None:
    """The record's margin from its probabilities over ``labels`` (see the module docstring)."""
    target = record.imitates if record.role == "hard_negative" else record.label
    if target not in labels:
        return None
    k = list(labels).index(target)
    others = np.delete(probs, k)
    best_other = float(others.max()) if len(others) else 0.0
    if record.role == "hard_negative":
        return best_other - float(probs[k])
    return float(probs[k]) - best_other


def margins(run: ReviewRun, records: Sequence[Record]) -> dict[str, float | None]:
    shards = sorted({r.shard for r in records})
    emb, _ = embeddings.load(run.layout, shards, {r.id for r in records})
    values: dict[str, float | None] = {}
    for record in records:
        if emb is not None and record.id in emb.row:
            values[record.id] = margin_of(record, emb.probs[emb.row[record.id]], emb.labels)
        else:
            p = confidence(record)
            values[record.id] = None if p is None else 2.0 * p - 1.0
    return values


def second_opinion(run: ReviewRun, records: Sequence[Record], scorer_name: str, scorer: Any = None,
                   batch: int = 32) -> dict[str, float | None]:
    """Each record's probability of its label (hard negative: of not being what it imitates) under another scorer."""
    import io

    from PIL import Image

    if scorer is None:
        check_scorer_name(scorer_name)
        scorer = load_scorer(scorer_name)
    labels = list(run.labels)
    if run.negative_label in labels:  # the second scorer judges the classes; hard negatives by their imitation
        labels.remove(run.negative_label)
    scorer.set_labels(labels)
    store = ImageStore(run, wanted={r.id for r in records})
    values: dict[str, float | None] = {}
    for start in range(0, len(records), batch):
        chunk = []
        for record in records[start : start + batch]:
            data = store.png(record)
            if data is None:
                values[record.id] = None
            else:
                chunk.append((record, Image.open(io.BytesIO(data)).convert("RGB")))
        if not chunk:
            continue
        scores = scorer.score([im for _, im in chunk], [r.prompt for r, _ in chunk])
        for (record, _), probs in zip(chunk, scores.probs):
            target = record.imitates if record.role == "hard_negative" else record.label
            p = float(probs[labels.index(target)]) if target in labels else None
            values[record.id] = None if p is None else (1.0 - p if record.role == "hard_negative" else p)
    return values


def duplicate_id_groups(run: ReviewRun, records: Sequence[Record], threshold: float) -> list[list[str]]:
    emb, _, _ = load_embeddings(run, run.spec, compute=False)
    return [list(g.ids) for g in duplicate_groups(records, emb, threshold)]


def prepare(run: ReviewRun, opts: SelectionOptions, records: Sequence[Record],
            scorer: Any = None) -> tuple[dict[str, float | None] | None, list[list[str]]]:
    """What ``select`` needs beyond the records for ``opts.order``: (values, groups)."""
    kept = [r for r in records if r.status == "kept"]
    if opts.order == "margin":
        return margins(run, kept), []
    if opts.order == "disagree":
        return second_opinion(run, kept, opts.second_scorer or "", scorer), []
    if opts.order == "duplicates":
        return None, duplicate_id_groups(run, kept, opts.threshold)
    return None, []
