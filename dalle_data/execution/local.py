"""The local executor: one device kept busy by a pipeline.

    caller:  plan a wave ─► each task: the device, batch after batch ─► score queue ─► … ─► wait ─► next wave
    scorer:  score queue ─► CLIP + filter ─► ledger.finalize, in plan order ─► shard done? ─► pool
    pool:    encode PNGs ─► commit (intent, files, marker)

On an accelerator, generation of batch k+1 overlaps scoring of batch k; on
a CPU the generating thread scores its own batch (two thread teams on the
same cores slow each other down) and finalizing, PNG encoding and writing
overlap it. Bounded queues give back-pressure: the
generator waits when scoring or writing fall behind, so memory stays bounded
by a few batches and a few shards. Finished shards found on disk are
replayed through the same queues, so the ledger counts them in exactly the
order an uninterrupted run would (surplus decisions depend on that order).

Stopping (Ctrl-C, SIGTERM): the batch in flight finishes, the shard in
flight is abandoned, shards already generated are committed, then
``Interrupted``. An error in any stage stops the others and is raised here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dalle_data.errors import DalleDataError
from dalle_data.execution.commit import commit
from dalle_data.execution.ledger import Ledger
from dalle_data.execution.plan import CheckTask, Task, check_tasks, plan_wave
from dalle_data.execution.stages import BatchSize, Draft, Stages, check, encode, generate, score
from dalle_data.generators.base import KeptState, kept_state
from dalle_data.progress import NullProgress, Progress
from dalle_data.records import Record

log = logging.getLogger(__name__)


class Interrupted(DalleDataError):
    """The run was asked to stop (SIGINT / SIGTERM); finished shards are kept."""

    exit_code = 130


@dataclass
class StageTimes:
    """Busy seconds per stage (stages overlap: their sum can exceed the wall time)."""

    generate: float = 0.0
    score: float = 0.0
    encode: float = 0.0
    write: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in vars(self).items()}


@dataclass
class ExecStats:
    rounds: int = 0
    shards: int = 0
    shards_replayed: int = 0
    batch_size: int = 0
    elapsed: float = 0.0
    times: StageTimes = field(default_factory=StageTimes)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            setattr(self.times, stage, getattr(self.times, stage) + seconds)

    @property
    def generator_busy(self) -> float:
        """The share of wall time the generator was busy."""
        return self.times.generate / self.elapsed if self.elapsed else 0.0


_DONE = object()


class LocalExecutor:
    """Runs the plan on this machine's device; see the module docstring."""

    def __init__(
        self, stages: Stages, writers: Sequence[Any], store: Any, *, batch_size: int, shard_size: int,
        progress: Progress | None = None, stop: threading.Event | None = None, workers: int = 2, depth: int = 2,
        overlap_scoring: bool | None = None, prefix: str = "",
    ) -> None:
        self.stages = stages
        self.writers = list(writers)
        self.store = store
        self.batch = BatchSize(batch_size)
        self.shard_size = shard_size
        self.progress = progress or NullProgress()
        self.stop = stop or threading.Event()
        self.workers = max(1, workers)
        self.depth = max(1, depth)
        self.stats = ExecStats(batch_size=batch_size)
        # Scoring overlaps generation on an accelerator (the CPU feeds it while it computes); on a CPU the two
        # would share the same cores, and two thread teams on them slow generation down by ~15% (measured):
        # there the generator thread scores its own batches, and only finalizing and writing overlap.
        if overlap_scoring is None:
            overlap_scoring = str(getattr(stages.generator, "device", "cpu")).startswith(("cuda", "mps"))
        self.overlap_scoring = overlap_scoring
        self.prefix = prefix  # a part's shard names (--shard): p0003of0010-r001-s0000
        self.shards_planned: list[str] = []  # every shard of the plan, in plan order (the writers' indexes)

    # --- the run -----------------------------------------------------------------------
    def run(self, ledger: Ledger) -> ExecStats:
        t0 = time.perf_counter()
        try:
            self._check_sources(ledger)
            self.progress.start(ledger.targets())
            with _Pipeline(self, ledger) as pipeline:
                run_waves(self, ledger, pipeline, self._wave)
        finally:
            self.progress.stop()
        self.stats.batch_size = self.batch.value
        self.stats.elapsed = time.perf_counter() - t0
        return self.stats

    def _wave(self, pipeline: _Pipeline, tasks: list[Task]) -> None:
        for task in tasks:
            self.stats.shards += 1
            self.shards_planned.append(task.shard)
            done = self.store.load(task.shard, task.ids) if self.store else None
            if done is not None:
                pipeline.replay(task, done)
            else:
                pipeline.generate(task)

    def _check_sources(self, ledger: Ledger) -> None:
        """Wave 0, in order (cheap: each source image is opened once)."""
        tasks = check_tasks([c.plan for c in ledger.slots.values()], self.shard_size, self.prefix)
        for task in tasks:
            done = self.store.load(task.shard, None) if self.store else None
            records = done if done is not None else self._check(task)
            self.stats.shards_replayed += done is not None
            ledger.unusable(records, dict(task.users))
        unusable = sum(c.unusable for c in ledger.slots.values())
        if unusable:
            log.warning("%d source image(s) or mask(s) cannot be used; recorded as failed and left out "
                        "(see the manifest)", unusable)
        self.shards_planned.extend(t.shard for t in tasks)

    def _check(self, task: CheckTask) -> list[Record]:
        records = check(task, self.stages)
        if self.store is not None:
            self.store.begin(task.shard, [r.id for r in records])
            self.store.commit(task.shard, records)
        return records

    # --- the pool's job: encode and commit a shard -------------------------------------------
    def commit_shard(self, task: Task, drafts: Sequence[Draft]) -> None:
        t = time.perf_counter()
        records = [encode(d.record, d.picture) for d in drafts]
        self.stats.add("encode", time.perf_counter() - t)
        t = time.perf_counter()
        commit(task.shard, records, self.writers, self.store)
        self.stats.add("write", time.perf_counter() - t)


def run_waves(executor: Any, ledger: Ledger, pipeline: _Pipeline, wave_fn: Callable[[_Pipeline, list[Task]], None]) -> None:
    """Plan wave after wave until the ledger has no more work; ``wave_fn`` starts a wave's tasks, then the
    pipeline is drained and the round reported (the local and Ray executors differ only in ``wave_fn``)."""
    wave = 0
    while True:
        wave += 1
        tasks, cursors = plan_wave(ledger, wave, executor.shard_size, executor.stages.unit_id, executor.prefix)
        if not tasks:
            break
        ledger.advance(cursors)
        executor.stats.rounds += 1
        wave_fn(pipeline, tasks)
        pipeline.wait()
        executor.progress.round_done(wave, *ledger.totals())


class _Pipeline:
    """The scorer thread and the writer pool of one run; the caller's thread generates.

    Generation stays on the thread that called ``run``: torch's CPU thread team belongs to the thread
    that made it, and a second team (a generator thread beside the main one) slowed generation by a
    quarter on two cores (measured). ``generate`` and ``replay`` take tasks in plan order; ``wait``
    returns when every one of them is finalized.
    """

    def __init__(self, executor: LocalExecutor, ledger: Ledger) -> None:
        self.ex = executor
        self.ledger = ledger
        self.score_q: queue.Queue[Any] = queue.Queue(maxsize=executor.depth)
        self.pool = ThreadPoolExecutor(max_workers=executor.workers, thread_name_prefix="dalle-data-write")
        self.slots = threading.BoundedSemaphore(executor.workers * 2)  # shards waiting to be written
        self.futures: list[Future[None]] = []
        self.kept: dict[str, KeptState] = {}  # the generator's state for a generated shard, released after its marker
        self.error: BaseException | None = None
        self.fed = 0
        self.finalized = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._guarded_score, name="dalle-data-score", daemon=True)

    def __enter__(self) -> _Pipeline:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is KeyboardInterrupt:  # a second Ctrl-C: stop at once (files land whole or not at all)
            self.ex.stop.set()
            return
        self._put(_DONE)
        self.thread.join()
        for future in self.futures:
            try:
                future.result()
            except BaseException as err:  # noqa: BLE001 - the first error wins
                self.error = self.error or err
        self.pool.shutdown(wait=True)
        if exc[0] is None:
            self._raise()
            if self.ex.stop.is_set():
                raise Interrupted("interrupted")

    # --- the calling thread ------------------------------------------------------------------
    def replay(self, task: Task, done: list[Record]) -> None:
        """A shard finished earlier: counted by the ledger in its place in plan order."""
        self._begin()
        self._put(("replay", task, done, True))

    def generate(self, task: Task) -> None:
        """Generate a task batch by batch here; each batch goes on to scoring (or is scored here, on a CPU)."""
        ex = self.ex
        self._begin()
        units = list(task.units)
        start = 0
        while start < len(units):
            self._raise()
            if ex.stop.is_set():
                self._put(("abandon", task, None, True))
                raise Interrupted("interrupted")
            chunk = units[start : start + ex.batch.value]
            t = time.perf_counter()
            outputs, prepared = generate(ex.stages, chunk, ex.batch)
            ex.stats.add("generate", time.perf_counter() - t)
            start += len(chunk)
            last = start >= len(units)
            if last:
                self.kept[task.shard] = kept_state(ex.stages.generator)
            if ex.overlap_scoring:
                self._put(("batch", task, (chunk, outputs, prepared), last))
            else:
                t = time.perf_counter()
                drafts = score(ex.stages, task, chunk, outputs, prepared)
                ex.stats.add("score", time.perf_counter() - t)
                self._put(("scored", task, drafts, last))

    def wait(self) -> None:
        """Until every task handed over so far is finalized (its shard may still be being written)."""
        with self.cond:
            while self.finalized < self.fed and self.error is None:
                self.cond.wait(0.1)
        self._raise()

    def _begin(self) -> None:
        self._raise()
        if self.ex.stop.is_set():
            raise Interrupted("interrupted")
        with self.cond:
            self.fed += 1

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _put(self, item: Any) -> None:
        while True:
            if self.error is not None and item is not _DONE:
                return
            try:
                self.score_q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- scorer thread -------------------------------------------------------------------------------
    def _guarded_score(self) -> None:
        try:
            self._score()
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            self.error = self.error or err
            self.ex.stop.set()
            with self.cond:
                self.cond.notify_all()

    def _score(self) -> None:
        ex = self.ex
        pending: dict[str, list[Draft]] = {}
        while True:
            item = self.score_q.get()
            if item is _DONE:
                return
            kind, task, payload, last = item
            if kind == "replay":
                self.ledger.replay(payload, {u.id: u.slot for u in task.units})
                ex.stats.shards_replayed += 1
                self._report(task)
                self._finalized()
            elif kind == "abandon":
                pending.pop(task.shard, None)
                self._finalized()
            else:
                t = time.perf_counter()
                if kind == "batch":
                    chunk, outputs, prepared = payload
                    drafts = score(ex.stages, task, chunk, outputs, prepared)
                else:
                    drafts = payload
                for draft in drafts:
                    draft.record = self.ledger.finalize(draft.record, draft.unit)
                ex.stats.add("score", time.perf_counter() - t)
                pending.setdefault(task.shard, []).extend(drafts)
                self._report(task)
                if last:
                    self.slots.acquire()
                    self.futures.append(self.pool.submit(self._write, task, pending.pop(task.shard)))
                    self._finalized()

    def _write(self, task: Task, drafts: list[Draft]) -> None:
        try:
            self.ex.commit_shard(task, drafts)
            self.kept.pop(task.shard, KeptState()).release()  # only once the marker is written
        except BaseException as err:
            self.error = self.error or err
            self.ex.stop.set()
            raise
        finally:
            self.slots.release()

    def _finalized(self) -> None:
        with self.cond:
            self.finalized += 1
            self.cond.notify_all()

    def _report(self, task: Task) -> None:
        for cls in dict.fromkeys(key[0] for key in (u.slot for u in task.units)):
            self.ex.progress.update(cls, *self.ledger.by_class(cls))
