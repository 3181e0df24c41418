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

Every order is one ``Ordering`` record in ``ORDERINGS`` (its name, CLI flag,
titles, help, sort key and what it computes beforehand); ``selection`` and
``dalle-data review`` read this table, so adding an order is one entry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from dalle_data import embeddings
from dalle_data.analysis import duplicate_groups
from dalle_data.records import Record
from dalle_data.review.images import ImageStore
from dalle_data.review.run import ReviewRun
from dalle_data.review.vectors import load_embeddings
from dalle_data.scoring import load_scorer
from dalle_data.scoring.registry import check_scorer_name

if TYPE_CHECKING:
    from dalle_data.review.selection import SelectionOptions

log = logging.getLogger(__name__)

KeyFn = Callable[[Record], tuple[bool, float, str]]


def score_key(record: Record) -> tuple[bool, float, str]:
    """Sort key: unscored first, then by CLIP score, ties by id."""
    score = record.clip_score
    return (score is not None, score if score is not None else 0.0, record.id)


def confidence(record: Record) -> float | None:
    """The scorer's probability that the record is what its label says (a hard negative: not what it imitates)."""
    if record.class_prob is None:
        return None
    return 1.0 - record.class_prob if record.role == "hard_negative" else record.class_prob


def value_key(values: Mapping[str, float | None]) -> KeyFn:
    """Sort key by a precomputed value per record id (missing values first), ties by id."""
    def key(record: Record) -> tuple[bool, float, str]:
        value = values.get(record.id)
        return (value is not None, value if value is not None else 0.0, record.id)
    return key


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


@dataclass(frozen=True)
class Ordering:
    """One review order: ``name`` (``SelectionOptions.order``), its ``flag`` on ``dalle-data review``, the page's
    ``title``, ``what`` the listing says it shows (``{second_scorer}`` filled in), the flag's ``help``, the ``why``
    column of the table, and how it ranks: ``key`` (from the kept records and the precomputed ``values``) or
    ``groups`` (the records shown group by group); ``values``: computed once per session before ranking;
    ``counted``: the flag takes N (else it is a switch); ``second_scorer``: it needs ``--second-scorer``."""

    name: str
    flag: str
    title: str
    what: str
    help: str
    why: str = "lowest"
    key: Callable[[Sequence[Record], Mapping[str, float | None]], KeyFn] | None = None
    values: Callable[[ReviewRun, SelectionOptions, Sequence[Record], Any], dict[str, float | None]] | None = None
    groups: Callable[[ReviewRun, SelectionOptions, Sequence[Record]], list[list[str]]] | None = None
    counted: bool = True
    second_scorer: bool = False


ORDERINGS: dict[str, Ordering] = {o.name: o for o in (
    Ordering("clip", "--lowest-clip", "lowest CLIP score", "lowest CLIP scores",
             "Review the N kept images with the lowest CLIP score (0: none). [default: 50 when no other order is "
             "given]", key=lambda kept, values: score_key),
    Ordering("prob", "--lowest-prob", "lowest class probability", "lowest class probabilities",
             "Review the N kept images the scorer is least sure are their label.", why="prob",
             key=lambda kept, values: value_key({r.id: confidence(r) for r in kept})),
    Ordering("margin", "--smallest-margin", "smallest margin", "smallest margins",
             "Review the N kept images whose label leads the runner-up label by the least.", why="margin",
             key=lambda kept, values: value_key(values), values=lambda run, opts, kept, scorer: margins(run, kept)),
    Ordering("disagree", "--disagree", "most doubt from the second scorer",
             "lowest class probabilities under {second_scorer}",
             "With --second-scorer: the N images that scorer gives the lowest probability of their label.",
             why="disagree", key=lambda kept, values: value_key(values), second_scorer=True,
             values=lambda run, opts, kept, scorer: second_opinion(run, kept, opts.second_scorer or "", scorer)),
    Ordering("duplicates", "--duplicates", "near-duplicate group", "near-duplicate groups",
             "Review the near-duplicate groups, group by group.", why="group", counted=False,
             groups=lambda run, opts, kept: duplicate_id_groups(run, kept, opts.threshold)),
)}


def prepare(run: ReviewRun, opts: SelectionOptions, records: Sequence[Record],
            scorer: Any = None) -> tuple[dict[str, float | None] | None, list[list[str]]]:
    """What ``select`` needs beyond the records for ``opts.order``: (values, groups)."""
    kept = [r for r in records if r.status == "kept"]
    ordering = ORDERINGS[opts.order]
    if ordering.values is not None:
        return ordering.values(run, opts, kept, scorer), []
    if ordering.groups is not None:
        return None, ordering.groups(run, opts, kept)
    return None, []
