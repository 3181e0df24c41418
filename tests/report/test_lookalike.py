"""A class the model cannot draw: its kept images look like another entry of a wider vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def test_most_images_nearest_another_entry_make_a_warning_and_a_few_do_not() -> None:
    from dalle_data.analysis.lookalike import look_alikes
    from dalle_data.embeddings import EmbeddingSet
    from tests.writers.helpers import make_record

    names = ["cat", "dog", "car"]
    rows = np.eye(3, dtype=np.float32)
    cats = [make_record(i).replace(label="cat") for i in range(4)]
    dogs = [make_record(10 + i).replace(label="dog") for i in range(4)]
    # the cats: 3 of 4 nearest "car"; the dogs: 1 of 4 nearest "cat" (a minority: no warning)
    x = [rows[2], rows[2], rows[2], rows[0], rows[0], rows[1], rows[1], rows[1]]
    emb = EmbeddingSet([r.id for r in cats + dogs], np.stack(x), np.zeros((8, 2), np.float32), ("cat", "dog"), "s")
    found = look_alikes(cats + dogs, emb, (names, rows, "s"), ["cat", "dog"])
    assert [(f.label, f.images, f.elsewhere, f.nearest) for f in found] == [("cat", 4, 3, "car")]
    assert found[0].warning.startswith("'cat': 3 of 4 images look more like 'car'")
    assert look_alikes(cats + dogs, emb, (names, rows, "another scorer"), ["cat", "dog"]) == [], \
        "embeddings of another scorer are not compared"
    assert look_alikes(cats[:2], emb, (names, rows, "s"), ["cat"]) == [], "two images say nothing"


@pytest.fixture(scope="module")
def dalmatian(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.conftest import generate_run

    return generate_run(tmp_path_factory, "dalmatian", "--model", "shapes-demo", "--steps", "12", "--prior-steps",
                        "4", "--classes", "red circle,blue star,dalmatian", "--per-class", "4", "--batch-size", "4")


def test_shapes_demo_asked_for_a_dalmatian_warns_in_the_report_card_and_ci_gate(dalmatian: Path, cli) -> None:
    report = json.loads((dalmatian / "report" / "report.json").read_text())
    assert [x["label"] for x in report["look_alikes"]] == ["dalmatian"], report["look_alikes"]
    assert report["look_alikes"][0]["elsewhere"] >= 3
    assert report["warnings"][0].startswith("'dalmatian': "), "the first warning"
    assert "look more like" in (dalmatian / "README.md").read_text()
    gate = cli("report", dalmatian, "--fail-if", "lookalike")
    assert gate.exit_code == 5 and "--fail-if lookalike: 'dalmatian'" in gate.stderr, gate.stderr
    vocabulary = np.load(dalmatian / "embeddings" / "text" / "vocabulary.npz")
    names = [str(n) for n in vocabulary["names"]]
    assert names[:3] == ["red circle", "blue star", "dalmatian"] and "yellow star" in names
