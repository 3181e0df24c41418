"""Planning: which images a run makes, as deterministic work units.

The plan is a list of ``Slot``s, one per (class, mode): its label, target of
kept images, attempt budget, prompt list and (image modes) source images. A
slot hands out ``WorkUnit``s in a fixed order: unit ``k`` uses prompt
``k mod len(prompts)``, a seed derived from (run seed, class, mode, k), and
for image modes:

* ``variation`` and ``inpaint``: source ``k mod n`` (sources sorted by id), so
  every source is used once before any is used twice;
* ``fuse``: the pair (``a``, ``b``) with ``a = k mod n`` and
  ``b = (a + 1 + (k div n) mod (n - 1)) mod n``: the first pass pairs each
  source with its next neighbour, later passes with ever farther ones, so
  all n × (n - 1) ordered pairs come before any repeats.

The same spec therefore always asks for the same images, however the work is
batched or split.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from dalle_data.config import RunSpec
from dalle_data.errors import SpecError
from dalle_data.labels import LabelMap
from dalle_data.prompts import PromptItem
from dalle_data.sources import Source


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across Python runs and machines)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


@dataclass(frozen=True, slots=True)
class WorkUnit:
    slot: "Slot"
    index: int
    prompt: PromptItem
    seed: int
    sources: tuple[Source, ...] = ()


def fuse_pair(k: int, n: int) -> tuple[int, int]:
    a = k % n
    return a, (a + 1 + (k // n) % (n - 1)) % n


@dataclass(eq=False)
class Slot:
    """One (class, mode) of the plan and its running counts."""

    cls: str
    mode: str
    label: str
    label_id: int
    class_dir: str
    hard_negative: bool
    target: int
    budget: int
    prompts: list[PromptItem]
    run_seed: int
    sources: list[Source] = field(default_factory=list)
    per_source: int | None = None  # --per-source K: a quota (and a budget of 5K attempts) per source image
    generated: int = 0
    kept: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    kept_by_source: dict[str, int] = field(default_factory=dict)
    tried_by_source: dict[str, int] = field(default_factory=dict)
    next_k: int = 0  # the next unit index; with --per-source, units of finished sources are skipped
    unusable: int = 0  # failed records of sources (or masks) found unusable before generation: not attempts

    def exclude(self, bad: set[str]) -> None:
        """Drop sources found unusable: never paired or attempted again; a per-source target shrinks."""
        if not bad or not self.sources:
            return
        kept = [s for s in self.sources if s.id not in bad]
        self.sources = kept
        if self.per_source is not None:
            self.target = self.per_source * len(kept)

    def source_open(self, source: Source) -> bool:
        """With --per-source: the source still needs images and has attempts left."""
        assert self.per_source is not None
        return (self.kept_by_source.get(source.id, 0) < self.per_source
                and self.tried_by_source.get(source.id, 0) < 5 * self.per_source)

    @property
    def done(self) -> bool:
        if self.generated >= self.budget:
            return True
        if self.mode in ("variation", "inpaint", "fuse") and len(self.sources) < (2 if self.mode == "fuse" else 1):
            return True  # no usable source left
        if self.per_source is not None:
            return not any(self.source_open(s) for s in self.sources)
        return self.kept >= self.target

    def next_batch_size(self) -> int:
        """How many more to generate this round: enough to meet the target at the
        acceptance rate seen so far (Laplace-smoothed), within the budget."""
        if self.done:
            return 0
        rate = 1.0 if self.generated == 0 else (self.kept + 1) / (self.generated + 2)
        if self.per_source is not None:
            need = sum(self.per_source - self.kept_by_source.get(s.id, 0) for s in self.sources if self.source_open(s))
            return min(math.ceil(need / rate), self.budget - self.generated)
        need = self.target - self.kept
        return min(math.ceil(need / rate), self.budget - self.generated)

    def count(self, source_id: str | None, kept: bool) -> None:
        self.generated += 1
        self.kept += kept
        if source_id is not None:
            self.tried_by_source[source_id] = self.tried_by_source.get(source_id, 0) + 1
            self.kept_by_source[source_id] = self.kept_by_source.get(source_id, 0) + kept

    def full(self, unit: "WorkUnit") -> bool:
        """No room for another kept image from this unit (quota met, overall or for its source)."""
        if self.per_source is not None and unit.sources:
            return self.kept_by_source.get(unit.sources[0].id, 0) >= self.per_source
        return self.kept >= self.target

    def _sources_for(self, k: int) -> tuple[Source, ...]:
        n = len(self.sources)
        if self.mode == "fuse":
            a, b = fuse_pair(k, n)
            return (self.sources[a], self.sources[b])
        if self.mode in ("variation", "inpaint"):
            return (self.sources[k % n],)
        return ()

    def take(self, n: int) -> list[WorkUnit]:
        units: list[WorkUnit] = []
        planned: dict[str, int] = {}
        while len(units) < n:
            k = self.next_k
            self.next_k += 1
            sources = self._sources_for(k)
            if self.per_source is not None:
                first = sources[0]
                if not self.source_open(first) or planned.get(first.id, 0) >= self._room(first):
                    if not any(self.source_open(s) and planned.get(s.id, 0) < self._room(s) for s in self.sources):
                        break
                    continue
                planned[first.id] = planned.get(first.id, 0) + 1
            prompt = self.prompts[k % len(self.prompts)]
            units.append(WorkUnit(self, k, prompt, derive_seed(self.run_seed, self.cls, self.mode, k), sources))
        return units

    def _room(self, source: Source) -> int:
        """Attempts a source may still take this round (its quota left, at the acceptance rate so far)."""
        assert self.per_source is not None
        left = self.per_source - self.kept_by_source.get(source.id, 0)
        rate = 1.0 if self.generated == 0 else (self.kept + 1) / (self.generated + 2)
        tries_left = 5 * self.per_source - self.tried_by_source.get(source.id, 0)
        return min(math.ceil(left / rate), tries_left)


def build_slots(
    spec: RunSpec,
    prompts: Sequence[PromptItem],
    labels: LabelMap,
    sources: Sequence[Source] = (),
) -> list[Slot]:
    """Slots for every class × mode with a non-zero target, in class then mode order."""
    by_key: dict[tuple[str, str], list[PromptItem]] = {}
    for item in prompts:
        by_key.setdefault((item.cls, item.mode), []).append(item)
    by_class: dict[str, list[Source]] = {}
    for source in sorted(sources, key=lambda s: s.id):
        by_class.setdefault(source.label, []).append(source)
    slots: list[Slot] = []
    targets = spec.slot_targets({c: len(v) for c, v in by_class.items()})
    for (cls, mode), (target, budget) in targets.items():
        items = by_key.get((cls, mode))
        if not items:
            raise SpecError(f"no {mode} prompts for class {cls!r}; add some to the prompts file or template pack")
        own = by_class.get(cls, []) if mode in ("variation", "fuse", "inpaint") else []
        if mode in ("variation", "inpaint") and not own:
            raise SpecError(f"{mode} needs source images of class {cls!r}; --from has none")
        if mode == "fuse" and len(own) < 2:
            raise SpecError(f"fuse needs at least two source images of class {cls!r}; --from has {len(own)}")
        hard = mode == "adversarial"
        label = spec.negative_label if hard else cls
        slots.append(Slot(
            cls=cls, mode=mode, label=label, label_id=labels.id_of(label), class_dir=labels.folder_of(label),
            hard_negative=hard, target=target, budget=budget, prompts=items, run_seed=spec.seed, sources=own,
            per_source=spec.per_source if mode in ("variation", "fuse", "inpaint") else None,
        ))
    return slots
