"""plan → generate → score → filter → write, in quota rounds.

``Runner`` is the loop. Its stages are injected (a ``Generator``, a scorer, a
filter, writers, a progress display), so tests and benchmarks can swap any of
them, and each stage is timed separately (generation, scoring, PNG encoding,
writing), as clip-retrieval reports read / inference / write.

Rounds: every slot (class × mode) that is short of its target asks for as many
images as its acceptance rate so far says it needs, within its attempt
budget; the round's units are batched across slots; the loop ends when every
target is met or every budget is spent. Images that pass the filter after a
slot's target is met are rejected as ``surplus`` (so ``--per-class N`` means
exactly N).
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from dalle_data.planning import Slot, WorkUnit
from dalle_data.progress import NullProgress, Progress
from dalle_data.records import Record, record_id
from dalle_data.scoring.filters import ClipFilter

if TYPE_CHECKING:
    from PIL.Image import Image

    from dalle_data.generators.base import GenerationSettings, Generator
    from dalle_data.scoring.clip import ScoreBatch
    from dalle_data.writers import Writer

log = logging.getLogger(__name__)


class Scorer(Protocol):
    name: str

    def score(self, images: Sequence[Image], prompts: Sequence[str]) -> ScoreBatch: ...


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
    times: StageTimes = field(default_factory=StageTimes)
    elapsed: float = 0.0


def encode_png(image: Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def batched(items: Sequence[WorkUnit], size: int) -> Iterator[Sequence[WorkUnit]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
        progress: Progress | None = None,
    ) -> None:
        self.slots = slots
        self.generator = generator
        self.settings = settings
        self.scorer = scorer
        self.filter = filter
        self.writers = list(writers)
        self.batch_size = batch_size
        self.progress = progress or NullProgress()
        self.stats = RunStats(slots=slots)

    def run(self) -> RunStats:
        t0 = time.perf_counter()
        targets: dict[str, int] = {}
        for slot in self.slots:
            targets[slot.cls] = targets.get(slot.cls, 0) + slot.target
        self.progress.start(targets)
        try:
            while True:
                units = [u for slot in self.slots for u in slot.take(slot.next_batch_size())]
                if not units:
                    break
                self.stats.rounds += 1
                for batch in batched(units, self.batch_size):
                    self._process(batch)
                self.progress.round_done(
                    self.stats.rounds, sum(s.generated for s in self.slots), sum(s.kept for s in self.slots)
                )
        finally:
            self.progress.stop()
            for writer in self.writers:
                writer.close()
        self.stats.elapsed = time.perf_counter() - t0
        return self.stats

    def _process(self, batch: Sequence[WorkUnit]) -> None:
        times = self.stats.times
        prompts = [u.prompt.prompt for u in batch]
        t = time.perf_counter()
        images = self.generator(prompts, [u.seed for u in batch], self.settings)
        times.generate += time.perf_counter() - t
        t = time.perf_counter()
        scores = self.scorer.score(images, prompts)
        times.score += time.perf_counter() - t
        for i, (unit, image) in enumerate(zip(batch, images)):
            record = self._record(unit, image, scores, i)
            t = time.perf_counter()
            for writer in self.writers:
                writer.write(record)
            times.write += time.perf_counter() - t
        for cls in dict.fromkeys(u.slot.cls for u in batch):
            same = [s for s in self.slots if s.cls == cls]
            self.progress.update(cls, sum(s.generated for s in same), sum(s.kept for s in same))

    def _record(self, unit: WorkUnit, image: Image, scores: ScoreBatch, i: int) -> Record:
        slot = unit.slot
        target = slot.cls  # for a hard negative: the class it imitates
        verdict = self.filter(
            clip_score=scores.clip_score[i], probs=scores.probs[i], labels=scores.labels,
            target=target, hard_negative=slot.hard_negative,
        )
        slot.generated += 1
        passed, reason = verdict.passed, verdict.reason
        if passed and slot.kept >= slot.target:
            passed, reason = False, "surplus: quota already met"
        if passed:
            slot.kept += 1
        else:
            key = (reason or "").split(":")[0]
            slot.reasons[key] = slot.reasons.get(key, 0) + 1
        t = time.perf_counter()
        png = encode_png(image)
        self.stats.times.encode += time.perf_counter() - t
        s = self.settings
        return Record(
            id=record_id(self.generator.model, slot.mode, slot.label, unit.prompt.prompt, unit.seed,
                         s.width, s.height, s.num_inference_steps, s.prior_num_inference_steps,
                         s.guidance_scale, s.prior_guidance_scale),
            label=slot.label, label_id=slot.label_id, class_dir=slot.class_dir,
            role="hard_negative" if slot.hard_negative else "positive",
            imitates=slot.cls if slot.hard_negative else None,
            prompt=unit.prompt.prompt, prompt_source=unit.prompt.source, mode=slot.mode,
            backend=self.generator.backend, model=self.generator.model, seed=unit.seed,
            width=image.width, height=image.height,
            clip_score=round(scores.clip_score[i], 6), class_prob=round(verdict.class_prob, 6),
            top_class=verdict.top_class, kept=passed, status="kept" if passed else "rejected",
            reject_reason=reason, error=None, source_id=None, source_path=None, mask=None,
            created_at=datetime.now(timezone.utc).isoformat(timespec="microseconds"), image=png,
        )


def summarize(stats: RunStats, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run summary (also ``--json`` output): per class, per mode, totals, timings."""
    per_class: dict[str, dict[str, Any]] = {}
    per_mode: dict[str, dict[str, int]] = {}
    for slot in stats.slots:
        row = per_class.setdefault(slot.cls, {"target": 0, "generated": 0, "kept": 0, "rejected": 0, "failed": 0})
        row["target"] += slot.target
        row["generated"] += slot.generated
        row["kept"] += slot.kept
        row["failed"] += slot.failed
        row["rejected"] += slot.generated - slot.kept - slot.failed
        m = per_mode.setdefault(slot.mode, {"target": 0, "generated": 0, "kept": 0})
        m["target"] += slot.target
        m["generated"] += slot.generated
        m["kept"] += slot.kept
    for row in per_class.values():
        row["acceptance"] = round(row["kept"] / row["generated"], 4) if row["generated"] else 0.0
        row["met"] = row["kept"] >= row["target"]
    generated = sum(r["generated"] for r in per_class.values())
    kept = sum(r["kept"] for r in per_class.values())
    reasons: dict[str, int] = {}
    for slot in stats.slots:
        for k, v in slot.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    return {
        "complete": all(r["met"] for r in per_class.values()),
        "generated": generated,
        "kept": kept,
        "acceptance": round(kept / generated, 4) if generated else 0.0,
        "rounds": stats.rounds,
        "seconds": round(stats.elapsed, 3),
        "images_per_second": round(generated / stats.elapsed, 3) if stats.elapsed else 0.0,
        "stage_seconds": stats.times.as_dict(),
        "rejections": reasons,
        "classes": per_class,
        "modes": per_mode,
        **(extra or {}),
    }
