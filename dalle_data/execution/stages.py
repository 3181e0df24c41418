"""Execute: a task and the loaded stages (generator, scorer, filter, encoder) to records.

``batches(task, stages, batch)`` is the one batch loop every executor runs:
a task's units, a batch at a time, through ``generate`` (the device). Each
batch then goes through ``score`` (the scorer and the filter) and ``encode``
(PNG): ``execute(task, stages)`` does all three in turn, a plain function a
worker process or a Ray actor can run with nothing but the task and the
models; the local executor lets the driver score a batch while it generates
the next (on an accelerator) and encode in its writer pool.

The records that come out are drafts: each carries its filter verdict
(``kept`` or ``rejected``), not yet whether it is ``surplus``; the ledger
decides that, in plan order (``Ledger.finalize``). Unusable outputs (black,
constant or non-finite images, an API refusal, a source that cannot be
opened) are ``failed`` / ``refused`` records with a reason code.
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from dalle_data import faults
from dalle_data.device_images import DeviceImage, as_pil, tensor_defect
from dalle_data.discovery import source_root
from dalle_data.embeddings import Vectors
from dalle_data.errors import DalleDataError
from dalle_data.execution.plan import CheckTask, SlotPlan, Task, Unit
from dalle_data.generators.base import Defect, Refusal
from dalle_data.image_modes import ImageOptions, Prepared, check_source, id_parts, prepare
from dalle_data.modes import MODES
from dalle_data.prompts import PromptItem
from dalle_data.quality import image_defect
from dalle_data.records import Record, record_id
from dalle_data.scoring.filters import ClipFilter
from dalle_data.scoring.learner import learner_of
from dalle_data.sources import Source, SourceError

if TYPE_CHECKING:
    from PIL.Image import Image

    from dalle_data.config import RunSpec
    from dalle_data.generators.base import GenerationSettings, Generator
    from dalle_data.scoring.clip import ScoreBatch

log = logging.getLogger(__name__)


class Scorer(Protocol):
    name: str

    def score(self, images: Sequence[Image], prompts: Sequence[str]) -> ScoreBatch: ...


@dataclass
class BatchSize:
    """The batch size in force: out-of-memory halves it, and it stays halved."""

    value: int


@dataclass
class Stages:
    """Everything a worker loads once: the models and the run's settings."""

    generator: Generator
    scorer: Scorer
    filter: ClipFilter
    settings: GenerationSettings
    image_options: ImageOptions = field(default_factory=ImageOptions)
    learner: Any = None  # --select uncertain: the user's classifier (scoring.learner.OnnxLearner)

    def unit_id(self, plan: SlotPlan, prompt: PromptItem, seed: int, sources: tuple[Source, ...]) -> str:
        """The record id of a unit: a hash of everything that decides its image."""
        return unit_id(self.generator.model, self.settings, self.image_options, plan, prompt, seed, sources)


def unit_id(model: str, s: GenerationSettings, image_options: ImageOptions, plan: SlotPlan, prompt: PromptItem,
            seed: int, sources: tuple[Source, ...]) -> str:
    """The record id of a unit made by ``model`` with settings ``s`` (the same wherever the model runs)."""
    unit = Unit(plan.key, 0, prompt, seed, sources)
    return record_id(model, plan.mode, plan.label, prompt.prompt, seed, s.width, s.height,
                     s.num_inference_steps, s.prior_num_inference_steps, s.guidance_scale, s.prior_guidance_scale,
                     *id_parts(unit, image_options))


@dataclass
class Draft:
    """A record whose image is not encoded yet (``image`` is the picture, or None when it failed)."""

    record: Record
    unit: Unit
    picture: Any = None
    need: float = 0.0  # --select: how much the learner needs this image (``OnnxLearner.uncertainty``)


# --- the device half -----------------------------------------------------------------------


def is_out_of_memory(err: BaseException) -> bool:
    return type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower()


def generate(stages: Stages, units: Sequence[Unit], batch: BatchSize) -> tuple[list[Any], dict[int, Prepared]]:
    """One image, ``Defect``, ``Refusal`` or ``SourceError`` per unit; each kind of call batched on its own."""
    g, s = stages.generator, stages.settings
    outputs: list[Any] = [None] * len(units)
    prepared: dict[int, Prepared] = {}
    for i, unit in enumerate(units):
        if MODES[unit.mode].image:
            try:
                prepared[i] = prepare(unit, stages.image_options, (s.width, s.height))
            except SourceError as err:
                outputs[i] = err
    groups: dict[str, list[int]] = {"text": [], "variation": [], "inpaint": []}
    for i, unit in enumerate(units):
        if outputs[i] is None:
            groups[MODES[unit.mode].call].append(i)
    calls: dict[str, Callable[[list[int]], list[Any]]] = {
        "text": lambda ix: g([units[i].prompt.prompt for i in ix], [units[i].seed for i in ix], s),
        "variation": lambda ix: g.variation([prepared[i].conditions for i in ix],  # type: ignore[attr-defined]
                                            [prepared[i].weights for i in ix], [units[i].seed for i in ix], s),
        "inpaint": lambda ix: g.inpaint([prepared[i].image for i in ix], [prepared[i].mask for i in ix],  # type: ignore[attr-defined]
                                        [units[i].prompt.prompt for i in ix], [units[i].seed for i in ix], s),
    }
    fixed = batch.value if getattr(g, "compiled", False) else 0  # a compiled model keeps one batch shape
    for kind, indices in groups.items():
        if indices:
            for i, out in zip(indices, halving(padded(calls[kind], fixed), indices, batch)):
                outputs[i] = out
    return outputs, prepared


def padded(call: Callable[[list[int]], list[Any]], size: int) -> Callable[[list[int]], list[Any]]:
    """``call`` on a batch padded to ``size`` items (copies of its first), the padding's outputs dropped.

    Image i depends only on its own prompt and seed, so the padding changes nothing but the shape, which
    a compiled model would otherwise recompile for (the last batch of a shard is usually short).
    """
    if not size:
        return call

    def run(items: list[int]) -> list[Any]:
        extra = max(0, size - len(items))
        return call(items + [items[0]] * extra)[: len(items)]

    return run


def halving(call: Callable[[list[Any]], list[Any]], items: list[Any], batch: BatchSize) -> list[Any]:
    """Run ``call`` on ``items``, halving the batch on out-of-memory instead of dying."""
    faults.point("generate")
    try:
        return call(items)
    except Exception as err:  # noqa: BLE001 - only OOM is handled here
        if not is_out_of_memory(err):
            raise
        if len(items) == 1:
            raise DalleDataError(
                "out of GPU memory at batch size 1; use a smaller --size, fewer --steps or a smaller model"
            ) from None
        half = len(items) // 2
        log.warning("out of memory at batch size %d; retrying as batches of %d", len(items), half)
        free_accelerator_memory()
        batch.value = min(batch.value, half)
        return halving(call, items[:half], batch) + halving(call, items[half:], batch)


def free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --- the scoring half ----------------------------------------------------------------------


def defect_of(output: Any) -> tuple[str, str] | None:
    """(reason code, detail) for an output that is not a usable image, else None."""
    if isinstance(output, SourceError):
        return output.code, str(output)
    if isinstance(output, Refusal):
        return "refused", output.reason
    if isinstance(output, Defect):
        return "defect", output.reason
    reason = tensor_defect(output) if isinstance(output, DeviceImage) else image_defect(output)
    return ("defect", reason) if reason is not None else None


def score(stages: Stages, task: Task, units: Sequence[Unit], outputs: Sequence[Any],
          prepared: dict[int, Prepared]) -> list[Draft]:
    """Drafts for a generated batch: failures recorded, the rest scored and judged by the filter."""
    defects = [defect_of(o) for o in outputs]
    good = [i for i, d in enumerate(defects) if d is None]
    scores = stages.scorer.score([outputs[i] for i in good], [units[i].prompt.prompt for i in good]) if good else None
    row_of = {i: row for row, i in enumerate(good)}
    drafts = []
    for i, unit in enumerate(units):
        plan = task.slot(unit.slot)
        mask = prepared[i].mask_desc if i in prepared else None
        defect = defects[i]
        if defect is not None:
            status = "refused" if isinstance(outputs[i], Refusal) else "failed"
            record = Record(**_base(stages, task.shard, plan, unit, mask), clip_score=None, class_prob=None,
                            top_class=None, kept=False, status=status, reject_reason=defect[0], error=defect[1])
            drafts.append(Draft(record, unit))
            continue
        assert scores is not None
        row = row_of[i]
        verdict = stages.filter(clip_score=scores.clip_score[row], probs=scores.probs[row], labels=scores.labels,
                                target=plan.cls, hard_negative=plan.hard_negative)  # a hard negative: the class it imitates
        base = _base(stages, task.shard, plan, unit, mask)
        base.update(width=outputs[i].width, height=outputs[i].height)
        need, learner_prob = 0.0, None
        if stages.learner is not None and verdict.passed:  # only a candidate the filter passed is asked about
            probs = stages.learner.probs([as_pil(outputs[i])])[0]
            need, learner_prob = stages.learner.uncertainty(probs, plan.label, plan.cls if plan.hard_negative else None)
        record = Record(**base, clip_score=round(scores.clip_score[row], 6), class_prob=round(verdict.class_prob, 6),
                        top_class=verdict.top_class, kept=verdict.passed, status="kept" if verdict.passed else "rejected",
                        reject_reason=verdict.code, error=None, reject_detail=verdict.reason,
                        vectors=_vectors(stages, scores, row),
                        learner_prob=None if learner_prob is None else round(learner_prob, 6))
        drafts.append(Draft(record, unit, outputs[i], need))
    return drafts


def _vectors(stages: Stages, scores: ScoreBatch, row: int) -> Vectors | None:
    if scores.embeddings is None:
        return None
    return Vectors(np.asarray(scores.embeddings[row], np.float32), np.asarray(scores.probs[row], np.float32),
                   tuple(scores.labels), str(getattr(stages.scorer, "name", "")))


def _base(stages: Stages, shard: str, plan: SlotPlan, unit: Unit, mask: str | None) -> dict[str, Any]:
    first = unit.sources[0] if unit.sources else None
    second = unit.sources[1] if len(unit.sources) > 1 else None
    return dict(
        id=unit.id, label=plan.label, label_id=plan.label_id, class_dir=plan.class_dir, role=plan.role,
        imitates=plan.cls if plan.hard_negative else None, prompt=unit.prompt.prompt,
        prompt_source=unit.prompt.source, mode=plan.mode, backend=stages.generator.backend,
        model=stages.generator.model, seed=unit.seed, width=stages.settings.width, height=stages.settings.height,
        source_id=first.id if first else None, source_path=first.path if first else None,
        source2_id=second.id if second else None, source2_path=second.path if second else None,
        mask=mask, shard=shard, created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    )


# --- the encoder ---------------------------------------------------------------------------


def encode_png(image: Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def encode(record: Record, picture: Any) -> Record:
    """The record with its PNG bytes and their hash (a record without a picture stays as it is)."""
    if picture is None:
        return record
    png = encode_png(as_pil(picture))
    return record.replace(image=png, sha256=hashlib.sha256(png).hexdigest())


# --- the batch loop, and the whole of it for one worker ---------------------------------------------


@dataclass
class Generated:
    """One batch of a task, generated: its units, one output per unit, the image modes' inputs."""

    units: list[Unit]
    outputs: list[Any]
    prepared: dict[int, Prepared]
    last: bool  # the task's last batch
    seconds: float  # spent generating it


def batches(task: Task, stages: Stages, batch: BatchSize) -> Iterator[Generated]:
    """The one batch loop: a task's units ``batch.value`` at a time, generated one batch per step.

    Out of memory halves ``batch`` for the rest of the run. Every executor runs its tasks through here.
    """
    units = list(task.units)
    start = 0
    while start < len(units):
        chunk = units[start : start + batch.value]
        t = time.perf_counter()
        outputs, prepared = generate(stages, chunk, batch)
        seconds = time.perf_counter() - t
        start += len(chunk)
        yield Generated(chunk, outputs, prepared, start >= len(units), seconds)


def execute(task: Task, stages: Stages, batch: BatchSize | int = 8,
            times: dict[str, float] | None = None) -> list[Draft]:
    """Every draft of a task, batch by batch (pictures encoded; surplus is the ledger's to decide).

    ``times`` adds up the seconds spent generating, scoring and encoding.
    """
    size = batch if isinstance(batch, BatchSize) else BatchSize(batch)
    times = times if times is not None else {}
    drafts: list[Draft] = []
    for done in batches(task, stages, size):
        t = time.perf_counter()
        drafts += score(stages, task, done.units, done.outputs, done.prepared)
        times["generate"] = times.get("generate", 0.0) + done.seconds
        times["score"] = times.get("score", 0.0) + time.perf_counter() - t
    t = time.perf_counter()
    encoded = [Draft(encode(d.record, d.picture), d.unit, None, d.need) for d in drafts]
    times["encode"] = times.get("encode", 0.0) + time.perf_counter() - t
    return encoded


def check(task: CheckTask, stages: Stages) -> list[Record]:
    """Wave 0: one failed record per unusable source (one per slot for a missing mask)."""
    records: list[Record] = []
    size = (stages.settings.width, stages.settings.height)
    users = dict(task.users)
    for source in task.sources:
        for key in users[source.id]:
            plan = task.slot(key)
            problem = check_source(source, plan.mode, stages.image_options, size)
            if problem is not None:
                records.append(_unusable(stages, task.shard, plan, source, problem))
                if problem.code == "source-unreadable":
                    break  # one record per unreadable file, under the first slot that uses it
    return records


def _unusable(stages: Stages, shard: str, plan: SlotPlan, source: Source, problem: SourceError) -> Record:
    unit = Unit(plan.key, 0, PromptItem(plan.cls, plan.mode, "", "source-check"), 0, (source,),
                record_id("source-check", source.id, plan.cls, plan.mode, problem.code))
    return Record(**_base(stages, shard, plan, unit, None), clip_score=None, class_prob=None, top_class=None,
                  kept=False, status="failed", reject_reason=problem.code, error=str(problem))


# --- a worker's stages, built from the run's spec (the local executor and each Ray actor) ---------------


def image_options_of(spec: RunSpec) -> ImageOptions:
    """How the image modes read their sources and masks, from the spec."""
    from pathlib import Path

    return ImageOptions(
        prompt_weight=spec.prompt_weight, fuse_weight=spec.fuse_weight, mask=spec.mask,
        mask_dir=Path(spec.mask_dir).expanduser() if spec.mask_dir else None, source_root=source_root(spec.from_dir))


def make_stages(spec: RunSpec, generator: Any, scorer: Any, learner: str | None = None) -> Stages:
    """A worker's stages; ``learner``: the identity of the ``--select`` learner the run was planned with."""
    from dalle_data.generators.registry import resolve_settings  # the loader ladder: heavy, only when building

    return Stages(
        generator=generator, scorer=scorer,
        filter=ClipFilter(min_clip=spec.min_clip, zero_shot=spec.filter == "zero-shot"),
        settings=resolve_settings(spec, generator.defaults), image_options=image_options_of(spec),
        learner=learner_of(spec, learner),
    )
