"""Plan: from the spec's slots and a ledger of what is finished to the next wave of tasks.

A **slot** is one (class, mode) of the run: its label, target, attempt
budget, prompts and (image modes) source images. A slot hands out **units**
in a fixed order: unit ``k`` uses prompt ``k mod len(prompts)``, a seed
derived from (run seed, class, mode, k), and for image modes

* ``variation`` and ``inpaint``: source ``k mod n`` (sources sorted by id),
  so every source is used once before any is used twice;
* ``fuse``: the pair (``a``, ``b``) with ``a = k mod n`` and
  ``b = (a + 1 + (k div n) mod (n - 1)) mod n``: the first pass pairs each
  source with its next neighbour, later passes with ever farther ones.

A **wave** asks every slot that is short of its target for as many units as
its acceptance rate so far says it needs (Laplace-smoothed), within its
budget; with ``--per-source K`` each source gets its own share. The wave's
units, in slot order, are cut into **tasks** of ``shard_size`` units
(``r001-s0003``: wave 1, shard 3). ``plan_wave`` is a pure function of the
slots and the ledger: the same spec, run to the same point, always plans
the same tasks, however the work is executed, split or resumed. Tasks are
frozen, picklable data: nothing in them points at mutable state.

Wave 0 checks the source images (``check_tasks``): each once, before any
generation, so an unusable one costs no attempt.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dalle_data.modes import MODES

if TYPE_CHECKING:
    from dalle_data.execution.ledger import Ledger, SlotCounts
    from dalle_data.prompts import PromptItem
    from dalle_data.sources import Source

Key = tuple[str, str, int]  # (class, mode, sub-slot): sub-slots exist only when --shard splits a large slot


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across Python runs and machines)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def fuse_pair(k: int, n: int) -> tuple[int, int]:
    a = k % n
    return a, (a + 1 + (k // n) % (n - 1)) % n


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """One (class, mode) of the plan: what it makes and how much (no counts: those are the ledger's)."""

    cls: str
    mode: str
    label: str
    label_id: int
    class_dir: str
    hard_negative: bool
    target: int
    budget: int
    prompts: tuple[PromptItem, ...]
    run_seed: int
    sources: tuple[Source, ...] = ()
    per_source: int | None = None  # --per-source K: a quota (and a budget of 5K attempts) per source image
    sub: int = 0  # a sub-slot of a slot split over parts (--shard): it makes units sub, sub + stride, ...
    stride: int = 1

    @property
    def key(self) -> Key:
        return (self.cls, self.mode, self.sub)

    def index(self, local: int) -> int:
        """The slot-wide unit index of this (sub-)slot's ``local``-th unit: prompt and seed follow it."""
        return self.sub + self.stride * local

    @property
    def role(self) -> str:
        return "hard_negative" if self.hard_negative else "positive"


@dataclass(frozen=True, slots=True)
class Unit:
    """One image to make: its slot, index, prompt, seed, sources, and the record id it will have."""

    slot: Key
    index: int
    prompt: PromptItem
    seed: int
    sources: tuple[Source, ...] = ()
    id: str = ""

    @property
    def mode(self) -> str:
        return self.slot[1]


@dataclass(frozen=True)
class Task:
    """A shard of work: frozen and picklable (a worker needs nothing else but the loaded stages)."""

    shard: str
    wave: int
    units: tuple[Unit, ...]
    slots: tuple[SlotPlan, ...] = field(default=(), repr=False)  # the slots its units belong to

    def slot(self, key: Key) -> SlotPlan:
        return next(s for s in self.slots if s.key == key)

    @property
    def ids(self) -> list[str]:
        return [u.id for u in self.units]


@dataclass(frozen=True)
class CheckTask:
    """Wave 0: open each source image (and its inpainting mask) once, before any generation."""

    shard: str
    sources: tuple[Source, ...]
    users: tuple[tuple[str, tuple[Key, ...]], ...]  # source id -> the slots that use it, in slot order
    slots: tuple[SlotPlan, ...] = field(default=(), repr=False)

    def slot(self, key: Key) -> SlotPlan:
        return next(s for s in self.slots if s.key == key)


UnitId = Callable[[SlotPlan, "PromptItem", int, tuple["Source", ...]], str]


def shard_name(wave: int, index: int) -> str:
    return f"r{wave:03d}-s{index:04d}"


def check_tasks(slots: Sequence[SlotPlan], shard_size: int, prefix: str = "") -> list[CheckTask]:
    """Wave 0: every source of every image-mode slot, once, in id order, cut into shards ``r000-sNNNN``."""
    users: dict[str, list[Key]] = {}
    by_id: dict[str, Source] = {}
    for slot in slots:
        for source in slot.sources:
            users.setdefault(source.id, []).append(slot.key)
            by_id[source.id] = source
    order = sorted(users)
    tasks = []
    for index, start in enumerate(range(0, len(order), shard_size)):
        ids = order[start : start + shard_size]
        keys = {k for i in ids for k in users[i]}
        tasks.append(CheckTask(prefix + shard_name(0, index), tuple(by_id[i] for i in ids),
                               tuple((i, tuple(users[i])) for i in ids),
                               tuple(s for s in slots if s.key in keys)))
    return tasks


def plan_wave(ledger: Ledger, wave: int, shard_size: int, unit_id: UnitId,
              prefix: str = "") -> tuple[list[Task], dict[Key, int]]:
    """The tasks of wave ``wave`` and each slot's unit cursor after it (a pure function of the ledger).

    ``prefix`` names the shards of one part of a split run (``p0003of0010-``), so parts never collide.
    """
    units: list[Unit] = []
    cursors: dict[Key, int] = {}
    for counts in ledger.slots.values():
        taken, cursor = take(counts, counts.next_batch_size(), unit_id)
        units += taken
        cursors[counts.plan.key] = cursor
    plans = {c.plan.key: c.plan for c in ledger.slots.values()}
    tasks = []
    for index, start in enumerate(range(0, len(units), shard_size)):
        chunk = tuple(units[start : start + shard_size])
        keys = list(dict.fromkeys(u.slot for u in chunk))
        tasks.append(Task(prefix + shard_name(wave, index), wave, chunk, tuple(plans[k] for k in keys)))
    return tasks, cursors


def take(counts: SlotCounts, n: int, unit_id: UnitId) -> tuple[list[Unit], int]:
    """The next ``n`` units of a slot (fewer when its sources are used up) and its cursor after them."""
    plan = counts.plan
    units: list[Unit] = []
    planned: dict[str, int] = {}
    k = counts.next_k
    while len(units) < n:
        g = plan.index(k)  # the slot-wide index: prompt and seed follow it, so sub-slots never repeat a unit
        sources = _sources_for(plan.mode, counts.sources, k if plan.per_source is not None else g)
        if plan.per_source is not None:
            first = sources[0]
            if not counts.source_open(first) or planned.get(first.id, 0) >= counts.room(first):
                if not any(counts.source_open(s) and planned.get(s.id, 0) < counts.room(s) for s in counts.sources):
                    k += 1
                    break
                k += 1
                continue
            planned[first.id] = planned.get(first.id, 0) + 1
        prompt = plan.prompts[g % len(plan.prompts)]
        seed = derive_seed(plan.run_seed, plan.cls, plan.mode, g)
        units.append(Unit(plan.key, g, prompt, seed, sources, unit_id(plan, prompt, seed, sources)))
        k += 1
    return units, k


def _sources_for(mode: str, sources: Sequence[Source], k: int) -> tuple[Source, ...]:
    n = len(sources)
    if MODES[mode].sources == 2:
        a, b = fuse_pair(k, n)
        return (sources[a], sources[b])
    if MODES[mode].sources == 1:
        return (sources[k % n],)
    return ()


def acceptance(kept: int, generated: int) -> float:
    """The Laplace-smoothed acceptance rate that sizes the next wave (1 before anything was made)."""
    return 1.0 if generated == 0 else (kept + 1) / (generated + 2)


def wave_size(need: int, rate: float, left: int) -> int:
    return min(math.ceil(need / rate), left)
