"""Which images a review shows: the lowest CLIP scores first, plus spot checks.

The selection is a pure function of the run's kept records (in their original
state, see ``run``) and the options, so reopening a review shows the same
images in the same order:

* ``lowest`` images with the lowest ``clip_score`` (the cosine between the
  image and its own prompt), overall, or per label with ``per_class``
  (grouped by label in ClassLabel order). Ties are broken by id; records
  without a score sort first (nothing vouches for them).
* ``random`` more images drawn from the kept records not already selected,
  with ``random.Random(seed)`` over the pool sorted by id: the same seed
  gives the same sample. They follow in their own section, or with
  ``shuffle`` are mixed into the whole list (same seed, same order), so the
  reviewer cannot tell a low score from a spot check.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dalle_data.records import Record

Why = Literal["lowest", "random"]


class SelectionOptions(BaseModel):
    """What to review (``dalle-data review`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lowest: int = Field(default=50, ge=0, le=1_000_000)
    per_class: bool = False
    random: int = Field(default=0, ge=0, le=1_000_000)
    seed: int = Field(default=0, ge=0)
    shuffle: bool = False

    @model_validator(mode="after")
    def _something(self) -> SelectionOptions:
        if self.lowest == 0 and self.random == 0:
            raise ValueError("nothing to review: give --lowest-clip N and/or --random K above 0")
        return self

    def describe(self) -> str:
        parts = []
        if self.lowest:
            parts.append(f"the {self.lowest} lowest CLIP scores" + (" per class" if self.per_class else ""))
        if self.random:
            parts.append(f"{self.random} random (seed {self.seed}{', shuffled in' if self.shuffle else ''})")
        return " + ".join(parts)


@dataclass(frozen=True)
class Item:
    """One image of the selection and why it is there.

    ``rank`` is 1 for the lowest score (overall, or within its class with
    ``per_class``); for a random pick it is its place in the sample.
    """

    record: Record
    why: Why
    rank: int


def score_key(record: Record) -> tuple[bool, float, str]:
    """Sort key: unscored first, then by CLIP score, ties by id."""
    score = record.clip_score
    return (score is not None, score if score is not None else 0.0, record.id)


def lowest(records: Sequence[Record], n: int, per_class: bool, labels: Sequence[str] = ()) -> list[Item]:
    """The ``n`` lowest-scoring records overall, or of each label."""
    if not per_class:
        return [Item(r, "lowest", i) for i, r in enumerate(sorted(records, key=score_key)[:n], 1)]
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.label, []).append(record)
    order = [label for label in labels if label in groups] + sorted(set(groups) - set(labels))
    items: list[Item] = []
    for label in order:
        items += [Item(r, "lowest", i) for i, r in enumerate(sorted(groups[label], key=score_key)[:n], 1)]
    return items


def select(records: Sequence[Record], opts: SelectionOptions, labels: Sequence[str] = ()) -> list[Item]:
    """The images to review, in display order (see the module docstring)."""
    kept = [r for r in records if r.status == "kept"]
    items = lowest(kept, opts.lowest, opts.per_class, labels) if opts.lowest else []
    taken = {item.record.id for item in items}
    pool = sorted((r for r in kept if r.id not in taken), key=lambda r: r.id)
    rng = random.Random(opts.seed)
    sample = rng.sample(pool, min(opts.random, len(pool)))
    items += [Item(r, "random", i) for i, r in enumerate(sample, 1)]
    if opts.shuffle:
        rng.shuffle(items)
    return items
