"""--batch-size auto: the fastest batch that fits, probed once per model and machine, remembered."""

from __future__ import annotations

import json

import pytest

from dalle_data.execution import autobatch
from tests.execution.test_pipeline import setup, stages_for
from tests.unit.test_runner import SeedColorGenerator


class Clock:
    """The probe's clock, moved only by the generator's modelled cost: the figures do not depend on how busy
    the machine is (a sleep-based cost did, and failed on a loaded machine)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CLOCK = Clock()


@pytest.fixture(autouse=True)
def modelled_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(autobatch.time, "perf_counter", CLOCK)


class Timed(SeedColorGenerator):
    """A call costs a fixed overhead plus a little per image, until ``oom_above`` images."""

    def __init__(self, overhead: float = 0.004, per_image: float = 0.0005, oom_above: int = 10_000) -> None:
        super().__init__()
        self.overhead, self.per_image, self.oom_above = overhead, per_image, oom_above

    def __call__(self, prompt, seeds, settings):
        if len(prompt) > self.oom_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        CLOCK.now += self.overhead + self.per_image * len(prompt)
        return super().__call__(prompt, seeds, settings)


def test_the_probe_picks_the_fastest_batch_and_stops_at_out_of_memory() -> None:
    the_plan, _ = setup()
    best, rates = autobatch.probe(stages_for(the_plan, Timed()), limit=64)
    assert best == 64 and list(rates) == [1, 2, 4, 8, 16, 32, 64]
    best, rates = autobatch.probe(stages_for(the_plan, Timed(oom_above=8)), limit=64)
    assert best == 8 and max(rates) == 8


def test_the_probe_stops_once_larger_batches_bring_nothing() -> None:
    the_plan, _ = setup()
    flat = Timed(overhead=0.0, per_image=0.002)  # no fixed cost: every batch size makes the same images per second
    _, rates = autobatch.probe(stages_for(the_plan, flat), limit=64)
    assert len(rates) <= 4


def test_the_choice_is_remembered_per_model_and_machine(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DALLE_DATA_HOME", str(tmp_path))
    the_plan, _ = setup()
    generator = Timed()
    stages = stages_for(the_plan, generator)
    assert autobatch.auto_batch_size(stages) == 64
    calls = len(generator.calls)
    assert autobatch.auto_batch_size(stages) == 64 and len(generator.calls) == calls  # no second probe
    saved = json.loads((tmp_path / "batch-sizes.json").read_text())
    (key, entry), = saved.items()
    assert key.startswith("fake|fake|cpu|torch ") and entry["batch_size"] == 64 and entry["probe_steps"] == 2
    assert autobatch.auto_batch_size(stages, limit=8) == 8  # a small run never uses more than its first wave


def test_an_explicit_batch_size_or_an_api_backend_needs_no_probe() -> None:
    from dalle_data.config import build_spec

    the_plan, _ = setup()
    stages = stages_for(the_plan, Timed())
    spec = build_spec({"classes": ["cat"], "per_class": 4, "batch_size": 3})
    assert autobatch.batch_size_for(spec, stages, the_plan) == 3
    api = build_spec({"classes": ["cat"], "per_class": 4, "backend": "openai", "max_concurrency": 12})
    assert autobatch.batch_size_for(api, stages, the_plan) == 12
    from dalle_data.errors import SpecError

    with pytest.raises(SpecError, match="--batch-size"):
        build_spec({"classes": ["cat"], "per_class": 4, "batch_size": "lots"})
