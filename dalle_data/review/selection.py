"""Which images a review shows: the likeliest to be wrong first, plus spot checks.

The selection is a pure function of the run's kept records (in their original
state, see ``run``), the options and, for some orders, one value per record
computed beforehand (``orderings``), so reopening a review shows the same
images in the same order:

* ``lowest`` images ranked by ``order``, overall, or per label with
  ``per_class`` (grouped by label in ClassLabel order). Ties are broken by
  id; records without a value sort first (nothing vouches for them). Orders
  (which to use: README, "Which images to review"):

  - ``clip``: lowest CLIP cosine between the image and its own prompt;
  - ``prob``: lowest zero-shot probability that the image is what its label
    says (for a hard negative: that it is not the class it imitates);
  - ``margin``: smallest lead of the image's label over the runner-up label
    in the scorer's stored probabilities (the boundary cases);
  - ``disagree``: lowest probability of the image's label under a second,
    independent scorer (``--second-scorer``): where two CLIPs disagree;
  - ``duplicates``: the near-duplicate groups, one after another, the image
    dedup would keep first (``lowest`` is then ignored).

* ``random`` more images drawn from the kept records not already selected,
  with ``random.Random(seed)`` over the pool sorted by id: the same seed
  gives the same sample. They follow in their own section, or with
  ``shuffle`` are mixed into the whole list (same seed, same order), so the
  reviewer cannot tell a low score from a spot check.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from dalle_data.records import Record
from dalle_data.review.orderings import ORDERINGS, KeyFn, Ordering, confidence, score_key, value_key

__all__ = ["ORDERINGS", "Item", "Ordering", "SelectionOptions", "confidence", "lowest", "score_key", "select",
           "value_key"]

Why = Literal["lowest", "random"]


class SelectionOptions(BaseModel):
    """What to review (``dalle-data review`` options)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lowest: int = Field(default=50, ge=0, le=1_000_000)
    order: str = "clip"  # a name in ORDERINGS
    second_scorer: str | None = None
    threshold: float = Field(default=0.95, gt=0.0, le=1.0)
    per_class: bool = False
    random: int = Field(default=0, ge=0, le=1_000_000)
    seed: int = Field(default=0, ge=0)
    shuffle: bool = False

    @model_validator(mode="after")
    def _something(self) -> SelectionOptions:
        if self.order not in ORDERINGS:
            raise ValueError(f"unknown order {self.order!r}; choose from {', '.join(ORDERINGS)}")
        if self.lowest == 0 and self.random == 0 and self.ordering.groups is None:
            raise ValueError("nothing to review: give --lowest-clip N and/or --random K above 0")
        needs = [o for o in ORDERINGS.values() if o.second_scorer]
        if self.ordering.second_scorer != (self.second_scorer is not None):
            flag = self.ordering.flag if self.ordering.second_scorer else (needs[0].flag if needs else "--disagree")
            raise ValueError(f"{flag} N and --second-scorer NAME go together")
        return self

    @property
    def ordering(self) -> Ordering:
        return ORDERINGS[self.order]

    @property
    def title(self) -> str:
        return self.ordering.title

    def describe(self) -> str:
        parts = []
        if self.ordering.groups is not None:
            parts.append(f"{self.ordering.what} at cosine ≥ {self.threshold}")
        elif self.lowest:
            what = self.ordering.what.format(second_scorer=self.second_scorer)
            parts.append(f"the {self.lowest} {what}" + (" per class" if self.per_class else ""))
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


def lowest(records: Sequence[Record], n: int, per_class: bool, labels: Sequence[str] = (),
           key: KeyFn = score_key) -> list[Item]:
    """The ``n`` lowest records by ``key`` (CLIP score by default) overall, or of each label."""
    if not per_class:
        return [Item(r, "lowest", i) for i, r in enumerate(sorted(records, key=key)[:n], 1)]
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.label, []).append(record)
    order = [label for label in labels if label in groups] + sorted(set(groups) - set(labels))
    items: list[Item] = []
    for label in order:
        items += [Item(r, "lowest", i) for i, r in enumerate(sorted(groups[label], key=key)[:n], 1)]
    return items


def select(records: Sequence[Record], opts: SelectionOptions, labels: Sequence[str] = (),
           values: Mapping[str, float | None] | None = None,
           groups: Sequence[Sequence[str]] = ()) -> list[Item]:
    """The images to review, in display order (see the module docstring). ``values``: the order's value per
    record id (``margin``, ``disagree``); ``groups``: the near-duplicate groups (``duplicates``)."""
    kept = [r for r in records if r.status == "kept"]
    ordering = opts.ordering
    if ordering.key is None:
        by_id = {r.id: r for r in kept}
        items = [Item(by_id[i], "lowest", g) for g, ids in enumerate(groups, 1) for i in ids if i in by_id]
    elif opts.lowest:
        items = lowest(kept, opts.lowest, opts.per_class, labels, ordering.key(kept, values or {}))
    else:
        items = []
    taken = {item.record.id for item in items}
    pool = sorted((r for r in kept if r.id not in taken), key=lambda r: r.id)
    rng = random.Random(opts.seed)
    sample = rng.sample(pool, min(opts.random, len(pool)))
    items += [Item(r, "random", i) for i, r in enumerate(sample, 1)]
    if opts.shuffle:
        rng.shuffle(items)
    return items
