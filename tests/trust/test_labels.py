"""One label map everywhere: every loader yields the record's own label, whatever the class order."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST

pytestmark = pytest.mark.slow

# Given out of order, and with names that sort differently once made safe:
# "Zeta" < "alpha" as names but "alpha" < "zeta" as folders; "a b" < "a.c" as names, "a.c" < "a_b" as folders;
# "x/y" becomes the folder "x_y"; "Ärger" keeps its umlaut (a unicode folder, sorted by code point).
CLASSES = ("Zeta", "alpha", "a b", "a.c", "x/y", "Ärger")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from dalle_data.cli import app

    out = tmp_path_factory.mktemp("labels") / "out"
    result = CliRunner().invoke(app, [
        "generate", *FAST, "--classes", ",".join(CLASSES), "--per-class", "3", "--mode", "vanilla=2,adversarial=1",
        "--filter", "none", "--format", "parquet", "--format", "imagefolder", "--out", str(out), "--quiet",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return out


def records(out: Path) -> dict[str, dict]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows if r["status"] == "kept"}


def label_map(out: Path) -> list[dict]:
    return json.loads((out / "labels.json").read_text())["labels"]


def test_labels_json_numbers_the_sorted_folders(run: Path) -> None:
    entries = label_map(run)
    assert [e["id"] for e in entries] == list(range(len(entries)))
    assert [e["folder"] for e in entries] == sorted(e["folder"] for e in entries)
    assert {e["label"] for e in entries} == set(CLASSES) | {"hard_negative"}
    assert {e["label"]: e["role"] for e in entries}["hard_negative"] == "hard_negative"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["labels"] == [e["label"] for e in entries]


def test_every_loader_yields_the_records_label(run: Path, tmp_path: Path) -> None:
    import datasets
    from torchvision.datasets import ImageFolder

    truth = records(run)
    entries = label_map(run)
    by_id = {e["id"]: e["label"] for e in entries}
    by_folder = {e["folder"]: e["label"] for e in entries}
    assert len(truth) == 3 * len(CLASSES)
    cache = str(tmp_path / "hf-cache")

    parquet = datasets.load_dataset("parquet", data_dir=str(run / "parquet"), split="train", cache_dir=cache)
    got = {row["id"]: parquet.features["label"].int2str(row["label"]) for row in parquet}
    assert got == {i: r["label"] for i, r in truth.items()}, "Parquet ClassLabel"

    card = datasets.load_dataset(str(run / "imagefolder"), split="train", cache_dir=cache)
    got = {row["id"]: card.features["label"].int2str(row["label"]) for row in card}
    assert got == {i: r["label"] for i, r in truth.items()}, "load_dataset(OUT/imagefolder)"

    plain = datasets.load_dataset("imagefolder", data_dir=str(run / "imagefolder"), split="train", cache_dir=cache)
    got = {row["id"]: by_id[row["label"]] for row in plain}
    assert got == {i: r["label"] for i, r in truth.items()}, "imagefolder + labels.json ids"

    tv = ImageFolder(str(run / "imagefolder" / "train"))
    assert tv.classes == [e["folder"] for e in entries]
    got = {Path(path).stem: by_folder[tv.classes[target]] for path, target in tv.samples}
    assert got == {i: r["label"] for i, r in truth.items()}, "torchvision ImageFolder"
    assert {Path(path).stem: target for path, target in tv.samples} == {i: r["label_id"] for i, r in truth.items()}

    for row in map(json.loads, (run / "imagefolder" / "train" / "metadata.jsonl").read_text().splitlines()):
        assert by_id[row["label"]] == row["label_name"] == truth[row["id"]]["label"]


def test_adversarial_images_are_filed_under_the_hard_negative_entry(run: Path) -> None:
    entries = {e["label"]: e for e in label_map(run)}
    for record in records(run).values():
        entry = entries[record["label"]]
        assert record["label_id"] == entry["id"] and record["class_dir"] == entry["folder"]
        if record["mode"] == "adversarial":
            assert record["label"] == "hard_negative" and record["imitates"] in CLASSES


def test_a_marker_from_a_run_numbered_in_class_order_is_renumbered_on_replay(tmp_path: Path) -> None:
    """Runs made before labels.json numbered labels in the order given; their markers still replay right."""
    from dalle_data.labels import LabelMap
    from dalle_data.rundir import Layout
    from dalle_data.rundir.shards import ShardStore
    from tests.writers.helpers import make_record

    labels = LabelMap.build(["zeta", "alpha"])
    old = make_record(1, 0).replace(label="zeta", label_id=0, class_dir="zeta")  # zeta was 0 in class order
    store = ShardStore(Layout(tmp_path), labels)
    store.commit("r001-s0000", [old])
    (record,) = store.load("r001-s0000", [old.id])
    assert (record.label, record.label_id, record.class_dir) == ("zeta", 1, "zeta")
