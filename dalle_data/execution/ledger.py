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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from dalle_data.execution.plan import Key, SlotPlan, Unit, acceptance, wave_size
from dalle_data.records import Record, reason_code
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
        rate = acceptance(self.kept, self.generated)
        left = self.plan.budget - self.generated
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

    def __init__(self, slots: Sequence[SlotPlan]) -> None:
        self.slots: dict[Key, SlotCounts] = {s.key: SlotCounts.of(s) for s in slots}

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

    def totals(self) -> tuple[int, int]:
        return sum(c.generated for c in self.slots.values()), sum(c.kept for c in self.slots.values())
