"""The local executor: this machine's device, generating on the driver's own thread.

    driver thread:     pull a part ─► the device generates the next batch of the task (``stages.batches``) ─► part
    finalizer thread:  (an accelerator) CLIP + filter of that batch, while the device makes the next one

On an accelerator, generation of batch k+1 overlaps scoring of batch k (the
part's scoring is deferred to the driver's finalizer thread); on a CPU the
generating thread scores its own batch (two thread teams on the same cores
slow each other down, ~15% measured) and only finalizing, PNG encoding and
writing overlap it. Everything else (replay, ledger, commits, stopping) is
the driver's (``driver.Driver``).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from dalle_data.execution.autobatch import batch_size_for
from dalle_data.execution.driver import Part
from dalle_data.execution.plan import CheckTask, Task
from dalle_data.execution.stages import BatchSize, Stages, batches, check, make_stages, score
from dalle_data.generators.base import GenerationSettings, kept_state
from dalle_data.records import Record

if TYPE_CHECKING:
    from dalle_data.config import RunSpec
    from dalle_data.execution.plan import SlotPlan
    from dalle_data.planning import Plan
    from dalle_data.prompts import PromptItem
    from dalle_data.sources import Source


class LocalExecutor:
    """Runs tasks on the loaded ``stages``, lazily: a batch is generated when its part is pulled."""

    def __init__(self, stages: Stages, *, batch_size: int, overlap_scoring: bool | None = None) -> None:
        self.stages = stages
        self.batch = BatchSize(batch_size)
        if overlap_scoring is None:
            overlap_scoring = str(getattr(stages.generator, "device", "cpu")).startswith(("cuda", "mps"))
        self.overlap_scoring = overlap_scoring

    @property
    def settings(self) -> GenerationSettings:
        return self.stages.settings

    @property
    def batch_size(self) -> int:
        return self.batch.value

    def unit_id(self, plan: SlotPlan, prompt: PromptItem, seed: int, sources: tuple[Source, ...]) -> str:
        return self.stages.unit_id(plan, prompt, seed, sources)

    def check(self, task: CheckTask) -> list[Record]:
        return check(task, self.stages)

    def map(self, tasks: Iterable[Task]) -> Iterator[Part]:
        stages = self.stages
        for task in tasks:
            for done in batches(task, stages, self.batch):
                times = {"generate": done.seconds}
                kept = kept_state(stages.generator) if done.last else None
                if self.overlap_scoring:
                    yield Part(task, functools.partial(score, stages, task, done.units, done.outputs, done.prepared),
                               done.last, kept, times)
                    continue
                t = time.perf_counter()
                drafts = score(stages, task, done.units, done.outputs, done.prepared)
                times["score"] = time.perf_counter() - t
                yield Part(task, drafts, done.last, kept, times)


def make_local(spec: RunSpec, the_plan: Plan, generator: Any, scorer: Any) -> LocalExecutor:
    """``--executor local`` (the default): the loaded generator and scorer, here."""
    stages = make_stages(spec, generator, scorer, the_plan.inputs.get("learner"))
    return LocalExecutor(stages, batch_size=batch_size_for(spec, stages, the_plan))
