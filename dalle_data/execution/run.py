"""A spec's run: its executor (by name, from ``executors``), the driver, ledger, writers' indexes, summary.

``run`` is what ``generate`` calls once its models are loaded and its run
directory is ready; ``regenerate`` redoes chosen shards in memory for
``verify --repair``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.focus import describe as describe_focus
from dalle_data.execution.driver import Driver, Executor
from dalle_data.execution.executors import executor_kind
from dalle_data.execution.ledger import Ledger
from dalle_data.execution.local import make_local
from dalle_data.generators.utilisation import LIMIT_FILE, MATMUL_SIDE, StageMeter, practical_limit
from dalle_data.llm.cache import home
from dalle_data.progress import NullProgress
from dalle_data.records import Record
from dalle_data.remote import MirrorStore
from dalle_data.rundir import Layout
from dalle_data.rundir.shards import ShardStore
from dalle_data.summary import summarize
from dalle_data.writers import WriterContext, make_writers, outputs_of

if TYPE_CHECKING:
    from dalle_data.config import RunSpec
    from dalle_data.planning import Plan
    from dalle_data.progress import Progress
    from dalle_data.writers import Writer


def make_driver(spec: RunSpec, the_plan: Plan, executor: Executor, writers: Sequence[Writer], progress: Progress,
                stop: threading.Event, store: Any = None) -> Driver:
    """The driver of a run on ``executor``: its store (the run's shard markers unless given) and its shards' names."""
    store = store if store is not None else ShardStore(Layout(spec.out, spec.split), the_plan.label_map)
    return Driver(executor, writers, store, shard_size=spec.shard_size, progress=progress, stop=stop,
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
    executor = executor_kind(spec.executor).make(spec, the_plan, generator, scorer)
    store = ShardStore(Layout(spec.out, spec.split), the_plan.label_map)
    driver = make_driver(spec, the_plan, executor, writers, progress, stop,
                         MirrorStore(store, mirror) if mirror is not None else store)
    ledger = Ledger(the_plan.slots(), the_plan.candidates)
    meter = StageMeter(generator) if spec.executor == "local" else None  # after the batch probe: not counted
    if meter is not None and meter.modules:
        with meter:
            stats = driver.run(ledger)
    else:
        stats = driver.run(ledger)
    t = time.perf_counter()
    if the_plan.part is None:  # a part writes its shards only: the indexes are the whole run's (merge)
        records = MarkerRecords(driver.store, driver.shards_planned)
        for writer in writers:
            writer.close(records)
    stats.add("write", time.perf_counter() - t)
    outputs, missing = outputs_of(spec)
    extra = {
        "out": str(spec.out), "outputs": outputs, "missing_outputs": missing, "spec_hash": the_plan.spec_hash,
        "model": generator.model, "backend": generator.backend, "scorer": scorer.name,
        "labels": list(the_plan.labels), "labels_file": str(Layout(spec.out).labels),
        "settings": {k: getattr(executor.settings, k) for k in executor.settings.__dataclass_fields__},
    }
    if the_plan.part is not None:
        extra["part"] = str(the_plan.part)
    if spec.focus is not None:
        extra["focus"] = describe_focus(spec.focus, list(spec.classes), spec.per_class or 0)
    if meter is not None and meter.images:
        extra["utilisation"] = utilisation(meter, generator)
    if spec.select is not None:
        extra["select"] = {"method": spec.select, "learner": the_plan.learner_name, **ledger.selection()}
    return summarize(ledger, stats, extra)


def utilisation(meter: StageMeter, generator: Any) -> dict[str, Any]:
    """The summary's ``utilisation``: the device, the networks' dtype, the device's practical matmul limit at
    it, and each stage's FLOPs per image, achieved rate and share of that limit (``generators.utilisation``)."""
    device = str(getattr(generator, "device", "cpu"))
    dtype = network_dtype(meter)
    limit = practical_limit(device, dtype, home()) if dtype is not None else None
    return {"device": device, "dtype": str(dtype).removeprefix("torch.") if dtype is not None else None,
            "images": meter.images, "limit_gflop_per_s": round(limit / 1e9, 1) if limit else None,
            "limit": f"best of 5 dense {MATMUL_SIDE}x{MATMUL_SIDE} matmuls at this dtype on this device "
                     f"(remembered in $DALLE_DATA_HOME/{LIMIT_FILE})",
            "stages": meter.report(limit)}


def network_dtype(meter: StageMeter) -> Any:
    """The dtype of the denoiser's weights (the stage that does most of the work), else any stage's."""
    for stage in ("denoiser", *meter.modules):
        for module in meter.modules.get(stage, []):
            for p in module.parameters():
                return p.dtype
    return None


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
    executor = make_local(spec, the_plan, generator, scorer)  # here, whatever executor made the run
    make_driver(spec, the_plan, executor, [capture], NullProgress(), threading.Event(), store).run(Ledger(the_plan.slots(), the_plan.candidates))
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
