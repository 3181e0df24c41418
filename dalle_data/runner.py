"""plan → generate → score → filter → write, in quota rounds of resumable shards.

``Runner`` is the loop. Its stages are injected (a ``Generator``, a scorer, a
filter, writers, a shard store, a progress display), so tests and benchmarks
can swap any of them, and each stage is timed separately (generation, scoring,
PNG encoding, writing), as clip-retrieval reports read / inference / write.

Rounds: every slot (class × mode) that is short of its target asks for as many
images as its acceptance rate so far says it needs, within its attempt budget.
A round's units are cut into shards of ``shard_size`` units; a shard is
generated in batches, written by every writer, then marked done. A shard that
is already marked done (a resumed run) is replayed from its marker instead, so
the rounds after it are planned exactly as in an uninterrupted run. The loop
ends when every target is met or every budget is spent. Images that pass the
filter after a slot's target is met are rejected as ``surplus`` (so
``--per-class N`` means exactly N); unusable images (black, constant, NaN)
are recorded as failed and replaced by new seeds in later rounds.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from dalle_data import faults
from dalle_data.errors import DalleDataError
from dalle_data.generators.base import Defect, Refusal
from dalle_data.image_modes import IMAGE_MODES, ImageOptions, Prepared, id_parts, prepare
from dalle_data.planning import Slot, WorkUnit
from dalle_data.progress import NullProgress, Progress
from dalle_data.quality import image_defect
from dalle_data.records import Record, reason_code, record_id
from dalle_data.scoring.filters import ClipFilter
from dalle_data.sources import Source, SourceError

if TYPE_CHECKING:
    from PIL.Image import Image

    from dalle_data.generators.base import GenerationSettings, Generator
    from dalle_data.scoring.clip import ScoreBatch
    from dalle_data.shards import ShardStore
    from dalle_data.writers import Writer

log = logging.getLogger(__name__)


class Scorer(Protocol):
    name: str

    def score(self, images: Sequence[Image], prompts: Sequence[str]) -> ScoreBatch: ...


class Interrupted(DalleDataError):
    """The run was asked to stop (SIGINT / SIGTERM); finished shards are kept."""

    exit_code = 130


@dataclass
class StageTimes:
    generate: float = 0.0
    score: float = 0.0
    encode: float = 0.0
    write: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in vars(self).items()}


@dataclass
class RunStats:
    slots: list[Slot]
    rounds: int = 0
    shards: int = 0
    shards_replayed: int = 0
    batch_size: int = 0
    times: StageTimes = field(default_factory=StageTimes)
    elapsed: float = 0.0
    records: list[Record] = field(default_factory=list)  # metadata of every finished record


def encode_png(image: Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def chunks(items: Sequence[WorkUnit], size: int) -> Iterator[Sequence[WorkUnit]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def is_out_of_memory(err: BaseException) -> bool:
    return type(err).__name__ == "OutOfMemoryError" or "out of memory" in str(err).lower()


class Runner:
    def __init__(
        self,
        *,
        slots: list[Slot],
        generator: Generator,
        settings: GenerationSettings,
        scorer: Scorer,
        filter: ClipFilter,
        writers: Sequence[Writer],
        batch_size: int,
        shard_size: int = 64,
        store: ShardStore | None = None,
        progress: Progress | None = None,
        stop: threading.Event | None = None,
        image_options: ImageOptions | None = None,
    ) -> None:
        self.slots = slots
        self.generator = generator
        self.settings = settings
        self.scorer = scorer
        self.filter = filter
        self.writers = list(writers)
        self.batch_size = batch_size
        self.shard_size = shard_size
        self.store = store
        self.progress = progress or NullProgress()
        self.stop = stop or threading.Event()
        self.image_options = image_options or ImageOptions()
        self.stats = RunStats(slots=slots, batch_size=batch_size)
        self._by_key = {(s.cls, s.mode): s for s in slots}

    def run(self) -> RunStats:
        t0 = time.perf_counter()
        try:
            self._check_sources()
            targets: dict[str, int] = {}
            for slot in self.slots:
                targets[slot.cls] = targets.get(slot.cls, 0) + slot.target
            self.progress.start(targets)
            while units := [u for slot in self.slots for u in slot.take(slot.next_batch_size())]:
                self.stats.rounds += 1
                for index, shard_units in enumerate(chunks(units, self.shard_size)):
                    self._shard(f"r{self.stats.rounds:03d}-s{index:04d}", shard_units)
                self.progress.round_done(
                    self.stats.rounds, sum(s.generated for s in self.slots), sum(s.kept for s in self.slots)
                )
        finally:
            self.progress.stop()
        t = time.perf_counter()
        for writer in self.writers:
            writer.close(self.stats.records)
        self.stats.times.write += time.perf_counter() - t
        self.stats.batch_size = self.batch_size
        self.stats.elapsed = time.perf_counter() - t0
        return self.stats

    # -- sources, checked once -------------------------------------------------
    def _check_sources(self) -> None:
        """Open every source image (and inpainting mask) once, before any generation.

        One that cannot be used becomes one ``failed`` record (reason
        ``source-unreadable`` or ``mask-unusable``) and is left out of every
        pairing and attempt: it costs no quota and no attempt budget. The
        check runs in shards ``r000-sNNNN`` with markers, so a resumed run
        does not repeat it.
        """
        users: dict[str, list[Slot]] = {}
        by_id = {}
        for slot in self.slots:
            for source in slot.sources:
                users.setdefault(source.id, []).append(slot)
                by_id[source.id] = source
        if not users:
            return
        order = sorted(users)
        bad: dict[Slot, set[str]] = {}
        for index, start in enumerate(range(0, len(order), self.shard_size)):
            shard = f"r000-s{index:04d}"
            ids = order[start : start + self.shard_size]
            done = self.store.load(shard, None) if self.store else None
            records = done if done is not None else self._check_chunk(shard, [by_id[i] for i in ids], users)
            for record in records:
                slot = self._by_key[(record.imitates or record.label, record.mode)]
                key = record.reject_reason or "source-unreadable"
                slot.reasons[key] = slot.reasons.get(key, 0) + 1
                slot.unusable += 1
                # an unreadable file is out of every mode; a missing mask only out of inpainting
                for user in (users[str(record.source_id)] if key == "source-unreadable" else [slot]):
                    bad.setdefault(user, set()).add(str(record.source_id))
            self.stats.records.extend(records)
            self.stats.shards_replayed += done is not None
        for slot, ids in bad.items():
            slot.exclude(ids)
        if bad:
            log.warning("%d source image(s) cannot be used; recorded as failed and left out (see the manifest)",
                        len(set().union(*bad.values())))

    def _check_chunk(self, shard: str, sources: Sequence[Source], users: dict[str, list[Slot]]) -> list[Record]:
        from dalle_data.image_modes import check_source

        records: list[Record] = []
        size = (self.settings.width, self.settings.height)
        for source in sources:
            for slot in users[source.id]:
                problem = check_source(source, slot.mode, self.image_options, size)
                if problem is not None:
                    records.append(self._unusable(shard, slot, source, problem))
                    if problem.code == "source-unreadable":
                        break  # one record per unreadable file, under the first slot that uses it
        if self.store is not None:
            self.store.begin(shard, [r.id for r in records])
            self.store.commit(shard, records)
        return records

    def _unusable(self, shard: str, slot: Slot, source: Source, problem: SourceError) -> Record:
        s = self.settings
        return Record(
            id=record_id("source-check", source.id, slot.cls, slot.mode, problem.code), label=slot.label,
            label_id=slot.label_id, class_dir=slot.class_dir, role="hard_negative" if slot.hard_negative else "positive",
            imitates=slot.cls if slot.hard_negative else None, prompt="", prompt_source="source-check", mode=slot.mode,
            backend=self.generator.backend, model=self.generator.model, seed=0, width=s.width, height=s.height,
            clip_score=None, class_prob=None, top_class=None, kept=False, status="failed",
            reject_reason=problem.code, error=str(problem), source_id=source.id, source_path=source.path,
            source2_id=None, source2_path=None, mask=None, shard=shard,
            created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        )

    # -- one shard --------------------------------------------------------------
    def unit_id(self, unit: WorkUnit) -> str:
        s = self.settings
        return record_id(self.generator.model, unit.slot.mode, unit.slot.label, unit.prompt.prompt, unit.seed,
                         s.width, s.height, s.num_inference_steps, s.prior_num_inference_steps,
                         s.guidance_scale, s.prior_guidance_scale, *id_parts(unit, self.image_options))

    def _shard(self, shard: str, units: Sequence[WorkUnit]) -> None:
        self.stats.shards += 1
        done = self.store.load(shard, [self.unit_id(u) for u in units]) if self.store else None
        if done is not None:
            self.stats.shards_replayed += 1
            for record in done:
                self._count(self._by_key[(record.imitates or record.label, record.mode)], record)
            self.stats.records.extend(done)
            self._report(units)
            return
        records: list[Record] = []
        for batch in chunks(units, self.batch_size):
            if self.stop.is_set():
                raise Interrupted("interrupted")
            records.extend(self._batch(shard, batch))
            self._report(batch)
        t = time.perf_counter()
        if self.store is not None:
            self.store.begin(shard, [r.id for r in records])
        for i, writer in enumerate(self.writers):
            writer.write(shard, records)
            if i == 0:
                faults.point("shard_files")
        faults.point("shard_marker")
        if self.store is not None:
            self.store.commit(shard, records)
        self.stats.times.write += time.perf_counter() - t
        self.stats.records.extend(r.replace(image=None) for r in records)

    def _report(self, units: Sequence[WorkUnit]) -> None:
        for cls in dict.fromkeys(u.slot.cls for u in units):
            same = [s for s in self.slots if s.cls == cls]
            self.progress.update(cls, sum(s.generated for s in same), sum(s.kept for s in same))

    def _halving(self, call: Callable[[list[Any]], list[Image | Defect]], items: list[Any]) -> list[Image | Defect]:
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
            _free_accelerator_memory()
            self.batch_size = min(self.batch_size, half)
            return self._halving(call, items[:half]) + self._halving(call, items[half:])

    def _outputs(self, batch: Sequence[WorkUnit]) -> tuple[list[Any], dict[int, Prepared]]:
        """One image, ``Defect`` or error string per unit; text and image modes go to their own calls."""
        g, s = self.generator, self.settings
        outputs: list[Any] = [None] * len(batch)
        prepared: dict[int, Prepared] = {}
        for i, unit in enumerate(batch):
            if unit.slot.mode in IMAGE_MODES:
                try:
                    prepared[i] = prepare(unit, self.image_options, (s.width, s.height))
                except SourceError as err:
                    outputs[i] = err
        groups: dict[str, list[int]] = {"text": [], "variation": [], "inpaint": []}
        for i, unit in enumerate(batch):
            if outputs[i] is None:
                mode = unit.slot.mode
                groups["text" if mode not in IMAGE_MODES else "inpaint" if mode == "inpaint" else "variation"].append(i)
        calls = {
            "text": lambda ix: g([batch[i].prompt.prompt for i in ix], [batch[i].seed for i in ix], s),
            "variation": lambda ix: g.variation([prepared[i].conditions for i in ix], [prepared[i].weights for i in ix],
                                                [batch[i].seed for i in ix], s),
            "inpaint": lambda ix: g.inpaint([prepared[i].image for i in ix], [prepared[i].mask for i in ix],
                                            [batch[i].prompt.prompt for i in ix], [batch[i].seed for i in ix], s),
        }
        for kind, indices in groups.items():
            if indices:
                for i, out in zip(indices, self._halving(calls[kind], indices)):
                    outputs[i] = out
        return outputs, prepared

    def _batch(self, shard: str, batch: Sequence[WorkUnit]) -> list[Record]:
        times = self.stats.times
        t = time.perf_counter()
        outputs, prepared = self._outputs(batch)
        times.generate += time.perf_counter() - t
        defects = [_defect(o) for o in outputs]
        good = [i for i, d in enumerate(defects) if d is None]
        t = time.perf_counter()
        scores = self.scorer.score([outputs[i] for i in good], [batch[i].prompt.prompt for i in good]) if good else None
        times.score += time.perf_counter() - t
        row_of = {i: row for row, i in enumerate(good)}
        records = []
        for i, unit in enumerate(batch):
            mask = prepared[i].mask_desc if i in prepared else None
            defect = defects[i]
            if defect is not None:
                status = "refused" if isinstance(outputs[i], Refusal) else "failed"
                record = self._failed(shard, unit, defect[1], mask, status, defect[0])
            else:
                assert scores is not None
                record = self._scored(shard, unit, outputs[i], scores, row_of[i], mask)
            self._count(unit.slot, record)
            records.append(record)
        return records

    def _count(self, slot: Slot, record: Record) -> None:
        slot.count(record.source_id, record.status == "kept")
        if record.status == "kept":
            return
        if record.status == "failed":
            slot.failed += 1
        key = reason_code(record.reject_reason, record.status) or "error"
        slot.reasons[key] = slot.reasons.get(key, 0) + 1

    def _base(self, shard: str, unit: WorkUnit, mask: str | None) -> dict[str, Any]:
        slot = unit.slot
        first = unit.sources[0] if unit.sources else None
        second = unit.sources[1] if len(unit.sources) > 1 else None
        return dict(
            id=self.unit_id(unit), label=slot.label, label_id=slot.label_id, class_dir=slot.class_dir,
            role="hard_negative" if slot.hard_negative else "positive",
            imitates=slot.cls if slot.hard_negative else None,
            prompt=unit.prompt.prompt, prompt_source=unit.prompt.source, mode=slot.mode,
            backend=self.generator.backend, model=self.generator.model, seed=unit.seed,
            width=self.settings.width, height=self.settings.height,
            source_id=first.id if first else None, source_path=first.path if first else None,
            source2_id=second.id if second else None, source2_path=second.path if second else None,
            mask=mask, shard=shard,
            created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"),
        )

    def _failed(self, shard: str, unit: WorkUnit, reason: str, mask: str | None, status: str = "failed",
                code: str = "defect") -> Record:
        return Record(**self._base(shard, unit, mask), clip_score=None, class_prob=None, top_class=None, kept=False,
                      status=status, reject_reason=code, error=reason, image=None)

    def _scored(
        self, shard: str, unit: WorkUnit, image: Image, scores: ScoreBatch, row: int, mask: str | None
    ) -> Record:
        slot = unit.slot
        verdict = self.filter(
            clip_score=scores.clip_score[row], probs=scores.probs[row], labels=scores.labels,
            target=slot.cls, hard_negative=slot.hard_negative,  # a hard negative's target: the class it imitates
        )
        passed, code, detail = verdict.passed, verdict.code, verdict.reason
        if passed and slot.full(unit):
            passed, code, detail = False, "surplus", "passed, but the quota was already met"
        t = time.perf_counter()
        png = encode_png(image)
        self.stats.times.encode += time.perf_counter() - t
        base = self._base(shard, unit, mask)
        base.update(width=image.width, height=image.height)
        return Record(
            **base, clip_score=round(scores.clip_score[row], 6), class_prob=round(verdict.class_prob, 6),
            top_class=verdict.top_class, kept=passed, status="kept" if passed else "rejected",
            reject_reason=code, error=None, reject_detail=detail, sha256=hashlib.sha256(png).hexdigest(), image=png,
        )


def _defect(output: Any) -> tuple[str, str] | None:
    """(reason code, detail) for an output that is not a usable image, else None."""
    if isinstance(output, SourceError):
        return output.code, str(output)
    if isinstance(output, Refusal):
        return "refused", output.reason
    if isinstance(output, Defect):
        return "defect", output.reason
    reason = image_defect(output)
    return ("defect", reason) if reason is not None else None


def _free_accelerator_memory() -> None:
    import sys

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def summarize(stats: RunStats, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run summary (also ``--json`` output; its schema: ``dalle_data.summary``)."""
    from dalle_data.summary import EXIT_OK, EXIT_SHORT, SUMMARY_SCHEMA, validate_summary

    per_class: dict[str, dict[str, Any]] = {}
    per_mode: dict[str, dict[str, Any]] = {}
    reasons: dict[str, int] = {}
    for slot in stats.slots:
        rejected = slot.generated - slot.kept - slot.failed
        for row in (per_class.setdefault(slot.cls, {"target": 0, "generated": 0, "kept": 0, "rejected": 0, "failed": 0}),
                    per_mode.setdefault(slot.mode, {"target": 0, "generated": 0, "kept": 0, "rejected": 0, "failed": 0})):
            row["target"] += slot.target
            row["generated"] += slot.generated + slot.unusable  # unusable sources: failed, but no attempt spent
            row["kept"] += slot.kept
            row["failed"] += slot.failed + slot.unusable
            row["rejected"] += rejected
        for k, v in slot.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    for row in per_class.values():
        row["acceptance"] = round(row["kept"] / row["generated"], 4) if row["generated"] else 0.0
        row["met"] = row["kept"] >= row["target"]
    generated = sum(r["generated"] for r in per_class.values())
    kept = sum(r["kept"] for r in per_class.values())
    complete = all(r["met"] for r in per_class.values())
    summary = {
        "schema": SUMMARY_SCHEMA,
        "status": "complete" if complete else "short",
        "complete": complete,
        "exit_code": EXIT_OK if complete else EXIT_SHORT,
        "generated": generated,
        "kept": kept,
        "rejected": sum(r["rejected"] for r in per_class.values()),
        "failed": sum(r["failed"] for r in per_class.values()),
        "acceptance": round(kept / generated, 4) if generated else 0.0,
        "rounds": stats.rounds,
        "shards": stats.shards,
        "shards_resumed": stats.shards_replayed,
        "batch_size": stats.batch_size,
        "seconds": round(stats.elapsed, 3),
        "images_per_second": round(generated / stats.elapsed, 3) if stats.elapsed else 0.0,
        "stage_seconds": stats.times.as_dict(),
        "rejections": reasons,
        "classes": per_class,
        "modes": per_mode,
        **(extra or {}),
    }
    return validate_summary(summary) if extra else summary
