"""`dalle-data probe` on planted datasets whose right answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ["stripes", "checks"]


def pattern(cls: str, seed: int) -> Image.Image:
    """Two visually different families with per-image noise: linearly separable in any image embedding."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:32, 0:32]
    base = ((x // 4) % 2) * 200 if cls == "stripes" else (((x // 8) + (y // 8)) % 2) * 200
    img = np.stack([base, np.full_like(base, 60 if cls == "stripes" else 180), 255 - base], -1) + rng.integers(0, 40, (32, 32, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def fake_output(root: Path, n: int, swap_rejected: bool = False, rejected: bool = True) -> Path:
    """A dalle-data output: its run files, kept images in imagefolder, (mislabeled) rejected ones, the manifest."""
    from tests.run_files import write_run_files
    from tests.writers.helpers import make_record

    write_run_files(root, classes=list(CLASSES), per_class=n, model="tiny", keep_rejected=True,
                    formats=["imagefolder"])
    records = []
    sets = [("imagefolder/train", "kept", False), ("rejected/imagefolder", "rejected", swap_rejected)]
    for where, status, swap in sets[:2 if rejected else 1]:
        rows = []
        for c, cls in enumerate(CLASSES):
            label = CLASSES[1 - c] if swap else cls  # the filter caught these: they show the other class
            (root / where / label).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                rid = f"{status}{cls}{i}"
                pattern(cls, 1000 * c + i + (500 if swap else 0)).save(root / where / label / f"{rid}.png")
                record = make_record(0, status=status).replace(id=rid, label=label, label_id=CLASSES.index(label),
                                                               class_dir=label)
                records.append(record)
                rows.append({"file_name": f"{label}/{rid}.png", "label_name": label, "role": "positive"})
        (root / where / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "manifest.jsonl").write_text("".join(json.dumps(r.metadata()) + "\n" for r in records))
    return root


def real_folder(root: Path, n: int, offset: int = 10_000) -> Path:
    for c, cls in enumerate(CLASSES):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            pattern(cls, offset + 1000 * c + i).save(root / cls / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("probe")
    return fake_output(tmp / "out", 12, swap_rejected=True), real_folder(tmp / "test", 10), real_folder(tmp / "train", 6, 20_000)


def test_probe_learns_a_planted_separable_dataset(planted, cli) -> None:
    out, test, real_train = planted
    result = cli("probe", "--train", out, "--test", test, "--real-train", real_train, "--ablate", "filter",
                 "--scorer", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == CLASSES and report["test_images"] == 20
    results = report["results"]
    assert results["synthetic"]["top1"] == 1.0 and results["synthetic"]["train_images"] == 24
    assert results["real"]["top1"] == 1.0 and results["real + synthetic"]["train_images"] == 36
    # The rejected half is mislabeled on purpose: without the filter the probe must do worse.
    assert results["synthetic (unfiltered)"]["train_images"] == 48
    assert results["synthetic (unfiltered)"]["top1"] < results["synthetic"]["top1"]
    assert set(results["zero-shot"]["per_class"]) == set(CLASSES)


def test_ablating_the_filter_of_a_run_that_rejected_nothing_adds_the_same_set(tmp_path: Path, cli) -> None:
    out = fake_output(tmp_path / "out", 6, rejected=False)
    result = cli("probe", "--train", out, "--test", real_folder(tmp_path / "test", 4), "--ablate", "filter",
                 "--scorer", "tiny", "--json")
    assert result.exit_code == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    assert results["synthetic (unfiltered)"]["train_images"] == results["synthetic"]["train_images"] == 12


def test_probe_table_output_names_every_setting(planted, cli) -> None:
    out, test, _ = planted
    result = cli("probe", "--train", out, "--test", test, "--scorer", "tiny")
    assert result.exit_code == 0, result.stderr
    assert "synthetic" in result.stdout and "zero-shot" in result.stdout and "stripes" in result.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--ablate", "colour"], "only ablation is 'filter'"), (["--test", "/nonexistent"], "no such directory")],
)
def test_probe_bad_input(planted, cli, args: list[str], needle: str) -> None:
    out, test, _ = planted
    base = {"--train": str(out), "--test": str(test)}
    for flag in ("--test",):
        if flag in args:
            base.pop(flag)
    flat = [x for kv in base.items() for x in kv]
    result = cli("probe", *flat, "--scorer", "tiny", *args)
    assert result.exit_code != 0 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_probe_needs_a_dalle_data_output(tmp_path, cli) -> None:
    (tmp_path / "x").mkdir()
    result = cli("probe", "--train", tmp_path / "x", "--test", tmp_path, "--scorer", "tiny")
    assert result.exit_code == 2 and "holds no dalle-data run" in result.stderr and len(result.stderr.splitlines()) == 1
