"""One executor interface: a third executor is one class and one registration, and makes the same dataset."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dalle_data.cli import app
from dalle_data.execution import executors
from dalle_data.execution.driver import Part
from dalle_data.execution.executors import ExecutorKind
from dalle_data.execution.local import LocalExecutor
from dalle_data.execution.plan import Task
from dalle_data.execution.stages import Draft, execute, make_stages
from dalle_data.execution.autobatch import batch_size_for
from dalle_data.generators.base import KeptState, kept_state
from tests.conftest import FAST
from tests.resume.helpers import SPEC, snapshot


class PoolExecutor(LocalExecutor):
    """Whole tasks on a ``concurrent.futures`` pool of one worker thread (one model: its scheduler holds state),
    read ahead by ``ahead`` tasks; everything else (checks, ids, settings) as the local executor."""

    ahead = 2

    def map(self, tasks: Iterable[Task]) -> Iterator[Part]:
        def run(task: Task) -> tuple[list[Draft], KeptState, dict[str, float]]:
            times: dict[str, float] = {}
            drafts = execute(task, self.stages, self.batch, times)
            return drafts, kept_state(self.stages.generator), times

        window: deque[tuple[Task, Future[tuple[list[Draft], KeptState, dict[str, float]]]]] = deque()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-pool") as pool:
            for task in tasks:
                window.append((task, pool.submit(run, task)))
                if len(window) > self.ahead:
                    yield self._part(*window.popleft())
            while window:
                yield self._part(*window.popleft())

    @staticmethod
    def _part(task: Task, future: Future[tuple[list[Draft], KeptState, dict[str, float]]]) -> Part:
        drafts, kept, times = future.result()
        return Part(task, drafts, True, kept, times)


def make_pool(spec, the_plan, generator, scorer) -> PoolExecutor:  # noqa: ANN001 - the factory's signature
    stages = make_stages(spec, generator, scorer)
    return PoolExecutor(stages, batch_size=batch_size_for(spec, stages, the_plan))


def generate(out: Path, *extra: str) -> None:
    result = CliRunner().invoke(app, ["generate", *SPEC, "--out", str(out), *extra],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.stderr


def test_a_registered_executor_makes_the_local_executors_dataset(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered by name, ``--executor pool`` runs ``generate`` on the tiny model; every field of every record
    (but created_at), every image file and the counts are those of the local executor's run."""
    made: list[PoolExecutor] = []
    monkeypatch.setitem(executors.EXECUTORS, "pool",
                        ExecutorKind(lambda *args: made.append(make_pool(*args)) or made[-1]))
    generate(tmp_path / "local")
    generate(tmp_path / "pool", "--executor", "pool")
    assert made, "the registered executor was not used"
    local, pool = snapshot(tmp_path / "local"), snapshot(tmp_path / "pool")
    assert pool == local
    assert local["counts"]["rounds"] >= 2 and local["counts"]["shards"] >= 2  # several waves, several shards


def test_an_unknown_executor_is_a_one_line_error_naming_the_executors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", *FAST, "--classes", "cat", "--per-class", "1", "--out",
                                      str(tmp_path / "o"), "--executor", "nope", "--quiet"])
    assert result.exit_code == 2
    assert "unknown executor 'nope'; choose one of: local, ray" in result.stderr
    assert not (tmp_path / "o").exists()


class StoppedAfterFirstTask(PoolExecutor):
    """A whole-task executor on which Ctrl-C arrives while its first task is being made."""

    ahead = 0

    def map(self, tasks: Iterable[Task]) -> Iterator[Part]:
        import os
        import signal

        for i, part in enumerate(super().map(tasks)):
            if i == 0:
                os.kill(os.getpid(), signal.SIGINT)  # the run's handler sets its stop event (a first Ctrl-C)
            yield part


def test_a_task_made_when_a_stop_arrives_is_committed_not_dropped(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A stop abandons the task in flight, never one whose images are all made: that shard gets its marker
    (a Ray task, a Batch API shard and any shard no bigger than a batch are one part)."""
    monkeypatch.setitem(executors.EXECUTORS, "stopped", ExecutorKind(
        lambda spec, the_plan, generator, scorer: StoppedAfterFirstTask(
            make_stages(spec, generator, scorer), batch_size=2)))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["generate", *SPEC, "--out", str(out), "--executor", "stopped"],
                                catch_exceptions=False)
    assert result.exit_code == 130, result.stderr
    assert list((out / "shards").glob("*.jsonl")), "the finished task's shard was dropped"
