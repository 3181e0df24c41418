"""The driver on the local executor: the same records as one stage after another, stages overlapping, bounded memory."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from dalle_data.config import build_spec
from dalle_data.execution import Driver, Ledger, LocalExecutor, Stages, execute, plan_wave
from dalle_data.planning import plan
from dalle_data.scoring.filters import ClipFilter
from dalle_data.writers import NoopWriter
from tests.unit.test_runner import SETTINGS, RuleScorer, SeedColorGenerator


def setup(per_class: int = 6, **spec):
    the_plan = plan(build_spec({"classes": ["cat", "dog"], "per_class": per_class, **spec}))
    return the_plan, Ledger(the_plan.slots())


def stages_for(the_plan, generator=None, scorer=None) -> Stages:
    return Stages(generator or SeedColorGenerator(), scorer or RuleScorer(the_plan.zero_shot_labels()),
                  ClipFilter(zero_shot=the_plan.spec.filter == "zero-shot"), SETTINGS)


class Capture(NoopWriter):
    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.records: dict[str, list] = {}
        self.delay = delay

    def write(self, shard: str, records: Sequence) -> None:
        time.sleep(self.delay)
        self.records[shard] = [(r.id, r.status, r.reject_reason, r.sha256) for r in records]
        super().write(shard, records)


def test_the_pipeline_gives_the_records_of_one_stage_after_another() -> None:
    """Every shard: the same ids, statuses (surplus included) and image hashes as execute() + the ledger in order."""
    the_plan, ledger = setup(per_class=6, shard_size=3)
    capture = Capture()
    Driver(LocalExecutor(stages_for(the_plan), batch_size=2, overlap_scoring=True), [capture], None,
           shard_size=3).run(ledger)
    _, reference = setup(per_class=6, shard_size=3)
    stages = stages_for(the_plan)
    expected: dict[str, list] = {}
    wave = 0
    while True:
        wave += 1
        tasks, cursors = plan_wave(reference, wave, 3, stages.unit_id)
        if not tasks:
            break
        reference.advance(cursors)
        for task in tasks:
            drafts = execute(task, stages, 2)
            expected[task.shard] = [(r.id, r.status, r.reject_reason, r.sha256)
                                    for r in (reference.finalize(d.record, d.unit) for d in drafts)]
    assert capture.records == expected
    assert any(status == "rejected" and reason == "surplus" for recs in expected.values() for _, status, reason, _ in recs)


class SlowGenerator(SeedColorGenerator):
    def __call__(self, prompt, seeds, settings):
        time.sleep(0.08)  # sleeping releases the GIL, as a GPU kernel launch-and-wait would
        return super().__call__(prompt, seeds, settings)


class SlowScorer(RuleScorer):
    def score(self, images, prompts):
        time.sleep(0.08)
        return super().score(images, prompts)


def test_scoring_and_writing_overlap_generation() -> None:
    the_plan, ledger = setup(per_class=8, filter="none")
    stages = stages_for(the_plan, SlowGenerator(), SlowScorer(the_plan.zero_shot_labels()))
    executor = Driver(LocalExecutor(stages, batch_size=2, overlap_scoring=True), [Capture(delay=0.08)], None,
                      shard_size=2)
    t = time.perf_counter()
    stats = executor.run(ledger)
    wall = time.perf_counter() - t
    busy = stats.times.generate + stats.times.score + stats.times.write
    assert stats.times.generate == pytest.approx(8 * 0.08, rel=0.5)  # 16 images, 8 batches
    assert wall < 0.8 * busy, (wall, stats.times)  # one after the other would take the sum
    assert stats.generator_busy > 0.6


def test_a_slow_writer_holds_the_generator_back_memory_stays_bounded() -> None:
    the_plan, ledger = setup(per_class=12, filter="none")
    in_flight, most = [0], [0]
    lock = threading.Lock()

    class Gauge(SeedColorGenerator):
        def __call__(self, prompt, seeds, settings):
            with lock:
                in_flight[0] += 1
                most[0] = max(most[0], in_flight[0])
            return super().__call__(prompt, seeds, settings)

    class SlowWriter(NoopWriter):
        def write(self, shard, records):
            time.sleep(0.05)
            with lock:
                in_flight[0] -= 1  # one shard (one batch here) leaves memory
            super().write(shard, records)

    executor = Driver(LocalExecutor(stages_for(the_plan, Gauge()), batch_size=1, overlap_scoring=True), [SlowWriter()],
                      None, shard_size=1, workers=1, depth=1)
    executor.run(ledger)
    # queue (1) + scorer (1) + shards waiting for the writer (2 x workers) + the one being written
    assert most[0] <= 6, most[0]


def test_an_error_in_a_writer_stops_the_run_with_that_error() -> None:
    the_plan, ledger = setup(per_class=8, filter="none")

    class Broken(NoopWriter):
        def write(self, shard, records):
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        Driver(LocalExecutor(stages_for(the_plan), batch_size=2), [Broken()], None, shard_size=2).run(ledger)


def test_a_stop_abandons_the_shard_in_flight_and_keeps_those_finished() -> None:
    from dalle_data.execution import Interrupted

    the_plan, ledger = setup(per_class=8, filter="none")
    stop = threading.Event()
    capture = Capture()

    class StopAfter(SeedColorGenerator):
        def __call__(self, prompt, seeds, settings):
            if len(self.calls) == 2:
                stop.set()  # asked during the third batch: it finishes, the fourth never starts
            return super().__call__(prompt, seeds, settings)

    with pytest.raises(Interrupted):
        Driver(LocalExecutor(stages_for(the_plan, StopAfter()), batch_size=2), [capture], None, shard_size=4,
               stop=stop).run(ledger)
    assert list(capture.records) == ["r001-s0000"]  # shard 1 (batches 3 and 4) was cut off: nothing of it written
