"""ImageFolder tree: torchvision and datasets read it; atomic; resumable."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from dalle_data.errors import DalleDataError
from dalle_data.records import Record
from dalle_data.writers import ImageFolderWriter, WriterContext, make_writers

from .helpers import CLASS_NAMES, hard_negative, make_ctx, make_record, read_jsonl, temp_files


def write_all(ctx: WriterContext, records: list[Record]) -> None:
    writer = ImageFolderWriter(ctx)
    for record in records:
        writer.write(record)
    writer.close()


@pytest.fixture
def written(tmp_path: Path) -> tuple[WriterContext, list[Record]]:
    """Kept records in three classes ('a/b' lives in folder 'a_b'), plus a failed one."""
    ctx = make_ctx(tmp_path)
    records = [make_record(0), make_record(1), make_record(2, label_id=1), hard_negative(3), hard_negative(4)]
    write_all(ctx, [*records, make_record(5, status="failed")])
    return ctx, records


def test_layout_uses_class_dirs_and_exact_png_bytes(written: tuple[WriterContext, list[Record]]) -> None:
    ctx, records = written
    split = ctx.out_dir / "imagefolder" / "train"
    assert sorted(p.name for p in split.iterdir()) == ["a_b", "dalmatian", "hard_negative", "metadata.jsonl"]
    for record in records:
        assert (split / record.class_dir / f"{record.id}.png").read_bytes() == record.image
    rows = read_jsonl(split / "metadata.jsonl")
    assert [row["file_name"] for row in rows] == [f"{r.class_dir}/{r.id}.png" for r in records]
    ab = rows[2]
    assert (ab["label"], ab["label_name"], ab["class_dir"]) == (1, "a/b", "a_b")
    assert "label_id" not in ab and ab["clip_score"] == records[2].clip_score
    assert rows[3]["imitates"] == "dalmatian" and rows[3]["role"] == "hard_negative"
    assert not (ctx.out_dir / "rejected").exists()


def test_torchvision_imagefolder_reads_split(written: tuple[WriterContext, list[Record]]) -> None:
    from torchvision.datasets import ImageFolder

    ctx, records = written
    folder = ImageFolder(str(ctx.out_dir / "imagefolder" / "train"))
    assert folder.classes == ["a_b", "dalmatian", "hard_negative"]
    assert len(folder) == len(records)
    image, target = folder[0]
    assert image.size == (8, 8)
    assert folder.classes[target] == "a_b"


def test_load_dataset_imagefolder_data_dir(written: tuple[WriterContext, list[Record]], tmp_path: Path) -> None:
    import datasets

    ctx, records = written
    data_dir = str(ctx.out_dir / "imagefolder")
    dsd = datasets.load_dataset("imagefolder", data_dir=data_dir, cache_dir=str(tmp_path / "hf"))
    assert list(dsd) == ["train"]
    ds = dsd["train"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"] == datasets.Value("int64")  # datasets drops folder labels when metadata exists
    assert {"label_name", "clip_score", "role", "imitates", "prompt"} <= set(ds.features)
    rows = {row["id"]: row for row in ds}
    assert set(rows) == {r.id for r in records}
    assert rows["rec0002"]["label"] == 1 and rows["rec0002"]["label_name"] == "a/b"
    assert rows["rec0003"]["imitates"] == "dalmatian"
    assert rows["rec0000"]["image"].size == (8, 8)


def test_load_dataset_from_folder_gives_classlabel(written: tuple[WriterContext, list[Record]], tmp_path: Path) -> None:
    import datasets

    ctx, records = written
    dsd = datasets.load_dataset(str(ctx.out_dir / "imagefolder"), cache_dir=str(tmp_path / "hf"))
    assert list(dsd) == ["train"]
    ds = dsd["train"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"] == datasets.ClassLabel(names=list(CLASS_NAMES))
    assert ds.features["created_at"] == datasets.Value("string")
    assert ds.features["seed"] == datasets.Value("int64")
    rows = {row["id"]: row for row in ds}
    assert ds.features["label"].int2str(rows["rec0002"]["label"]) == "a/b"
    assert rows["rec0000"]["created_at"] == records[0].created_at
    raw = ds.cast_column("image", datasets.Image(decode=False))
    by_id = {row["id"]: row["image"] for row in raw}
    assert all(Path(by_id[r.id]["path"]).read_bytes() == r.image for r in records)


def test_other_split_name_is_the_split(tmp_path: Path) -> None:
    import datasets

    ctx = make_ctx(tmp_path, split="validation")
    write_all(ctx, [make_record(0), make_record(1, label_id=1)])
    dsd = datasets.load_dataset(str(ctx.out_dir / "imagefolder"), cache_dir=str(tmp_path / "hf"))
    assert list(dsd) == ["validation"] and dsd["validation"].num_rows == 2


def test_rejected_live_outside_the_dataset(tmp_path: Path) -> None:
    records = [make_record(0), make_record(1, status="rejected", label_id=1), make_record(2, status="refused")]
    ctx = make_ctx(tmp_path, keep_rejected=True)
    write_all(ctx, records)
    rejected = ctx.out_dir / "rejected" / "imagefolder"
    assert (rejected / "a_b" / "rec0001.png").read_bytes() == records[1].image
    (row,) = read_jsonl(rejected / "metadata.jsonl")
    assert row["file_name"] == "a_b/rec0001.png" and row["status"] == "rejected"
    assert row["clip_score"] == records[1].clip_score and row["class_prob"] == records[1].class_prob
    split = ctx.out_dir / "imagefolder" / "train"
    assert [p.name for p in split.rglob("*.png")] == ["rec0000.png"]
    assert sorted(p.name for p in (ctx.out_dir / "imagefolder").iterdir()) == ["README.md", "train"]


def test_image_is_in_place_before_its_metadata_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(tmp_path)
    writer = ImageFolderWriter(ctx)
    writer.write(make_record(0))
    real_fsync = os.fsync

    def fail_second_image(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fail_second_image)
    with pytest.raises(DalleDataError, match=r"rec0001\.png.*free up disk space"):
        writer.write(make_record(1))
    monkeypatch.setattr(os, "fsync", real_fsync)
    writer.close()
    split = ctx.out_dir / "imagefolder" / "train"
    assert [row["file_name"] for row in read_jsonl(split / "metadata.jsonl")] == ["dalmatian/rec0000.png"]
    assert not (split / "dalmatian" / "rec0001.png").exists()
    assert temp_files(ctx.out_dir) == []


def test_resume_skips_written_files_and_cuts_a_torn_line(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    write_all(ctx, [make_record(0), make_record(1)])
    metadata = ctx.out_dir / "imagefolder" / "train" / "metadata.jsonl"
    with open(metadata, "ab") as handle:
        handle.write(b'{"file_name": "dalmatian/rec00')  # a crash mid-append
    write_all(ctx, [make_record(1), make_record(2)])
    assert [row["id"] for row in read_jsonl(metadata)] == ["rec0000", "rec0001", "rec0002"]


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    writer = ImageFolderWriter(make_ctx(tmp_path))
    writer.write(make_record(0))
    writer.close()
    writer.close()
    with pytest.raises(RuntimeError):
        writer.write(make_record(1))


def test_class_dir_must_match_context(tmp_path: Path) -> None:
    writer = ImageFolderWriter(make_ctx(tmp_path))
    with pytest.raises(ValueError, match="class_dir"):
        writer.write(make_record(0, label_id=1).replace(class_dir="a/b"))


def test_images_are_not_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    def no_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("writers must not decode images")

    monkeypatch.setattr(Image, "open", no_decode)
    ctx = make_ctx(tmp_path, keep_rejected=True)
    for writer in make_writers(["imagefolder", "parquet"], ctx):
        writer.write(make_record(0))
        writer.write(make_record(1, status="rejected"))
        writer.close()
    assert (ctx.out_dir / "parquet" / "train" / "part-00000.parquet").exists()
