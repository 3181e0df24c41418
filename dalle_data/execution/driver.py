"""The executor interface, and the one driver that every executor runs under.

An executor runs tasks where the models are (this thread, a Ray actor pool,
a thread pool) and hands back their drafts as ``Part``\\ s, in plan order;
everything else happens here, the same for every executor:

    caller:     plan a wave ─► marker on disk? replay it : executor.map(the tasks to run) ─► parts, in plan order ─┐
    finalizer:  (score a part whose scoring was deferred) ─► ledger.finalize, in plan order ─► progress ─► shard done? ◄┘
    pool:       encode PNGs ─► commit (intent, files, marker) ─► the generator's ``KeptState`` released

Bounded queues give back-pressure: the caller stops pulling parts when
finalizing or writing fall behind, so memory stays bounded by a few batches
and a few shards. Finished shards found on disk are replayed through the
same queue, so the ledger counts them in exactly the order an uninterrupted
run would (surplus decisions depend on that order).

Stopping (Ctrl-C, SIGTERM): no part is pulled after the stop (the batch in
flight finishes), the shard in flight is abandoned, shards already done are
committed, then ``Interrupted``. An error in any stage stops the others and
is raised here.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from dalle_data.errors import DalleDataError
from dalle_data.execution.commit import commit
from dalle_data.execution.ledger import Ledger
from dalle_data.execution.plan import CheckTask, Task, check_tasks, plan_wave
from dalle_data.execution.stages import Draft, encode
from dalle_data.generators.base import KeptState
from dalle_data.progress import NullProgress, Progress
from dalle_data.records import Record

if TYPE_CHECKING:
    from dalle_data.execution.plan import SlotPlan
    from dalle_data.generators.base import GenerationSettings
    from dalle_data.prompts import PromptItem
    from dalle_data.sources import Source

log = logging.getLogger(__name__)


class Interrupted(DalleDataError):
    """The run was asked to stop (SIGINT / SIGTERM); finished shards are kept."""

    exit_code = 130


# --- the interface ---------------------------------------------------------------------------------


@dataclass
class Part:
    """Drafts of one task, one batch or the whole task; ``last`` ends the task.

    ``drafts`` is a callable when scoring is left to the finalizer thread (it overlaps generation on an
    accelerator); ``kept`` (with ``last``) is what the generator keeps until the shard's marker is written;
    ``times`` the seconds each stage took where the part was made.
    """

    task: Task
    drafts: list[Draft] | Callable[[], list[Draft]]
    last: bool = True
    kept: KeptState | None = None
    times: dict[str, float] = field(default_factory=dict)


class Executor(Protocol):
    """Where tasks run. ``map`` yields every task's parts in the order of ``tasks``, each task's parts in
    order, and may read ``tasks`` ahead (a pool does); the driver pulls parts only as fast as they are
    finalized and written, and stops pulling when asked to stop."""

    @property
    def settings(self) -> GenerationSettings: ...

    @property
    def batch_size(self) -> int: ...  # in force now (out of memory may have halved it)

    def unit_id(self, plan: SlotPlan, prompt: PromptItem, seed: int, sources: tuple[Source, ...]) -> str: ...

    def check(self, task: CheckTask) -> list[Record]: ...

    def map(self, tasks: Iterable[Task]) -> Iterator[Part]: ...


# An executor made for a run: (spec, plan, generator, scorer) -> Executor; registered by name in ``executors``.
ExecutorFactory = Callable[["RunSpec", "Plan", Any, Any], Executor]


# --- what the driver measures ------------------------------------------------------------------------


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


# --- the driver ----------------------------------------------------------------------------------------


class Driver:
    """Runs a plan on an executor: waves, replay, ledger, progress, commits, stats (see the module docstring).

    ``workers`` write shards; ``depth`` parts wait to be finalized. ``prefix`` names a part's shards
    (``--shard``: p0003of0010-r001-s0000).
    """

    def __init__(
        self, executor: Executor, writers: Sequence[Any], store: Any, *, shard_size: int, prefix: str = "",
        progress: Progress | None = None, stop: threading.Event | None = None, workers: int = 2, depth: int = 2,
    ) -> None:
        self.executor = executor
        self.writers = list(writers)
        self.store = store
        self.shard_size = shard_size
        self.prefix = prefix
        self.progress = progress or NullProgress()
        self.stop = stop or threading.Event()
        self.workers = max(1, workers)
        self.depth = max(1, depth)
        self.stats = ExecStats(batch_size=executor.batch_size)
        self.shards_planned: list[str] = []  # every shard of the plan, in plan order (the writers' indexes)

    def run(self, ledger: Ledger) -> ExecStats:
        t0 = time.perf_counter()
        try:
            self._check_sources(ledger)
            self.progress.start(ledger.targets())
            with _Pipeline(self, ledger) as pipeline:
                wave = 0
                while True:
                    wave += 1
                    tasks, cursors = plan_wave(ledger, wave, self.shard_size, self.executor.unit_id, self.prefix)
                    if not tasks:
                        break
                    ledger.advance(cursors)
                    self.stats.rounds += 1
                    pipeline.wave(tasks)
                    pipeline.wait()
                    self.progress.round_done(wave, *ledger.totals())
        finally:
            self.progress.stop()
        self.stats.batch_size = self.executor.batch_size
        self.stats.elapsed = time.perf_counter() - t0
        return self.stats

    def _check_sources(self, ledger: Ledger) -> None:
        """Wave 0, in order (cheap: each source image is opened once)."""
        tasks = check_tasks([c.plan for c in ledger.slots.values()], self.shard_size, self.prefix)
        for task in tasks:
            done = self.store.load(task.shard, None) if self.store else None
            records = done if done is not None else self.executor.check(task)
            if done is not None:
                self.stats.shards_replayed += 1
            elif self.store is not None:
                self.store.begin(task.shard, [r.id for r in records])
                self.store.commit(task.shard, records)
            ledger.unusable(records, dict(task.users))
        unusable = sum(c.unusable for c in ledger.slots.values())
        if unusable:
            log.warning("%d source image(s) or mask(s) cannot be used; recorded as failed and left out "
                        "(see the manifest)", unusable)
        self.shards_planned.extend(t.shard for t in tasks)

    def load(self, task: Task) -> list[Record] | None:
        """A task's records from its marker when it finished earlier, else None (run it)."""
        self.stats.shards += 1
        self.shards_planned.append(task.shard)
        return self.store.load(task.shard, task.ids) if self.store else None

    def commit_shard(self, task: Task, drafts: Sequence[Draft]) -> None:
        """The pool's job: encode (drafts from a pool may come encoded already) and commit a shard."""
        t = time.perf_counter()
        records = [encode(d.record, d.picture) for d in drafts]
        self.stats.add("encode", time.perf_counter() - t)
        t = time.perf_counter()
        commit(task.shard, records, self.writers, self.store)
        self.stats.add("write", time.perf_counter() - t)


_DONE = object()


class _Pipeline:
    """The finalizer thread and the writer pool of one run; the caller's thread pulls the executor's parts.

    Pulling stays on the thread that called ``run``: the local executor generates there, and torch's CPU
    thread team belongs to the thread that made it (a second team beside it slowed generation by a
    quarter on two cores, measured). ``wave`` hands over a wave's tasks in plan order; ``wait`` returns
    when every one of them is finalized.
    """

    def __init__(self, driver: Driver, ledger: Ledger) -> None:
        self.driver = driver
        self.ledger = ledger
        self.score_q: queue.Queue[Any] = queue.Queue(maxsize=driver.depth)
        self.pool = ThreadPoolExecutor(max_workers=driver.workers, thread_name_prefix="dalle-data-write")
        self.slots = threading.BoundedSemaphore(driver.workers * 2)  # shards waiting to be written
        self.futures: list[Future[None]] = []
        self.kept: dict[str, KeptState] = {}  # the generator's state for a generated shard, released after its marker
        self.error: BaseException | None = None
        self.fed = 0
        self.finalized = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._guarded_finalize, name="dalle-data-score", daemon=True)

    def __enter__(self) -> _Pipeline:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        stop = self.driver.stop
        if exc[0] is KeyboardInterrupt:  # a second Ctrl-C: stop at once (files land whole or not at all)
            stop.set()
            return
        self._put(_DONE)
        self.thread.join()
        for future in self.futures:
            try:
                future.result()
            except BaseException as err:  # noqa: BLE001 - the first error wins
                self.error = self.error or err
        self.pool.shutdown(wait=True)
        if exc[0] is None or (exc[0] is Interrupted and self.error is not None):
            self._raise()  # an error wins over the stop it caused (a full disk is not "interrupted")
            if stop.is_set():
                raise Interrupted("interrupted")

    # --- the calling thread ------------------------------------------------------------------
    def wave(self, tasks: Sequence[Task]) -> None:
        """Every task of a wave in plan order: replayed from its marker, or run by the executor.

        The executor reads the tasks to run lazily (the local one generates a task when its first part is
        pulled) or ahead (a pool); either way every task it passed before the one a part belongs to is a
        finished one, replayed before that part.
        """
        passed: deque[tuple[Task, list[Record] | None]] = deque()

        def to_run() -> Iterator[Task]:
            for task in tasks:
                done = self.driver.load(task)
                passed.append((task, done))
                if done is None:
                    yield task

        parts = iter(self.driver.executor.map(to_run()))
        in_flight: Task | None = None
        while True:
            self._check(in_flight)
            part = next(parts, None)
            while passed and (part is None or passed[0][0] is not part.task):
                task, done = passed.popleft()
                assert done is not None, f"executor skipped {task.shard}"  # parts come in plan order
                self._begin()
                self._put(("replay", task, done))
            if part is None:
                return
            if in_flight is None:
                self._begin(check_stop=False)  # generated already: it goes through, a stop abandons what follows
                in_flight = part.task
            for stage, seconds in part.times.items():
                self.driver.stats.add(stage, seconds)
            if part.last:
                passed.popleft()
                in_flight = None
                if part.kept is not None:
                    self.kept[part.task.shard] = part.kept
            self._put(("part", part.task, part))

    def wait(self) -> None:
        """Until every task handed over so far is finalized (its shard may still be being written)."""
        with self.cond:
            while self.finalized < self.fed and self.error is None:
                self.cond.wait(0.1)
        self._raise()

    def _check(self, in_flight: Task | None) -> None:
        """Before each part: an error elsewhere is raised; a stop abandons the task in flight."""
        self._raise()
        if self.driver.stop.is_set():
            if in_flight is not None:
                self._put(("abandon", in_flight, None))
            raise Interrupted("interrupted")

    def _begin(self, check_stop: bool = True) -> None:
        if check_stop:
            self._check(None)
        else:
            self._raise()
        with self.cond:
            self.fed += 1

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _put(self, item: Any) -> None:
        while True:
            if self.error is not None and item is not _DONE:
                return
            if item is _DONE and not self.thread.is_alive():  # the finalizer died (its error is kept): no one reads
                return
            try:
                self.score_q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # --- finalizer thread ----------------------------------------------------------------------------
    def _guarded_finalize(self) -> None:
        try:
            self._finalize()
        except BaseException as err:  # noqa: BLE001 - handed to the calling thread
            self.error = self.error or err
            self.driver.stop.set()
            with self.cond:
                self.cond.notify_all()

    def _finalize(self) -> None:
        driver = self.driver
        pending: dict[str, list[Draft]] = {}
        while True:
            item = self.score_q.get()
            if item is _DONE:
                return
            kind, task, payload = item
            if kind == "replay":
                self.ledger.replay(payload, {u.id: u.slot for u in task.units})
                driver.stats.shards_replayed += 1
                self._report(task)
                self._finalized()
            elif kind == "abandon":
                pending.pop(task.shard, None)
                self._finalized()
            else:
                t = time.perf_counter()
                drafts = payload.drafts() if callable(payload.drafts) else payload.drafts
                if self.ledger.candidates > 1:  # --select: the task is finalized whole, at its last part
                    if payload.last:
                        whole = pending.pop(task.shard, []) + drafts
                        finals = self.ledger.finalize_selected([(d.record, d.unit, d.need) for d in whole])
                        for draft, record in zip(whole, finals):
                            draft.record = record
                        drafts = whole
                else:
                    for draft in drafts:
                        draft.record = self.ledger.finalize(draft.record, draft.unit)
                driver.stats.add("score", time.perf_counter() - t)
                pending.setdefault(task.shard, []).extend(drafts)
                self._report(task)
                if payload.last:
                    self.slots.acquire()
                    self.futures.append(self.pool.submit(self._write, task, pending.pop(task.shard)))
                    self._finalized()

    def _write(self, task: Task, drafts: list[Draft]) -> None:
        try:
            self.driver.commit_shard(task, drafts)
            self.kept.pop(task.shard, KeptState()).release()  # only once the marker is written
        except BaseException as err:
            self.error = self.error or err
            self.driver.stop.set()
            raise
        finally:
            self.slots.release()

    def _finalized(self) -> None:
        with self.cond:
            self.finalized += 1
            self.cond.notify_all()

    def _report(self, task: Task) -> None:
        for cls in dict.fromkeys(key[0] for key in (u.slot for u in task.units)):
            self.driver.progress.update(cls, *self.ledger.by_class(cls))
