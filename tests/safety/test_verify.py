"""`verify` finds damage to a finished run; `verify --repair` (or a rerun of generate) mends it exactly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import copy_run, generate_run

LEGACY = Path(__file__).parents[1] / "fixtures" / "legacy-run"


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_run(tmp_path_factory, "verify", "--classes", "zeta,alpha", "--per-class", "3", "--mode", "vanilla=2,adversarial=1", "--filter", "none", "--shard-size", "3", "--format", "parquet", "--format", "imagefolder")


@pytest.fixture()
def run_dir(base: Path, tmp_path: Path) -> Path:
    return copy_run(base, tmp_path)


def dataset(out: Path) -> dict[str, bytes]:
    """Every file of the dataset and its bytes (the lock file and the run log are not the dataset)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in (".dalle-data.lock", "runlog.jsonl")}


def shard_of_first_png(out: Path) -> tuple[str, list[Path]]:
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    shard = rows[0]["shard"]
    return shard, [out / "imagefolder" / "train" / r["class_dir"] / f"{r['id']}.png" for r in rows if r["shard"] == shard]


def test_a_sound_run_verifies(run_dir: Path, cli) -> None:
    result = cli("verify", run_dir, "--json")
    assert result.exit_code == 0, result.stdout
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["checked"]["records"] == 6 and report["checked"]["images"] == 6


def test_damage_is_found_and_repaired_from_the_other_format(run_dir: Path, cli) -> None:
    reference = dataset(run_dir)
    pngs = sorted(run_dir.glob("imagefolder/train/*/*.png"))
    pngs[0].unlink()
    pngs[1].write_bytes(pngs[1].read_bytes()[:40])  # truncated
    parts = sorted(run_dir.glob("parquet/train/*.parquet"))
    parts[-1].write_bytes(parts[-1].read_bytes()[:200])
    (run_dir / "imagefolder" / "train" / ".tmp-x.png.1.part").write_bytes(b"left by a kill")
    result = cli("verify", run_dir)
    assert result.exit_code == 4
    for needle in ("missing", "damaged", "cannot be read", "temporary file"):
        assert needle in result.stdout, needle
    repaired = cli("verify", run_dir, "--repair")
    assert repaired.exit_code == 0, repaired.stdout + repaired.stderr
    assert dataset(run_dir) == reference
    assert cli("verify", run_dir).exit_code == 0


def test_images_lost_from_every_format_are_regenerated_byte_for_byte(run_dir: Path, cli) -> None:
    reference = dataset(run_dir)
    shard, pngs = shard_of_first_png(run_dir)
    for png in pngs:
        png.unlink(missing_ok=True)
    (run_dir / "parquet" / "train" / f"part-{shard}.parquet").unlink()
    assert "regenerate" in cli("verify", run_dir).stdout
    result = cli("verify", run_dir, "--repair", "--json")
    assert result.exit_code == 0, result.stdout
    assert json.loads(result.stdout)["repaired"]["shards regenerated"] == 1
    assert dataset(run_dir) == reference


def test_a_rerun_of_generate_checks_and_repairs_before_calling_the_run_finished(run_dir: Path, cli) -> None:
    reference = dataset(run_dir)
    shard, pngs = shard_of_first_png(run_dir)
    pngs[0].unlink()
    (run_dir / "parquet" / "train" / f"part-{shard}.parquet").unlink()
    result = cli("generate", "--resume", run_dir, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["already_complete"] is True and summary["repaired"]
    assert dataset(run_dir) == {**reference, "summary.json": dataset(run_dir)["summary.json"]}


def test_a_stray_image_and_a_mislabelled_row_are_found(run_dir: Path, cli) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    reference = dataset(run_dir)
    png = sorted(run_dir.glob("imagefolder/train/zeta/*.png"))[0]
    shutil.copy(png, run_dir / "imagefolder" / "train" / "alpha" / png.name)
    part = sorted(run_dir.glob("parquet/train/*.parquet"))[0]
    table = pq.read_table(part)
    labels = table.column("label").to_pylist()
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array([1 - x if x < 2 else x for x in labels]))
    pq.write_table(table, part)
    result = cli("verify", run_dir)
    assert result.exit_code == 4 and "wrong place" in result.stdout and "is labeled" in result.stdout
    assert cli("verify", run_dir, "--repair").exit_code == 0
    assert dataset(run_dir) == reference


def test_a_run_made_before_labels_json_is_renumbered_by_repair(tmp_path: Path, cli) -> None:
    import datasets
    from torchvision.datasets import ImageFolder

    out = tmp_path / "legacy"
    shutil.copytree(LEGACY, out)
    images = {p.name: p.read_bytes() for p in out.rglob("*.png")}
    result = cli("verify", out)
    assert result.exit_code == 4 and "labels.json is missing" in result.stdout
    assert cli("verify", out, "--repair").exit_code == 0
    labels = json.loads((out / "labels.json").read_text())["labels"]
    assert [(e["id"], e["label"]) for e in labels] == [(0, "alpha"), (1, "zeta")]
    ds = datasets.load_dataset("parquet", data_dir=str(out / "parquet"), split="train", cache_dir=str(tmp_path / "c"))
    assert ds.features["label"].names == ["alpha", "zeta"]
    assert all(ds.features["label"].int2str(r["label"]) == r["label_name"] for r in ds)
    tv = ImageFolder(str(out / "imagefolder" / "train"))
    rows = {json.loads(x)["id"]: json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()}
    assert all(rows[Path(p).stem]["label_id"] == t for p, t in tv.samples)
    assert {p.name: p.read_bytes() for p in out.rglob("*.png")} == images  # not one image changed
    assert cli("verify", out).exit_code == 0
