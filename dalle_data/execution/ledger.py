"""Ledger: what is finished, per slot; when quotas are met; the final status of each fresh record.

The ledger folds records into per-slot counts, fresh ones (``finalize``) and
replayed ones from shard markers (``replay``), always in plan order, so a
resumed run counts exactly as an uninterrupted one. It decides:

* when a slot is done (target met, budget spent, no usable source left);
* how many units the next wave asks of a slot (``next_batch_size``);
* the final status of a fresh record: one that passed the filter after its
  slot's target (or its source's, with ``--per-source``) was met is rejected
  as ``surplus``, so ``--per-class N`` means exactly N.

The summary and the progress display are built from it; it never holds the
records themselves.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any
from dataclasses import dataclass, field

from dalle_data.execution.plan import Key, SlotPlan, Unit, acceptance, wave_size
from dalle_data.records import NOT_SELECTED, Record, reason_code
from dalle_data.sources import Source


@dataclass(eq=False)
class SlotCounts:
    """A slot's counts so far (and its usable sources: wave 0 may have excluded some)."""

    plan: SlotPlan
    target: int
    sources: tuple[Source, ...]
    generated: int = 0  # attempts: records made in generation (kept, rejected, failed, refused)
    kept: int = 0
    failed: int = 0
    unusable: int = 0  # failed records of sources found unusable before generation: no attempt spent
    reasons: dict[str, int] = field(default_factory=dict)
    kept_by_source: dict[str, int] = field(default_factory=dict)
    tried_by_source: dict[str, int] = field(default_factory=dict)
    next_k: int = 0  # the next unit index; with --per-source, units of finished sources are skipped
    candidates: int = 1  # --select: candidates that pass the filter per kept image
    passed: int = 0  # passed the filter (kept, surplus or not selected)
    selected_prob: float = 0.0  # --select: the learner's probabilities of the label, summed over the kept
    unselected_prob: float = 0.0  # ... and over the candidates not selected
    selected: int = 0
    unselected: int = 0

    @classmethod
    def of(cls, plan: SlotPlan) -> SlotCounts:
        return cls(plan=plan, target=plan.target, sources=plan.sources)

    def source_open(self, source: Source) -> bool:
        """With --per-source: the source still needs images and has attempts left."""
        k = self.plan.per_source
        assert k is not None
        return self.kept_by_source.get(source.id, 0) < k and self.tried_by_source.get(source.id, 0) < 5 * k

    @property
    def done(self) -> bool:
        mode_sources = 2 if self.plan.mode == "fuse" else 1
        if self.generated >= self.plan.budget:
            return True
        if self.plan.sources and len(self.sources) < mode_sources:
            return True  # no usable source left
        if self.plan.per_source is not None:
            return not any(self.source_open(s) for s in self.sources)
        return self.kept >= self.target

    def next_batch_size(self) -> int:
        """How many more to ask for: enough to meet the target at the acceptance rate so far, within the budget."""
        if self.done:
            return 0
        left = self.plan.budget - self.generated
        if self.candidates > 1:  # --select: enough candidates that pass the filter for K per image still wanted
            return wave_size(self.candidates * (self.target - self.kept), acceptance(self.passed, self.generated), left)
        rate = acceptance(self.kept, self.generated)
        if self.plan.per_source is not None:
            need = sum(self.plan.per_source - self.kept_by_source.get(s.id, 0)
                       for s in self.sources if self.source_open(s))
            return wave_size(need, rate, left)
        return wave_size(self.target - self.kept, rate, left)

    def room(self, source: Source) -> int:
        """Attempts a source may still take this wave (its quota left, at the acceptance rate so far)."""
        k = self.plan.per_source
        assert k is not None
        left = k - self.kept_by_source.get(source.id, 0)
        tries_left = 5 * k - self.tried_by_source.get(source.id, 0)
        return min(wave_size(left, acceptance(self.kept, self.generated), 10**18), tries_left)

    def full(self, unit: Unit) -> bool:
        """No room for another kept image from this unit (quota met, overall or for its source)."""
        if self.plan.per_source is not None and unit.sources:
            return self.kept_by_source.get(unit.sources[0].id, 0) >= self.plan.per_source
        return self.kept >= self.target

    def count(self, record: Record) -> None:
        kept = record.status == "kept"
        self.generated += 1
        self.kept += kept
        self.passed += kept or record.reject_reason in ("surplus", NOT_SELECTED)
        if record.learner_prob is not None:
            if kept:
                self.selected_prob += record.learner_prob
                self.selected += 1
            elif record.reject_reason == NOT_SELECTED:
                self.unselected_prob += record.learner_prob
                self.unselected += 1
        if record.source_id is not None:
            self.tried_by_source[record.source_id] = self.tried_by_source.get(record.source_id, 0) + 1
            self.kept_by_source[record.source_id] = self.kept_by_source.get(record.source_id, 0) + kept
        if kept:
            return
        if record.status in ("failed", "refused"):  # no usable image
            self.failed += 1
        key = reason_code(record.reject_reason, record.status) or "error"
        self.reasons[key] = self.reasons.get(key, 0) + 1

    def exclude(self, bad: set[str]) -> None:
        """Drop sources found unusable: never paired or attempted again; a per-source target shrinks."""
        if not bad or not self.sources:
            return
        self.sources = tuple(s for s in self.sources if s.id not in bad)
        if self.plan.per_source is not None:
            self.target = self.plan.per_source * len(self.sources)


class Ledger:
    """Every slot's counts, in slot order."""

    def __init__(self, slots: Sequence[SlotPlan], candidates: int = 1) -> None:
        self.slots: dict[Key, SlotCounts] = {s.key: SlotCounts.of(s) for s in slots}
        self.candidates = candidates  # > 1: --select, tasks are finalized whole (``finalize_selected``)
        for counts in self.slots.values():
            counts.candidates = candidates

    def __getitem__(self, key: Key) -> SlotCounts:
        return self.slots[key]

    def key_of(self, record: Record, units: dict[str, Key] | None = None) -> Key:
        """The slot a record counts for: its unit's, when the task is known, else its class and mode's."""
        if units and record.id in units:
            return units[record.id]
        cls, mode = record.imitates or record.label, record.mode
        return next(k for k in self.slots if k[0] == cls and k[1] == mode)

    # --- folding ---------------------------------------------------------------
    def replay(self, records: Iterable[Record], units: dict[str, Key] | None = None) -> None:
        """Count finished records (from a shard marker) as they are; ``units`` maps record ids to slots."""
        for record in records:
            self.slots[self.key_of(record, units)].count(record)

    def finalize(self, record: Record, unit: Unit) -> Record:
        """The final state of a fresh record (``surplus`` once the quota is met), counted."""
        counts = self.slots[unit.slot]
        if record.status == "kept" and counts.full(unit):
            record = record.replace(status="rejected", kept=False, reject_reason="surplus",
                                    reject_detail="passed, but the quota was already met")
        counts.count(record)
        return record

    def finalize_selected(self, items: Sequence[tuple[Record, Unit, float]]) -> list[Record]:
        """A whole task's fresh records, ``--select``; then each is finalized in plan order.

        Per slot, of the ``n`` candidates of this task that passed the filter, those the learner needs most
        (highest ``need``; ties in plan order) stay kept: as many as bring the slot's kept images to
        ``ceil(passed so far / K)`` (so small pieces of a slot at the edges of shards still keep one in K
        overall), within the slot's room; the others are rejected as ``not-selected``. When this task spends
        the slot's last attempts, every candidate that passed is kept (within the room): nothing is set aside
        that a later wave could not replace.

        A task is a shard (its units fixed by the plan, not by the batch size) and the ledger's counts are
        folded in plan order, so the same spec keeps the same images however the batches fell.
        """
        passing: dict[Key, list[int]] = {}
        attempts: dict[Key, int] = {}
        for i, (record, unit, _) in enumerate(items):
            attempts[unit.slot] = attempts.get(unit.slot, 0) + 1
            if record.status == "kept":
                passing.setdefault(unit.slot, []).append(i)
        chosen: set[int] = set()
        dropped: dict[int, str] = {}
        for key, rows in passing.items():
            counts = self.slots[key]
            room = max(0, counts.target - counts.kept)
            if not room:
                continue  # quota met: what passed is surplus, as without --select
            last = counts.generated + attempts[key] >= counts.plan.budget
            share = math.ceil((counts.passed + len(rows)) / self.candidates) - counts.kept
            want = min(room, len(rows) if last else max(0, share))
            ranked = sorted(rows, key=lambda i: (-round(items[i][2], 6), i))
            chosen.update(ranked[:want])
            for i in ranked[want:]:
                dropped[i] = (f"passed, but the learner needed {want} of this shard's {len(rows)} candidates "
                              "more (--select uncertain)")
        out = []
        for i, (record, unit, _) in enumerate(items):
            if i in dropped:
                record = record.replace(status="rejected", kept=False, reject_reason=NOT_SELECTED,
                                        reject_detail=dropped[i])
            out.append(self.finalize(record, unit))
        return out

    def unusable(self, records: Iterable[Record], users: dict[str, tuple[Key, ...]]) -> None:
        """Fold wave 0: each unusable source is counted once and left out of the slots that used it."""
        bad: dict[Key, set[str]] = {}
        for record in records:
            mine = users.get(str(record.source_id), ())
            key = next((k for k in mine if k[0] == (record.imitates or record.label) and k[1] == record.mode), None)
            counts = self.slots[key if key is not None else self.key_of(record)]
            code = record.reject_reason or "source-unreadable"
            counts.reasons[code] = counts.reasons.get(code, 0) + 1
            counts.unusable += 1
            # an unreadable file is out of every mode; a missing mask only out of inpainting
            for key in (users.get(str(record.source_id), ()) if code == "source-unreadable" else (counts.plan.key,)):
                bad.setdefault(key, set()).add(str(record.source_id))
        for key, ids in bad.items():
            self.slots[key].exclude(ids)

    def advance(self, cursors: dict[Key, int]) -> None:
        for key, cursor in cursors.items():
            self.slots[key].next_k = cursor

    # --- views ---------------------------------------------------------------
    def targets(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for counts in self.slots.values():
            out[counts.plan.cls] = out.get(counts.plan.cls, 0) + counts.target
        return out

    def by_class(self, cls: str) -> tuple[int, int]:
        """(generated, kept) of a class, all its modes."""
        mine = [c for c in self.slots.values() if c.plan.cls == cls]
        return sum(c.generated for c in mine), sum(c.kept for c in mine)

    def selection(self) -> dict[str, Any]:
        """--select: candidates that passed, kept and not selected, and the learner's mean probability of the
        label over each (low for the kept: the images it is least sure of)."""
        c = list(self.slots.values())
        kept, unsel = sum(x.selected for x in c), sum(x.unselected for x in c)
        return {"candidates_per_image": self.candidates, "passed": sum(x.passed for x in c),
                "kept": sum(x.kept for x in c), "not_selected": sum(x.reasons.get(NOT_SELECTED, 0) for x in c),
                "learner_prob_kept": round(sum(x.selected_prob for x in c) / kept, 4) if kept else None,
                "learner_prob_not_selected": round(sum(x.unselected_prob for x in c) / unsel, 4) if unsel else None}

    def totals(self) -> tuple[int, int]:
        return sum(c.generated for c in self.slots.values()), sum(c.kept for c in self.slots.values())
