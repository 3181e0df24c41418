"""The executors, by name: ``--executor NAME`` picks one from this table.

An executor is one module and one row here: a factory ``(spec, plan,
generator, scorer) -> Executor`` (see ``driver.Executor``) and, for an
executor whose workers load the models themselves, ``load_models(spec,
zero-shot labels)``, which ``generate`` calls instead of loading them here
(what it returns is passed on as the factory's generator and scorer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dalle_data.errors import SpecError
from dalle_data.execution import local, ray_executor
from dalle_data.execution.driver import ExecutorFactory


@dataclass(frozen=True)
class ExecutorKind:
    make: ExecutorFactory
    load_models: Callable[[Any, list[str]], Any] | None = None  # the models load in its workers, not here


EXECUTORS: dict[str, ExecutorKind] = {
    "local": ExecutorKind(local.make_local),
    "ray": ExecutorKind(ray_executor.make_ray, ray_executor.load_models),
}


def register_executor(name: str, kind: ExecutorKind) -> None:
    """Add (or replace) an executor; ``--executor NAME`` then runs on it."""
    EXECUTORS[name] = kind


def executor_kind(name: str) -> ExecutorKind:
    try:
        return EXECUTORS[name]
    except KeyError:
        raise SpecError(f"unknown executor {name!r}; choose one of: {', '.join(EXECUTORS)}") from None
