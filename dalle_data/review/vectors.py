"""A run's stored image embeddings, as review and the report read them (those of shards made before
embeddings were kept are computed from the images on demand)."""

from __future__ import annotations

import logging
from typing import Any

from dalle_data import embeddings
from dalle_data.planning import zero_shot_labels
from dalle_data.review.images import ImageStore
from dalle_data.scoring import load_scorer
from dalle_data.scoring.registry import resolve_scorer_name

log = logging.getLogger(__name__)


def load_embeddings(review_run: Any, spec: Any, *, compute: bool = True, scorer: Any = None,
                    device: str = "cpu", fetch: Any = None) -> tuple[Any, int, int]:
    """The stored embeddings of the run's scored images, computing those of shards without a file when
    ``compute``; returns (embedding set or None, images computed now, images still without one)."""
    records = [r for r in review_run.records if r.status in ("kept", "rejected")]
    wanted = {r.id for r in records}
    shards = sorted({r.shard for r in records})
    layout = review_run.layout
    if fetch is not None:
        fetch([layout.embeddings(s) for s in shards])
    emb, missing = embeddings.load(layout, shards, wanted)
    computed = 0
    if missing and compute:
        if scorer is None:
            log.info("embedding the images of %d shard(s) made before embeddings were kept", len(missing))
            scorer = load_scorer(resolve_scorer_name(spec.scorer, spec.model, spec.backend), device=device)
        store = ImageStore(review_run, wanted={r.id for r in records if r.shard in missing})
        labels = list(emb.labels) if emb is not None else zero_shot_labels(spec)
        computed = embeddings.compute_missing(
            layout, records, missing, scorer, labels,
            lambda group: {r.id: data for r in group if (data := store.png(r)) is not None})
        emb, missing = embeddings.load(layout, shards, wanted)
    have = set(emb.ids) if emb is not None else set()
    return emb, computed, sum(r.id not in have for r in records if r.status == "kept")
