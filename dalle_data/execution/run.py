"""A spec's run on the local executor: stages, ledger, executor, writers' indexes, summary.

``run`` is what ``generate`` calls once its models are loaded and its run
directory is ready; ``regenerate`` redoes chosen shards in memory for
``verify --repair``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.execution.autobatch import MAX_BATCH, batch_size_for
from dalle_data.execution.ledger import Ledger
from dalle_data.execution.local import LocalExecutor
from dalle_data.execution.ray_executor import RayExecutor
from dalle_data.execution.stages import Stages, image_options_of, make_stages
from dalle_data.progress import NullProgress
from dalle_data.records import Record
from dalle_data.remote import MirrorStore
from dalle_data.rundir import Layout
from dalle_data.scoring.filters import ClipFilter
from dalle_data.shards import ShardStore
from dalle_data.summary import summarize
from dalle_data.writers import WriterContext, make_writers, outputs_of

if TYPE_CHECKING:
    from dalle_data.config import RunSpec
    from dalle_data.planning import Plan
    from dalle_data.progress import Progress
    from dalle_data.writers import Writer


def make_executor(
    spec: RunSpec, the_plan: Plan, stages: Stages, writers: Sequence[Writer], progress: Progress,
    stop: threading.Event, store: Any = None,
) -> LocalExecutor:
    return LocalExecutor(
        stages, writers, store if store is not None else ShardStore(Layout(spec.out, spec.split), the_plan.label_map),
        batch_size=batch_size_for(spec, stages, the_plan), shard_size=spec.shard_size, progress=progress, stop=stop,
        prefix=the_plan.part.prefix if the_plan.part is not None else "",
    )


def make_ray_executor(spec: RunSpec, the_plan: Plan, models: Any, writers: Sequence[Writer], progress: Progress,
                      stop: threading.Event) -> tuple[Stages, Any]:
    """The driver's stages (names and settings only: the models live in the actors) and the Ray executor."""
    stages = Stages(generator=models, scorer=None, filter=ClipFilter(), settings=models.settings,  # type: ignore[arg-type]
                    image_options=image_options_of(spec))
    if spec.batch_size == "auto":
        limit = max(1, min(MAX_BATCH, sum(s.target for s in the_plan.slots())))
        batch = models.ray.get(models.actors[0].batch_size.remote(limit))
    else:
        batch = int(spec.batch_size)
    store = ShardStore(Layout(spec.out, spec.split), the_plan.label_map)
    return stages, RayExecutor(models, stages, writers, store, batch_size=batch, shard_size=spec.shard_size,
                               progress=progress, stop=stop,
                               prefix=the_plan.part.prefix if the_plan.part is not None else "")


def default_writers(spec: RunSpec, the_plan: Plan) -> list[Writer]:
    return default_writers_for(spec, the_plan.label_map, spec.out)


def default_writers_for(spec: RunSpec, labels: Any, out: Path) -> list[Writer]:
    ctx = WriterContext(out_dir=out, class_names=labels.names, class_dirs=labels.folders, split=spec.split,
                        keep_rejected=spec.keep_rejected)
    return make_writers(spec.formats, ctx)


def run(
    spec: RunSpec, the_plan: Plan, generator: Any, scorer: Any, writers: list[Writer] | None,
    progress: Progress, stop: threading.Event, mirror: Any = None,
) -> dict[str, Any]:
    """Generate (or resume) the run; write the indexes; return the summary (``mirror``: publish each shard)."""
    import time

    writers = writers if writers is not None else default_writers(spec, the_plan)
    if spec.executor == "ray":
        stages, executor = make_ray_executor(spec, the_plan, generator, writers, progress, stop)
    else:
        stages = make_stages(spec, generator, scorer)
        executor = make_executor(spec, the_plan, stages, writers, progress, stop)
    if mirror is not None:
        executor.store = MirrorStore(executor.store, mirror)
    ledger = Ledger(the_plan.slots())
    stats = executor.run(ledger)
    t = time.perf_counter()
    if the_plan.part is None:  # a part writes its shards only: the indexes are the whole run's (merge)
        records = MarkerRecords(executor.store, executor.shards_planned)
        for writer in writers:
            writer.close(records)
    stats.add("write", time.perf_counter() - t)
    outputs, missing = outputs_of(spec)
    extra = {
        "out": str(spec.out), "outputs": outputs, "missing_outputs": missing, "spec_hash": the_plan.spec_hash,
        "model": generator.model, "backend": generator.backend, "scorer": scorer.name,
        "labels": list(the_plan.labels), "labels_file": str(Layout(spec.out).labels),
        "settings": {k: getattr(stages.settings, k) for k in stages.settings.__dataclass_fields__},
    }
    if the_plan.part is not None:
        extra["part"] = str(the_plan.part)
    return summarize(ledger, stats, extra)


class MarkerRecords:
    """Every record of the given shards, read from their markers each time it is iterated (never all held)."""

    def __init__(self, store: Any, shards: Sequence[str]) -> None:
        self.store = store
        self.shards = list(dict.fromkeys(shards))

    def __iter__(self) -> Iterator[Record]:
        for shard in self.shards:
            yield from self.store.read(shard)


# --- regeneration (verify --repair) ------------------------------------------------------


def regenerate(spec: RunSpec, the_plan: Plan, generator: Any, scorer: Any, shards: set[str]) -> dict[str, bytes]:
    """Redo ``shards`` in memory, as the first time (same plan, seeds, batches): image bytes by id.

    Every other shard is replayed from its marker; nothing is written.
    """
    capture = _Capture(shards)
    store = _Replay(Layout(spec.out, spec.split), the_plan.label_map, shards)
    stages = make_stages(spec, generator, scorer)
    executor = make_executor(spec, the_plan, stages, [capture], NullProgress(), threading.Event(), store)
    executor.run(Ledger(the_plan.slots()))
    return capture.images


class _Capture:
    """A writer that keeps the image bytes of some shards in memory."""

    def __init__(self, shards: set[str]) -> None:
        self.shards = shards
        self.images: dict[str, bytes] = {}

    def write(self, shard: str, records: Sequence[Record]) -> None:
        if shard in self.shards:
            self.images.update({r.id: r.image for r in records if r.image is not None})

    def close(self, records: Iterable[Record]) -> None:
        pass


class _Replay(ShardStore):
    """Replays every marker but those of the shards to redo; records nothing."""

    def __init__(self, layout: Layout, labels: Any, redo: set[str]) -> None:
        super().__init__(layout, labels)
        self.redo = redo

    def load(self, shard: str, unit_ids: Any) -> Any:
        return None if shard in self.redo else super().load(shard, unit_ids)

    def begin(self, shard: str, ids: Any) -> None:
        pass

    def commit(self, shard: str, records: Any) -> None:
        pass
