"""`dalle-data generate` end to end with the tiny Kandinsky 2.2 pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import FAST


def read_manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One run with all three text modes and both formats, shared by the checks below."""
    from typer.testing import CliRunner

    from dalle_data.cli import app

    out = tmp_path_factory.mktemp("run") / "out"
    result = CliRunner().invoke(app, [
        "generate", *FAST, "--classes", "dalmatian,golden retriever", "--per-class", "6",
        "--mode", "vanilla=2,style=2,adversarial=2", "--format", "parquet", "--format", "imagefolder",
        "--filter", "none", "--out", str(out), "--json",
    ], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    (out / "stdout.json").write_text(result.stdout)
    return out


def test_summary_counts_every_class_and_mode(full_run: Path) -> None:
    summary = json.loads((full_run / "stdout.json").read_text())
    assert summary["complete"] is True
    assert summary["classes"]["dalmatian"] == {
        "target": 6, "generated": 6, "kept": 6, "rejected": 0, "failed": 0, "acceptance": 1.0, "met": True,
    }
    assert {m: r["kept"] for m, r in summary["modes"].items()} == {"vanilla": 4, "style": 4, "adversarial": 4}
    assert set(summary["stage_seconds"]) == {"generate", "score", "encode", "write"}


def test_parquet_loads_with_datasets_as_image_and_classlabel(full_run: Path) -> None:
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(full_run / "parquet"), split="train")
    assert len(ds) == 12
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == ["dalmatian", "golden retriever", "hard_negative"]
    row = ds[0]
    assert row["image"].size == (64, 64)
    assert ds.features["label"].int2str(row["label"]) == row["label_name"]


def test_hard_negatives_are_labeled_apart_with_the_imitated_class(full_run: Path) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(full_run / "parquet" / "train").to_pylist()
    negatives = [r for r in table if r["role"] == "hard_negative"]
    assert len(negatives) == 4
    assert all(r["label_name"] == "hard_negative" and r["mode"] == "adversarial" for r in negatives)
    assert {r["imitates"] for r in negatives} == {"dalmatian", "golden retriever"}
    assert all(r["imitates"].lower() in r["prompt"].lower() for r in negatives)
    positives = [r for r in table if r["role"] == "positive"]
    assert all(r["imitates"] is None and r["label_name"] in r["prompt"].lower() for r in positives)


def test_every_record_carries_the_design_fields(full_run: Path) -> None:
    from dalle_data.records import METADATA_FIELDS

    rows = read_manifest(full_run)
    assert len(rows) == 12
    for row in rows:
        assert set(METADATA_FIELDS) <= set(row)
        assert row["backend"] == "kandinsky2.2" and row["model"] == "tiny"
        assert row["status"] == "kept" and row["kept"] is True
        assert isinstance(row["seed"], int) and row["width"] == 64
        assert -1.0 <= row["clip_score"] <= 1.0 and 0.0 <= row["class_prob"] <= 1.0
    assert len({r["id"] for r in rows}) == 12
    assert len({r["seed"] for r in rows}) == 12


def test_imagefolder_opens_with_torchvision_and_hf(full_run: Path) -> None:
    import datasets
    from torchvision.datasets import ImageFolder

    tv = ImageFolder(str(full_run / "imagefolder" / "train"))
    assert tv.classes == ["dalmatian", "golden_retriever", "hard_negative"]
    assert len(tv) == 12
    image, target = tv[0]
    assert image.size == (64, 64) and tv.classes[target] == "dalmatian"
    hf = datasets.load_dataset("imagefolder", data_dir=str(full_run / "imagefolder"), split="train")
    assert len(hf) == 12
    assert "image" in hf.features


def test_both_formats_hold_the_same_image_bytes(full_run: Path) -> None:
    import pyarrow.parquet as pq

    for row in pq.read_table(full_run / "parquet" / "train").to_pylist():
        png = full_run / "imagefolder" / "train" / row["class_dir"] / f"{row['id']}.png"
        assert png.read_bytes() == row["image"]["bytes"]


def test_spec_is_saved_and_rerunning_the_same_command_does_nothing(full_run: Path, cli) -> None:
    import yaml

    saved = yaml.safe_load((full_run / "spec.yaml").read_text())
    assert saved["classes"] == ["dalmatian", "golden retriever"] and saved["spec_hash"]
    assert (full_run / "_SUCCESS").exists()
    before = sorted(p.name for p in (full_run / "imagefolder" / "train" / "dalmatian").iterdir())
    result = cli("generate", "--config", full_run / "spec.yaml", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["already_complete"] is True
    assert sorted(p.name for p in (full_run / "imagefolder" / "train" / "dalmatian").iterdir()) == before


def test_same_spec_and_seed_reproduce_images_and_ids(tmp_path: Path, cli) -> None:
    args = ["generate", *FAST, "--classes", "cat", "--per-class", "3", "--filter", "none", "--quiet"]
    assert cli(*args, "--out", tmp_path / "a").exit_code == 0
    assert cli(*args, "--out", tmp_path / "b").exit_code == 0
    assert cli(*args, "--out", tmp_path / "c", "--seed", "1").exit_code == 0

    def images(name: str) -> dict[str, bytes]:
        folder = tmp_path / name / "parquet" / "train"
        import pyarrow.parquet as pq

        return {r["id"]: r["image"]["bytes"] for r in pq.read_table(folder).to_pylist()}

    a, b, c = images("a"), images("b"), images("c")
    assert a == b
    assert set(a).isdisjoint(c)


def test_quota_rounds_reach_the_target_through_the_zero_shot_filter(tmp_path: Path, cli) -> None:
    result = cli("generate", *FAST, "--classes", "cat,dog,car", "--per-class", "2", "--max-attempts", "30",
                 "--out", tmp_path / "o", "--keep-rejected", "--json")
    assert result.exit_code in (0, 3), result.stderr  # 3: a quota was not met (the random tiny scorer)
    summary = json.loads(result.stdout)
    rows = read_manifest(tmp_path / "o")
    for name, row in summary["classes"].items():
        mine = [r for r in rows if r["label"] == name]
        assert row["generated"] == len(mine) <= 30
        kept = [r for r in mine if r["status"] == "kept"]
        assert len(kept) == row["kept"] <= 2
        # The zero-shot filter: a kept image's own class won; a rejected one lost (or was surplus).
        assert all(r["top_class"] == name for r in kept)
        assert all(r["top_class"] != name or r["reject_reason"] == "surplus" for r in mine if not r["kept"])
        assert {r["reject_reason"] for r in mine if not r["kept"]} <= {"zero-shot", "surplus"}
    assert summary["rejections"], "the random tiny scorer should reject some images"
    assert summary["rounds"] >= 2, "rejections must trigger more rounds"
    rejected_files = list((tmp_path / "o" / "rejected" / "parquet").glob("*.parquet"))
    assert rejected_files, "--keep-rejected stores rejected images apart"


def test_min_clip_filter_rejects_below_the_threshold(tmp_path: Path, cli) -> None:
    first = cli("generate", *FAST, "--classes", "cat", "--per-class", "6", "--filter", "none",
                "--out", tmp_path / "all", "--json")
    scores = sorted(r["clip_score"] for r in read_manifest(tmp_path / "all"))
    threshold = (scores[2] + scores[3]) / 2
    result = cli("generate", *FAST, "--classes", "cat", "--per-class", "2", "--filter", "none",
                 "--min-clip", f"{threshold:.6f}", "--max-attempts", "6", "--out", tmp_path / "o", "--json")
    assert first.exit_code == 0 and result.exit_code == 0, result.stderr
    rows = read_manifest(tmp_path / "o")
    assert all(r["clip_score"] >= threshold for r in rows if r["kept"])
    below = [r for r in rows if r["reject_reason"] == "min-clip"]
    assert below and all("min_clip" in r["reject_detail"] for r in below)
    assert json.loads(result.stdout)["classes"]["cat"]["kept"] == 2


def test_unsafe_class_names_stay_labels_and_get_safe_folders(tmp_path: Path, cli) -> None:
    names = ["../x", "a/b", "CON", ".", "ctl\x07char", "é" * 200]
    args = ["generate", *FAST, "--classes-file", tmp_path / "classes.txt", "--per-class", "1",
            "--filter", "none", "--format", "imagefolder", "--out", tmp_path / "o", "--quiet"]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    result = cli(*args)
    assert result.exit_code == 0, result.stderr
    root = (tmp_path / "o").resolve()
    written = [p.resolve() for p in root.rglob("*") if p.is_file()]
    assert written and all(root in p.parents for p in written)
    assert not (tmp_path / "x").exists()
    rows = read_manifest(tmp_path / "o")
    assert sorted(r["label"] for r in rows) == sorted(names)
    dirs = {r["class_dir"] for r in rows}
    assert len(dirs) == len(names)
    assert all(len(d.encode()) <= 255 and "/" not in d and d not in {".", ".."} for d in dirs)


@pytest.mark.parametrize("fmt", ["parquet", "imagefolder"])
def test_training_code_reads_the_output_as_is(full_run: Path, fmt: str) -> None:
    import math
    import runpy

    train = runpy.run_path(str(Path(__file__).parents[2] / "examples" / "train_classifier.py"))["train"]
    loss = train(full_run, fmt, epochs=1)
    assert math.isfinite(loss)


def test_example_spec_runs_with_a_flag_override(tmp_path: Path, cli) -> None:
    spec = Path(__file__).parents[2] / "examples" / "tiny_spec.yaml"
    result = cli("generate", "--config", spec, "--out", tmp_path / "o", "--per-class", "2", "--steps", "2",
                 "--prior-steps", "2", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["kept"] == 4 and summary["labels"] == ["dalmatian", "golden retriever", "hard_negative"]


def test_progress_and_summary_on_a_non_terminal_and_quiet(tmp_path: Path, cli) -> None:
    args = ["generate", *FAST, "--classes", "cat", "--per-class", "2", "--filter", "none"]
    result = cli(*args, "--out", tmp_path / "a")
    assert result.exit_code == 0
    assert "round 1: generated 2, kept 2 (100%)" in result.stderr  # plain lines, no live display, off a TTY
    assert "cat" in result.stdout and "done" in result.stdout and "Parquet:" in result.stdout
    quiet = cli(*args, "--out", tmp_path / "b", "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_rich_progress_renders_per_class_rows() -> None:
    import io

    from rich.console import Console

    from dalle_data.progress import RichProgress

    buffer = io.StringIO()
    progress = RichProgress(Console(file=buffer, force_terminal=True, width=100))
    progress.start({"dalmatian": 10, "cat": 5})
    progress.update("dalmatian", generated=8, kept=6)
    progress.stop()
    text = buffer.getvalue()
    assert "dalmatian" in text and "6/10" in text and "8 made" in text and "img/s" in text
