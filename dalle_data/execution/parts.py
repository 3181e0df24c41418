"""Parts: ``--shard i/n`` runs a deterministic, disjoint part of the plan, for any scheduler.

Every part computes the same split from the spec and ``n`` alone, then takes
its own share, so no part waits for another and any set of machines that
runs parts ``0 … n-1`` covers the plan exactly once:

1. A slot (class × mode) whose target is larger than a fair share
   (``ceil(total target / n)``) is split into ``k`` sub-slots, ``k`` the
   smallest number that brings each under it (at most ``n``). Sub-slot
   ``j`` makes the slot's units ``j, j + k, j + 2k, …`` (their prompts and
   seeds follow the slot-wide index, so no two sub-slots ever make the same
   image), with a target and an attempt budget that are the slot's split as
   evenly as they go (they sum to the slot's). With ``--per-source``, the
   slot's source images are dealt out instead (``j, j + k, …``): each keeps
   its own quota of K in one part.
2. Sub-slots are dealt to parts largest first, each to the least loaded part
   (ties: the lowest index); sub-slots of one slot go to different parts.

Quotas close inside each part: a part's slots are whole (or whole
sub-slots), so its ledger alone decides when they are met. An unsplit slot
makes exactly the units an unsharded run makes; a split one makes other
units (its waves are planned per sub-slot), so a sharded run equals an
unsharded one in its ids only when no slot was split.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from dalle_data.errors import SpecError
from dalle_data.execution.plan import SlotPlan
from dalle_data.rundir.layout import part_prefix, shard_part

_PART = re.compile(r"^\s*(\d+)\s*(?:/|-of-)\s*(\d+)\s*$")


@dataclass(frozen=True)
class Part:
    """Part ``index`` of ``count`` (0-based, as Slurm array ids and Kubernetes completion indexes are)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Part:
        match = _PART.match(text or "")
        if not match:
            raise SpecError(f"--shard {text!r}: write it as i/n, e.g. --shard 0/4 … --shard 3/4 (0 <= i < n)")
        index, count = int(match.group(1)), int(match.group(2))
        if count < 1 or not 0 <= index < count:
            raise SpecError(f"--shard {text}: i must be at least 0 and below n (0/{count} … {count - 1}/{count})")
        if count > 100_000:
            raise SpecError(f"--shard {text}: at most 100000 parts")
        return cls(index, count)

    @classmethod
    def of_shard(cls, shard: str) -> Part | None:
        """The part that made shard ``shard`` (``p0003of0010-r001-s0000`` -> 3/10); None for an unsharded shard."""
        found = shard_part(shard)
        return cls(*found) if found is not None else None

    @property
    def name(self) -> str:
        """The part's folder under ``OUT/parts/``: ``3-of-10``."""
        return f"{self.index}-of-{self.count}"

    @property
    def prefix(self) -> str:
        """The prefix of the part's shard names: ``p0003of0010-``."""
        return part_prefix(self.index, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def split(slots: Sequence[SlotPlan], n: int) -> list[SlotPlan]:
    """Every slot, those above a fair share split into sub-slots (see the module docstring)."""
    if n <= 1:
        return list(slots)
    fair = max(1, math.ceil(sum(s.target for s in slots) / n))
    out: list[SlotPlan] = []
    for slot in slots:
        k = min(n, math.ceil(slot.target / fair)) if slot.target > fair else 1
        if slot.per_source is not None:
            k = min(k, len(slot.sources))
        if k <= 1:
            out.append(slot)
            continue
        targets, budgets = _even(slot.target, k), _even(slot.budget, k)
        for j in range(k):
            if slot.per_source is not None:
                sources = slot.sources[j::k]
                target = slot.per_source * len(sources)
                budget = max(round(slot.budget * len(sources) / len(slot.sources)), target)
                out.append(replace(slot, sub=j, stride=k, sources=sources, target=target, budget=budget))
            else:
                out.append(replace(slot, sub=j, stride=k, target=targets[j], budget=max(budgets[j], targets[j])))
    return out


def assign(slots: Sequence[SlotPlan], n: int) -> list[list[SlotPlan]]:
    """The (sub-)slots of each part, in slot order (see the module docstring)."""
    import heapq

    parts: list[list[SlotPlan]] = [[] for _ in range(n)]
    heap = [(0, i) for i in range(n)]  # (load, part): the least loaded part, the lowest index on ties
    homes: dict[tuple[str, str], set[int]] = {}
    order = {s.key: i for i, s in enumerate(slots)}
    for slot in sorted(slots, key=lambda s: (-s.target, order[s.key])):
        taken = homes.setdefault((slot.cls, slot.mode), set())
        skipped = []
        while heap and heap[0][1] in taken and len(skipped) < n - 1:
            skipped.append(heapq.heappop(heap))  # a sibling sub-slot is there: the next least loaded part
        load, chosen = heapq.heappop(heap)
        for item in skipped:
            heapq.heappush(heap, item)
        heapq.heappush(heap, (load + slot.target, chosen))
        parts[chosen].append(slot)
        taken.add(chosen)
    return [sorted(part, key=lambda s: order[s.key]) for part in parts]


def slots_of(slots: Sequence[SlotPlan], part: Part) -> list[SlotPlan]:
    """The (sub-)slots part ``part`` makes."""
    return assign(split(slots, part.count), part.count)[part.index]


def skeleton(targets: dict[tuple[str, str], tuple[int, int]]) -> list[SlotPlan]:
    """Every slot of a run from the spec's targets alone (no prompts): enough to split and deal them."""
    return [SlotPlan(cls=cls, mode=mode, label=cls, label_id=0, class_dir=cls, hard_negative=False,
                     target=target, budget=budget, prompts=(), run_seed=0)
            for (cls, mode), (target, budget) in targets.items()]


def classes_of(targets: dict[tuple[str, str], tuple[int, int]], part: Part) -> set[str]:
    """The classes a part makes anything of, from the spec's targets alone (before any prompt is written)."""
    return {s.cls for s in slots_of(skeleton(targets), part)}


def dealt(real: Sequence[SlotPlan], targets: dict[tuple[str, str], tuple[int, int]], part: Part) -> list[SlotPlan]:
    """A part's (sub-)slots when only its classes' slots were built: the split and deal are computed on the
    whole run's skeleton (as every part computes them), then applied to the built slots."""
    by_key = {(s.cls, s.mode): s for s in real}
    return [replace(by_key[(m.cls, m.mode)], sub=m.sub, stride=m.stride, target=m.target, budget=m.budget)
            for m in slots_of(skeleton(targets), part)]


def _even(total: int, k: int) -> list[int]:
    base, extra = divmod(total, k)
    return [base + (1 if j < extra else 0) for j in range(k)]
