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
    generated: int = 0
    kept: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.kept >= self.target or self.generated >= self.budget

    def next_batch_size(self) -> int:
        """How many more to generate this round: enough to meet the target at the
        acceptance rate seen so far (Laplace-smoothed), within the budget."""
        if self.done:
            return 0
        need = self.target - self.kept
        rate = 1.0 if self.generated == 0 else (self.kept + 1) / (self.generated + 2)
        return min(math.ceil(need / rate), self.budget - self.generated)

    def _sources_for(self, k: int) -> tuple[Source, ...]:
        n = len(self.sources)
        if self.mode == "fuse":
            a, b = fuse_pair(k, n)
            return (self.sources[a], self.sources[b])
        if self.mode in ("variation", "inpaint"):
            return (self.sources[k % n],)
        return ()

    def take(self, n: int) -> list[WorkUnit]:
        units = []
        for k in range(self.generated, self.generated + n):
            prompt = self.prompts[k % len(self.prompts)]
            seed = derive_seed(self.run_seed, self.cls, self.mode, k)
            units.append(WorkUnit(self, k, prompt, seed, self._sources_for(k)))
        return units


def build_slots(
    spec: RunSpec,
    prompts: Sequence[PromptItem],
    labels: Sequence[str],
    class_dirs: dict[str, str],
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
            cls=cls, mode=mode, label=label, label_id=labels.index(label), class_dir=class_dirs[label],
            hard_negative=hard, target=target, budget=budget, prompts=items, run_seed=spec.seed, sources=own,
        ))
    return slots
