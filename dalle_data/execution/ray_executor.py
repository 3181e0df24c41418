"""``--executor ray``: the tasks of each wave on a pool of Ray actors, the ledger and the writing here.

    driver: plan a wave ─► tasks, in plan order ─► RayExecutor.map ─► actor pool (each actor: models loaded once;
            execute) ─► a Part per task (PNG bytes encoded in the actor), in plan order ─► the driver: ledger.finalize,
            commit (intent, files, marker) in a writer pool ─► next wave

Each actor builds the generator and the scorer from the run's spec (only the
spec and a task travel; the models are built where they run, as
clip-retrieval's workers do) and runs ``execute(task, stages)``, the same
batch loop the local executor runs. Results come back in plan order
(``ray.util.ActorPool``), one ``Part`` per task, to the same driver as a
local run's (``driver.Driver``), so the ledger decides surplus exactly as a
local run does, and the driver writes every file: a task that Ray retries after
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
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from dalle_data.backends import BACKENDS
from dalle_data.config import RunSpec
from dalle_data.device import resolve_device
from dalle_data.errors import DalleDataError, SpecError
from dalle_data.execution.autobatch import MAX_BATCH, auto_batch_size
from dalle_data.execution.driver import Part
from dalle_data.execution.plan import CheckTask, Task
from dalle_data.execution.stages import BatchSize, check, execute, image_options_of, make_stages, unit_id
from dalle_data.generators.base import GenerationSettings, kept_state
from dalle_data.image_modes import ImageOptions
from dalle_data.records import Record
from dalle_data.scoring import load_scorer, resolve_scorer_name

if TYPE_CHECKING:
    from dalle_data.execution.plan import SlotPlan
    from dalle_data.planning import Plan
    from dalle_data.prompts import PromptItem
    from dalle_data.sources import Source

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
                "settings": self.stages.settings,
                "learner": self.stages.learner.identity() if self.stages.learner is not None else None}

    def batch_size(self, limit: int) -> int:
        return auto_batch_size(self.stages, limit)

    def run(self, task_blob: bytes, batch_size: int) -> bytes:
        """Drafts of a task, pictures encoded (bytes travel, not pictures), the seconds each stage took, and the
        generator's state kept for the task (``KeptState``: released by the driver after the shard's marker)."""
        task = pickle.loads(task_blob)
        times: dict[str, float] = {}
        drafts = execute(task, self.stages, BatchSize(batch_size), times)
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
    """Tasks on the actor pool; a task's drafts come back whole (one ``Part``), encoded, in plan order."""

    def __init__(self, models: RayModels, image_options: ImageOptions, *, batch_size: int) -> None:
        self.models = models
        self.image_options = image_options
        self._batch_size = batch_size

    @property
    def settings(self) -> GenerationSettings:
        return self.models.settings  # type: ignore[no-any-return]

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def unit_id(self, plan: SlotPlan, prompt: PromptItem, seed: int, sources: tuple[Source, ...]) -> str:
        return unit_id(self.models.model, self.settings, self.image_options, plan, prompt, seed, sources)

    def check(self, task: CheckTask) -> list[Record]:
        return pickle.loads(self.models.ray.get(self.models.actors[0].check.remote(pickle.dumps(task))))  # type: ignore[no-any-return]

    def map(self, tasks: Iterable[Task]) -> Iterator[Part]:
        todo = list(tasks)  # the whole wave goes to the pool at once
        results = self.models.pool().map(lambda actor, task: actor.run.remote(pickle.dumps(task), self._batch_size),
                                         todo)
        for task, blob in zip(todo, results):
            drafts, times, kept = pickle.loads(blob)
            yield Part(task, drafts, True, kept, times)  # kept: the actor's files (same machine only)


def make_ray(spec: RunSpec, the_plan: Plan, models: RayModels, scorer: Any = None) -> RayExecutor:
    """``--executor ray``: ``models`` is the actor pool that ``load_models`` started (the models live there)."""
    planned = the_plan.inputs.get("learner")
    if planned is not None:  # --select: the actors read the learner's file themselves; it must be the planned one
        found = models.ray.get(models.actors[0].describe.remote()).get("learner")
        if found != planned:
            raise SpecError(f"--select uncertain:{spec.learner}: the actors read another learner than the run was "
                            "planned with (the file changed, or differs on their machine)")
    if spec.batch_size == "auto":
        limit = max(1, min(MAX_BATCH, sum(s.target for s in the_plan.slots())))
        batch = models.ray.get(models.actors[0].batch_size.remote(limit))
    else:
        batch = int(spec.batch_size)
    return RayExecutor(models, image_options_of(spec), batch_size=batch)


def load_models(spec: RunSpec, zero_shot_labels: list[str]) -> RayModels:
    """The actor pool, each actor loading the models; the driver loads none."""
    return RayModels(spec, zero_shot_labels)
