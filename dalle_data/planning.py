"""Planning: what a spec asks for, before any model is loaded.

``plan(spec)`` expands the prompts (templates, an LLM or a prompts file),
lists the source images, makes the label map, and derives the slots (one
per class × mode with a non-zero target) that ``dalle_data.execution.plan``
cuts into waves of tasks. Everything that can fail because of the user's
input fails here, with one line, before the output directory is touched.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dalle_data.config import RunSpec
from dalle_data.discovery import discover_sources, sources_digest
from dalle_data.errors import SpecError
from dalle_data.execution.parts import Part, classes_of, dealt, slots_of
from dalle_data.execution.plan import SlotPlan, derive_seed, fuse_pair
from dalle_data.generators.registry import default_templates
from dalle_data.labels import LabelMap
from dalle_data.llm import write_llm_prompts
from dalle_data.modes import MODES, TEXT_MODES, makes_hard_negatives
from dalle_data.prompts import PromptItem, expand_focused, expand_prompts, load_pack, read_prompts_jsonl
from dalle_data.rundir import labels_for
from dalle_data.scoring.learner import learner_of
from dalle_data.scoring.vocabulary import negatives_for
from dalle_data.sources import Source

__all__ = ["Plan", "build_slots", "derive_seed", "fuse_pair", "plan"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What a spec asks for, before any model is loaded."""

    spec: RunSpec
    label_map: LabelMap  # the one label map: ids in sorted folder order (see dalle_data.labels)
    prompts: list[PromptItem]
    inputs: dict[str, str]  # digests of input files, part of the spec hash
    sources: tuple[Source, ...] = ()
    part: Part | None = None  # --shard i/n: this plan is one part's
    classes_here: frozenset[str] | None = None  # the classes it expanded prompts for (None: all)

    @property
    def spec_hash(self) -> str:
        return self.spec.spec_hash(self.inputs)

    @property
    def candidates(self) -> int:
        """Candidates that pass the filter per kept image: ``--candidates`` with ``--select``, else 1."""
        return self.spec.candidates if self.spec.select is not None else 1

    @property
    def learner_name(self) -> str | None:
        return Path(self.spec.learner).name if self.spec.learner else None

    @property
    def labels(self) -> tuple[str, ...]:
        """ClassLabel names in id order."""
        return self.label_map.names

    def slots(self) -> list[SlotPlan]:
        """The run's slots; of a part: its (sub-)slots (``dalle_data.execution.parts``)."""
        slots = build_slots(self.spec, self.prompts, self.label_map, self.sources, self.classes_here)
        if self.part is None:
            return slots
        if self.classes_here is None:
            return slots_of(slots, self.part)
        counts: dict[str, int] = {}
        for source in self.sources:
            counts[source.label] = counts.get(source.label, 0) + 1
        return dealt(slots, self.spec.slot_targets(counts), self.part)

    def zero_shot_labels(self) -> list[str]:
        return zero_shot_labels(self.spec)


def zero_shot_labels(spec: RunSpec) -> list[str]:
    """The scorer's labels for a run: its classes, plus the negative vocabulary when one class alone
    cannot lose (a single class) or hard negatives need somewhere to go."""
    classes = list(spec.classes)
    if len(classes) == 1 or makes_hard_negatives(spec.modes):
        classes += negatives_for(classes)
    return classes


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def prompt_modes(spec: RunSpec) -> list[str]:
    """The modes whose prompts the run writes: its text modes, and vanilla for inpainting's scenes."""
    text_modes = [m for m in spec.modes if m in TEXT_MODES]
    scenes = any(MODES[m].prompts == "scenes" for m in spec.modes)
    return text_modes + (["vanilla"] if scenes and "vanilla" not in text_modes else [])


def _text_prompts(
    spec: RunSpec, counts: dict[str, int], llm_cache: bool = True,
    classes: frozenset[str] | None = None,
) -> tuple[list[PromptItem], dict[str, str]]:
    """Prompts for the text modes, and for inpainting (the vanilla scenes: "A cat on a beach"); of ``classes``
    only when given (a class's template prompts do not depend on the other classes)."""
    wanted = prompt_modes(spec)
    if spec.llm is not None and "vanilla" in wanted:
        return _llm_prompts(spec, [m for m in wanted if m != "vanilla"], counts, llm_cache)
    if spec.prompts:
        path = Path(spec.prompts)
        items = read_prompts_jsonl(path)
        unknown = sorted({i.cls for i in items} - set(spec.classes))
        if unknown:
            raise SpecError(f"prompts file {path} has class {unknown[0]!r}, which is not in --classes")
        return [i for i in items if i.mode in wanted], {"prompts": _file_digest(path)}
    if not wanted:
        return [], {}
    pack = template_pack(spec)
    n = max(budget for _, budget in spec.slot_targets(counts).values())
    names = [c for c in spec.classes if classes is None or c in classes]
    if spec.focus is not None:
        check_focus_slots(spec.focus, pack, wanted)
        try:
            return expand_focused(pack, names, wanted, n, spec.seed, spec.focus), {"templates": pack.digest}
        except ValueError as err:
            raise SpecError(str(err)) from None
    return expand_prompts(pack, names, wanted, n, spec.seed), {"templates": pack.digest}


def check_focus_slots(focus: dict[str, Any], pack: Any, modes: Sequence[str]) -> None:
    """Every slot a focus weighs is a slot of the template pack's ``modes``, every value one of its values."""
    slots: dict[str, set[str]] = {}
    for mode in modes:
        for name, values in pack.slots(mode).items():
            slots.setdefault(name, set()).update(values)
    for cls, entry in focus["classes"].items():
        for slot, values in (entry.get("weights") or {}).items():
            if slot not in slots:
                raise SpecError(f"focus: classes.{cls}.weights.{slot}: the template pack {pack.name!r} has no slot "
                                f"{slot!r} in modes {', '.join(modes)}" + (f" (it has: {', '.join(sorted(slots))})"
                                                                           if slots else ""))
            unknown = sorted(set(values) - slots[slot])
            if unknown:
                raise SpecError(f"focus: classes.{cls}.weights.{slot}: {unknown[0]!r} is not a value of the slot "
                                f"(values: {', '.join(sorted(slots[slot]))})")


def template_pack(spec: RunSpec) -> Any:
    """``--templates``, else the pack the model preset is meant for (shapes-demo: templates/shapes.yaml)."""
    return load_pack(spec.templates or default_templates(spec.model))


def _llm_prompts(
    spec: RunSpec, template_modes: list[str], counts: dict[str, int], llm_cache: bool
) -> tuple[list[PromptItem], dict[str, str]]:
    """Vanilla scenes written by ``--llm`` (their digest joins the spec hash), other modes from templates."""
    assert spec.llm is not None
    items = write_llm_prompts(spec.llm, list(spec.classes), spec.llm_prompts, base_url=spec.llm_base_url,
                              seed=spec.seed, cache=llm_cache, timeout=spec.timeout, max_retries=spec.max_retries)
    blob = "\n".join(f"{i.cls}\t{i.prompt}" for i in items).encode("utf-8")
    inputs = {"llm": hashlib.sha256(blob).hexdigest()[:16]}
    if template_modes:
        pack = template_pack(spec)
        n = max(budget for _, budget in spec.slot_targets(counts).values())
        items += expand_prompts(pack, list(spec.classes), template_modes, n, spec.seed)
        inputs["templates"] = pack.digest
    return items, inputs


def _source_counts(spec: RunSpec) -> tuple[list[Source], dict[str, int]]:
    if spec.mask_dir and not Path(spec.mask_dir).expanduser().is_dir():
        raise SpecError(f"--mask-dir {spec.mask_dir}: no such directory")
    sources = discover_sources(spec.from_dir, list(spec.classes)) if spec.from_dir else []
    counts: dict[str, int] = {}
    for source in sources:
        counts[source.label] = counts.get(source.label, 0) + 1
    return sources, counts


def plan(spec: RunSpec, *, llm_cache: bool = True, part: Part | None = None) -> Plan:
    """Expand prompts, list sources, name folders; raises ``SpecError`` on bad input.

    With ``--llm`` this asks the LLM for the scene prompts (or reads its cache). A part (``--shard i/n``)
    expands only the prompts of its own classes: its planning stays small however many classes a run has.
    """
    sources, counts = _source_counts(spec)
    here: frozenset[str] | None = None
    if part is not None:
        if spec.llm is not None:
            raise SpecError("--shard cannot ask an LLM per part (each would get other prompts): write them once with "
                            "`dalle-data prompts --llm MODEL -o prompts.jsonl` and pass --prompts prompts.jsonl")
        if spec.per_source is None:
            here = frozenset(classes_of(spec.slot_targets(counts), part))
    items, inputs = _text_prompts(spec, counts, llm_cache, here)
    for mode in spec.modes:
        if MODES[mode].prompts == "scenes":  # inpainting: the vanilla scenes ("A cat on a beach")
            items += [PromptItem(i.cls, mode, i.prompt, i.source) for i in items if i.mode == "vanilla"]
    if sources:
        inputs["sources"] = sources_digest(sources)
        for cls in spec.classes:
            for mode in spec.modes:
                if MODES[mode].prompts == "class":
                    items.append(PromptItem(cls, mode, f"a photo of a {cls}", "class-prompt"))
    learner = learner_of(spec)  # --select uncertain:PATH: checked here, before OUT is touched
    if learner is not None:
        inputs["learner"] = learner.identity()
    result = Plan(spec=spec, label_map=labels_for(spec), prompts=items, inputs=inputs, sources=tuple(sources),
                  part=part, classes_here=here)
    result.slots()  # fails early when a class × mode has no prompts or sources
    return result




def build_slots(spec: RunSpec, prompts: Sequence[PromptItem], labels: LabelMap,
                sources: Sequence[Source] = (), classes: frozenset[str] | None = None) -> list[SlotPlan]:
    """Slots for every class × mode with a non-zero target, in class then mode order (of ``classes`` only,
    when given: the classes a part expanded prompts for)."""
    by_key: dict[tuple[str, str], list[PromptItem]] = {}
    for item in prompts:
        by_key.setdefault((item.cls, item.mode), []).append(item)
    by_class: dict[str, list[Source]] = {}
    for source in sorted(sources, key=lambda s: s.id):
        by_class.setdefault(source.label, []).append(source)
    slots: list[SlotPlan] = []
    targets = spec.slot_targets({c: len(v) for c, v in by_class.items()})
    for (cls, mode), (target, budget) in targets.items():
        if classes is not None and cls not in classes:
            continue
        items = by_key.get((cls, mode))
        if not items:
            raise SpecError(f"no {mode} prompts for class {cls!r}; add some to the prompts file or template pack")
        kind = MODES[mode]
        own = by_class.get(cls, []) if kind.image else []
        if kind.sources == 1 and not own:
            raise SpecError(f"{mode} needs source images of class {cls!r}; --from has none")
        if kind.sources == 2 and len(own) < 2:
            raise SpecError(f"{mode} needs at least two source images of class {cls!r}; --from has {len(own)}")
        label = spec.negative_label if kind.hard_negative else cls
        slots.append(SlotPlan(
            cls=cls, mode=mode, label=label, label_id=labels.id_of(label), class_dir=labels.folder_of(label),
            hard_negative=kind.hard_negative, target=target, budget=budget, prompts=tuple(items),
            run_seed=spec.seed, sources=tuple(own), per_source=spec.per_source if kind.image else None,
        ))
    return slots
