"""The quota loop with stand-in stages: rounds, surplus, budgets, hard negatives."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

from dalle_data.config import build_spec
from dalle_data.generators.base import GenerationSettings
from dalle_data.execution import Driver, Ledger, LocalExecutor, Stages
from dalle_data.planning import plan
from dalle_data.summary import summarize
from dalle_data.scoring.clip import ScoreBatch
from dalle_data.scoring.filters import ClipFilter
from dalle_data.writers import NoopWriter

SETTINGS = GenerationSettings(width=8, height=8, num_inference_steps=1, prior_num_inference_steps=1)


class SeedColorGenerator:
    """A gradient whose first pixel comes from the seed, so scores can depend on the seed."""

    backend = "fake"
    model = "fake"
    defaults = SETTINGS

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings) -> list[Image.Image]:
        self.calls.append(len(prompt))
        images = []
        for s in seeds:
            array = np.tile(np.arange(settings.width, dtype=np.uint8) * 16, (settings.height, 1))
            array = np.stack([array] * 3, axis=-1)
            array[0, 0, 0] = s % 256  # the scorer below reads this pixel
            images.append(Image.fromarray(array))
        return images


class RuleScorer:
    """Own class wins when the image's red channel is even (about half the time)."""

    name = "rule"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = tuple(labels)

    def score(self, images, prompts) -> ScoreBatch:
        probs = []
        for image, prompt in zip(images, prompts):
            row = np.full(len(self.labels), 0.1)
            own = next(i for i, label in enumerate(self.labels) if label in prompt.lower())
            row[own if image.getpixel((0, 0))[0] % 2 == 0 else (own + 1) % len(self.labels)] = 0.9
            probs.append(row / row.sum())
        return ScoreBatch(clip_score=[0.3] * len(images), probs=np.array(probs), labels=self.labels)


def run(spec_values: dict, batch_size: int = 4):
    spec = build_spec({"classes": ["cat", "dog"], **spec_values})
    the_plan = plan(spec)
    generator = SeedColorGenerator()
    writer = NoopWriter()
    stages = Stages(generator, RuleScorer(the_plan.zero_shot_labels()), ClipFilter(zero_shot=True), SETTINGS)
    ledger = Ledger(the_plan.slots())
    stats = Driver(LocalExecutor(stages, batch_size=batch_size), [writer], None, shard_size=64).run(ledger)
    return (ledger, stats), generator, writer


def test_rounds_continue_until_every_quota_is_met() -> None:
    (ledger, stats), generator, writer = run({"per_class": 5})
    summary = summarize(ledger, stats)
    assert summary["complete"]
    assert {c: r["kept"] for c, r in summary["classes"].items()} == {"cat": 5, "dog": 5}
    assert summary["rounds"] >= 2
    assert writer.count == summary["generated"] == sum(generator.calls)
    assert max(generator.calls) <= 4


def test_budget_caps_generation_and_reports_short_quotas() -> None:
    (ledger, stats), _, _ = run({"per_class": 5, "max_attempts": 6})
    summary = summarize(ledger, stats)
    assert all(r["generated"] <= 6 for r in summary["classes"].values())
    assert not summary["complete"] and any(not r["met"] for r in summary["classes"].values())


def test_exactly_n_kept_even_when_more_pass() -> None:
    (ledger, _), _, _ = run({"per_class": 3}, batch_size=64)
    for slot in ledger.slots.values():
        assert slot.kept == 3


def test_same_spec_same_units_whatever_the_batch_size() -> None:
    (a, _), _, _ = run({"per_class": 4}, batch_size=1)
    (b, _), _, _ = run({"per_class": 4}, batch_size=16)
    assert [(s.generated, s.kept) for s in a.slots.values()] == [(s.generated, s.kept) for s in b.slots.values()]


def test_zero_shot_filter_semantics_for_positives_and_hard_negatives() -> None:
    labels = ("dalmatian", "car")
    f = ClipFilter(zero_shot=True)
    dal, car = np.array([0.8, 0.2]), np.array([0.2, 0.8])
    assert f(clip_score=0.3, probs=dal, labels=labels, target="dalmatian", hard_negative=False).passed
    assert not f(clip_score=0.3, probs=car, labels=labels, target="dalmatian", hard_negative=False).passed
    assert f(clip_score=0.3, probs=car, labels=labels, target="dalmatian", hard_negative=True).passed
    verdict = f(clip_score=0.3, probs=dal, labels=labels, target="dalmatian", hard_negative=True)
    assert not verdict.passed and "not a hard negative" in verdict.reason
    strict = ClipFilter(min_clip=0.5, zero_shot=False)
    assert not strict(clip_score=0.3, probs=dal, labels=labels, target="dalmatian", hard_negative=False).passed


def test_single_class_runs_add_a_negative_vocabulary() -> None:
    spec = build_spec({"classes": ["dog"], "per_class": 1})
    labels = plan(spec).zero_shot_labels()
    assert labels[0] == "dog" and len(labels) > 10 and "dog" not in labels[1:]
