"""``--executor ray``: the tasks of each wave on a pool of Ray actors, the ledger and the writing here.

    driver: plan a wave ─► tasks, in plan order ─► actor pool (each actor: models loaded once; execute) ─┐
            ledger.finalize, in plan order ◄── drafts (PNG bytes encoded in the actor) ◄────────────────┘
            ─► commit (intent, files, marker) in a writer pool ─► next wave

Each actor builds the generator and the scorer from the run's spec (only the
spec and a task travel; the models are built where they run, as
clip-retrieval's workers do) and runs ``execute(task, stages)``, the same
function the local executor runs. Results come back in plan order
(``ray.util.ActorPool``), so the ledger decides surplus exactly as a local
run does, and the driver writes every file: a task that Ray retries after
an actor died (actors restart, their calls are retried: at least once)
only recomputes drafts, it never writes, so nothing is duplicated. Shard
ids come from the plan, never from Ray.

Why the actor pool of Ray Core rather than Ray Data: a wave's size depends
on the last wave's results, and a Ray Data pipeline per wave would rebuild
its actors, and load the models again, every wave. The pool keeps one model
load per actor for the whole run.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Sequence
from typing import Any

from dalle_data.backends import BACKENDS
from dalle_data.config import RunSpec
from dalle_data.device import resolve_device
from dalle_data.errors import DalleDataError
from dalle_data.execution.autobatch import auto_batch_size
from dalle_data.execution.commit import commit
from dalle_data.execution.ledger import Ledger
from dalle_data.execution.local import ExecStats, Interrupted, _Pipeline, run_waves
from dalle_data.execution.plan import check_tasks
from dalle_data.execution.stages import BatchSize, check, encode, generate, make_stages, score
from dalle_data.generators.base import kept_state
from dalle_data.progress import NullProgress, Progress
from dalle_data.scoring import load_scorer, resolve_scorer_name

log = logging.getLogger(__name__)


class Worker:
    """One Ray actor: the run's models, loaded once; ``execute`` for every task it is given."""

    def __init__(self, spec_json: str, zero_shot_labels: list[str], threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        spec = RunSpec.model_validate_json(spec_json)
        device = resolve_device(spec.device)
        generator = BACKENDS[spec.backend].load(spec, device)
        scorer = load_scorer(resolve_scorer_name(spec.scorer, spec.model, spec.backend), device=device)
        scorer.set_labels(zero_shot_labels)
        self.spec = spec
        self.stages = make_stages(spec, generator, scorer)

    def describe(self) -> dict[str, Any]:
        g = self.stages.generator
        return {"model": g.model, "backend": g.backend, "scorer": self.stages.scorer.name,
                "capabilities": sorted(getattr(g, "capabilities", ("text-to-image",))), "pid": os.getpid(),
                "settings": self.stages.settings}

    def batch_size(self, limit: int) -> int:
        return auto_batch_size(self.stages, limit)

    def run(self, task_blob: bytes, batch_size: int) -> bytes:
        """Drafts of a task, pictures encoded (bytes travel, not pictures), the seconds each stage took, and the
        generator's state kept for the task (``KeptState``: released by the driver after the shard's marker)."""
        task = pickle.loads(task_blob)
        size = BatchSize(batch_size)
        drafts, times = [], {"generate": 0.0, "score": 0.0, "encode": 0.0}
        start, units = 0, list(task.units)
        while start < len(units):
            chunk = units[start : start + size.value]
            t = time.perf_counter()
            outputs, prepared = generate(self.stages, chunk, size)
            times["generate"] += time.perf_counter() - t
            t = time.perf_counter()
            drafts += score(self.stages, task, chunk, outputs, prepared)
            times["score"] += time.perf_counter() - t
            start += len(chunk)
        t = time.perf_counter()
        for draft in drafts:
            draft.record, draft.picture = encode(draft.record, draft.picture), None
        times["encode"] += time.perf_counter() - t
        return pickle.dumps((drafts, times, kept_state(self.stages.generator)))

    def check(self, task_blob: bytes) -> bytes:
        return pickle.dumps(check(pickle.loads(task_blob), self.stages))


def start_ray(address: str | None) -> Any:
    """``ray.init`` against ``address`` (a cluster) or a local instance; one line if Ray is missing."""
    try:
        import ray
    except ImportError:
        raise DalleDataError("--executor ray needs Ray: pip install 'dalle-data[ray]' (or ray==2.60.0)") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        elif os.environ.get("DALLE_DATA_RAY_CPUS"):
            kwargs["num_cpus"] = int(os.environ["DALLE_DATA_RAY_CPUS"])
        os.environ.setdefault("RAY_AUTH_MODE", "disabled") if not address else None
        try:
            ray.init(**kwargs)
        except Exception as err:  # noqa: BLE001 - a cluster that cannot be reached is a user error
            raise DalleDataError(f"cannot start or reach Ray{f' at {address}' if address else ''}: "
                                 f"{str(err).splitlines()[0]}") from None
    return ray


class RayModels:
    """The actor pool, and the generator's and scorer's names and settings as the driver needs them."""

    def __init__(self, spec: Any, zero_shot_labels: list[str]) -> None:
        ray = start_ray(spec.ray_address)
        gpus = spec.ray_gpus
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) else 0.0
        threads = int(os.environ.get("DALLE_DATA_RAY_THREADS", "1"))
        actor = ray.remote(max_restarts=-1, max_task_retries=-1)(Worker)
        self.actors = [actor.options(num_cpus=threads, num_gpus=gpus).remote(spec.model_dump_json(), zero_shot_labels,
                                                                             threads)
                       for _ in range(spec.ray_actors)]
        try:
            info = ray.get(self.actors[0].describe.remote())
        except Exception as err:  # noqa: BLE001 - the first actor's model load failed: say why in one line
            raise DalleDataError(f"a Ray actor could not load the models: {str(err).splitlines()[-1]}") from None
        self.ray = ray
        self.model, self.backend, self.name = info["model"], info["backend"], info["scorer"]
        self.capabilities = frozenset(info["capabilities"])
        self.settings = info["settings"]

    def pool(self) -> Any:
        from ray.util import ActorPool

        return ActorPool(list(self.actors))

    def shutdown(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)


class RayExecutor:
    """``LocalExecutor``'s interface (``run(ledger)``, ``shards_planned``, ``store``, ``stats``) over Ray actors."""

    def __init__(self, models: RayModels, stages: Any, writers: Sequence[Any], store: Any, *, batch_size: int,
                 shard_size: int, progress: Progress | None = None, stop: Any = None, prefix: str = "") -> None:
        import threading

        self.models = models
        self.stages = stages  # the driver's view: settings and unit ids, no models
        self.writers = list(writers)
        self.store = store
        self.batch_size = batch_size
        self.shard_size = shard_size
        self.progress = progress or NullProgress()
        self.stop = stop or threading.Event()
        self.prefix = prefix
        self.stats = ExecStats(batch_size=batch_size)
        self.shards_planned: list[str] = []
        self.overlap_scoring = True  # the driver only finalizes and writes
        self.workers, self.depth = 2, 2

    def run(self, ledger: Ledger) -> ExecStats:
        t0 = time.perf_counter()
        try:
            self._check_sources(ledger)
            self.progress.start(ledger.targets())
            with _Pipeline(self, ledger) as pipeline:  # type: ignore[arg-type]
                run_waves(self, ledger, pipeline, self._wave)
        finally:
            self.progress.stop()
        self.stats.elapsed = time.perf_counter() - t0
        return self.stats

    def _wave(self, pipeline: _Pipeline, tasks: list[Any]) -> None:
        done = {t.shard: (self.store.load(t.shard, t.ids) if self.store else None) for t in tasks}
        todo = [t for t in tasks if done[t.shard] is None]
        results = self.models.pool().map(lambda actor, task: actor.run.remote(pickle.dumps(task), self.batch_size),
                                         todo)
        for task in tasks:
            self.stats.shards += 1
            self.shards_planned.append(task.shard)
            if self.stop.is_set():
                raise Interrupted("interrupted")
            if done[task.shard] is not None:
                pipeline.replay(task, done[task.shard])
                continue
            drafts, times, kept = pickle.loads(next(results))
            for stage, seconds in times.items():
                self.stats.add(stage, seconds)
            pipeline.kept[task.shard] = kept  # released after the marker (the actor's files: same machine only)
            pipeline._begin()
            pipeline._put(("scored", task, drafts, True))

    def _check_sources(self, ledger: Ledger) -> None:
        tasks = check_tasks([c.plan for c in ledger.slots.values()], self.shard_size, self.prefix)
        for task in tasks:
            records = self.store.load(task.shard, None) if self.store else None
            if records is None:
                records = pickle.loads(self.models.ray.get(self.models.actors[0].check.remote(pickle.dumps(task))))
                if self.store is not None:
                    self.store.begin(task.shard, [r.id for r in records])
                    self.store.commit(task.shard, records)
            ledger.unusable(records, dict(task.users))
        self.shards_planned.extend(t.shard for t in tasks)

    def commit_shard(self, task: Any, drafts: Sequence[Any]) -> None:
        t = time.perf_counter()
        commit(task.shard, [d.record for d in drafts], self.writers, self.store)
        self.stats.add("write", time.perf_counter() - t)

    @property
    def batch(self) -> Any:
        return BatchSize(self.batch_size)
