"""ImageFolder tree: torchvision and datasets read it; images per shard, indexes rebuilt whole at close."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from dalle_data.errors import DalleDataError
from dalle_data.records import Record
from dalle_data.writers import ImageFolderWriter, WriterContext, make_writers

from .helpers import (
    CLASS_NAMES,
    SHARD,
    hard_negative,
    make_ctx,
    make_record,
    metadata_only,
    read_jsonl,
    run_writer,
    snapshot,
    temp_files,
)

S0, S1, S2 = "r001-s0000", "r001-s0001", "r002-s0000"


def png_names(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*.png"))


def fail_replace_onto(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make renaming a temporary onto ``name`` fail as on a full disk; other renames work."""
    real_replace = os.replace

    def replace(src: Any, dst: Any) -> None:
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)


@pytest.fixture
def written(tmp_path: Path) -> tuple[WriterContext, list[Record]]:
    """Kept records in three classes ('a/b' lives in folder 'a_b') over two shards, plus a failed one."""
    ctx = make_ctx(tmp_path)
    records = [
        make_record(0, shard=S0),
        make_record(1, shard=S0),
        make_record(2, label_id=1, shard=S0),
        hard_negative(3, shard=S1),
        hard_negative(4, shard=S1),
    ]
    run_writer(ImageFolderWriter(ctx), [*records, make_record(5, status="failed", shard=S1)])
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
    assert [row["shard"] for row in rows] == [S0, S0, S0, S1, S1]
    assert not (ctx.out_dir / "rejected").exists()
    assert temp_files(ctx.out_dir) == []


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
    assert {"label_name", "clip_score", "role", "imitates", "prompt", "shard"} <= set(ds.features)
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
    assert ds.features["shard"] == datasets.Value("string")
    rows = {row["id"]: row for row in ds}
    assert set(rows) == {r.id for r in records}
    assert ds.features["label"].int2str(rows["rec0002"]["label"]) == "a/b"
    assert rows["rec0000"]["created_at"] == records[0].created_at
    raw = ds.cast_column("image", datasets.Image(decode=False))
    by_id = {row["id"]: row["image"] for row in raw}
    assert all(Path(by_id[r.id]["path"]).read_bytes() == r.image for r in records)


def test_other_split_name_is_the_split(tmp_path: Path) -> None:
    import datasets

    ctx = make_ctx(tmp_path, split="validation")
    run_writer(ImageFolderWriter(ctx), [make_record(0), make_record(1, label_id=1)])
    dsd = datasets.load_dataset(str(ctx.out_dir / "imagefolder"), cache_dir=str(tmp_path / "hf"))
    assert list(dsd) == ["validation"] and dsd["validation"].num_rows == 2


def test_rejected_live_outside_the_dataset(tmp_path: Path) -> None:
    records = [make_record(0), make_record(1, status="rejected", label_id=1), make_record(2, status="refused")]
    ctx = make_ctx(tmp_path, keep_rejected=True)
    run_writer(ImageFolderWriter(ctx), records)
    rejected = ctx.out_dir / "rejected" / "imagefolder"
    assert (rejected / "a_b" / "rec0001.png").read_bytes() == records[1].image
    (row,) = read_jsonl(rejected / "metadata.jsonl")
    assert row["file_name"] == "a_b/rec0001.png" and row["status"] == "rejected"
    assert row["clip_score"] == records[1].clip_score and row["class_prob"] == records[1].class_prob
    split = ctx.out_dir / "imagefolder" / "train"
    assert png_names(split) == ["dalmatian/rec0000.png"]
    assert [row["id"] for row in read_jsonl(split / "metadata.jsonl")] == ["rec0000"]
    assert sorted(p.name for p in (ctx.out_dir / "imagefolder").iterdir()) == ["README.md", "train"]


def test_rejected_are_dropped_without_keep_rejected(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    run_writer(ImageFolderWriter(ctx), [make_record(0), make_record(1, status="rejected")])
    assert png_names(ctx.out_dir) == ["imagefolder/train/dalmatian/rec0000.png"]
    assert not (ctx.out_dir / "rejected").exists()


def test_writing_a_shard_again_gives_the_same_files_and_no_duplicates(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, keep_rejected=True)
    records = [make_record(0), make_record(1, label_id=1), make_record(2, status="rejected")]
    ImageFolderWriter(ctx).write(SHARD, records)
    first = snapshot(ctx.out_dir)
    writer = ImageFolderWriter(ctx)  # a resumed run redoes the shard with a fresh writer
    writer.write(SHARD, records)
    assert snapshot(ctx.out_dir) == first
    writer.close(metadata_only(records))
    closed = snapshot(ctx.out_dir)
    split = ctx.out_dir / "imagefolder" / "train"
    assert [row["id"] for row in read_jsonl(split / "metadata.jsonl")] == ["rec0000", "rec0001"]
    assert png_names(split) == ["a_b/rec0001.png", "dalmatian/rec0000.png"]
    writer.write(SHARD, records)
    writer.close(metadata_only(records))
    assert snapshot(ctx.out_dir) == closed


def test_close_indexes_exactly_the_given_records_in_order(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, keep_rejected=True)
    records = [
        make_record(7, shard=S0),
        make_record(3, status="rejected", shard=S0),
        make_record(5, label_id=1, shard=S1),
        make_record(4, status="failed", shard=S1),
        hard_negative(1, shard=S2),
        make_record(2, status="rejected", label_id=1, shard=S2),
    ]
    run_writer(ImageFolderWriter(ctx), records)
    split = ctx.out_dir / "imagefolder" / "train"
    rows = read_jsonl(split / "metadata.jsonl")
    assert [(row["id"], row["shard"]) for row in rows] == [("rec0007", S0), ("rec0005", S1), ("rec0001", S2)]
    assert [row["file_name"] for row in rows] == ["dalmatian/rec0007.png", "a_b/rec0005.png", "hard_negative/rec0001.png"]
    rejected = read_jsonl(ctx.out_dir / "rejected" / "imagefolder" / "metadata.jsonl")
    assert [row["file_name"] for row in rejected] == ["dalmatian/rec0003.png", "a_b/rec0002.png"]


def test_close_builds_the_indexes_from_metadata_only_records(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    records = [make_record(0, shard=S0), make_record(1, label_id=1, shard=S1)]
    first = ImageFolderWriter(ctx)
    for record in records:
        first.write(record.shard, [record])
    # The run was killed before close; the resumed run replays both shards and only closes.
    assert not (ctx.out_dir / "imagefolder" / "train" / "metadata.jsonl").exists()
    ImageFolderWriter(ctx).close(metadata_only(records))
    split = ctx.out_dir / "imagefolder" / "train"
    rows = read_jsonl(split / "metadata.jsonl")
    assert [row["file_name"] for row in rows] == ["dalmatian/rec0000.png", "a_b/rec0001.png"]
    assert (ctx.out_dir / "imagefolder" / "README.md").is_file()
    for record in records:
        assert (split / record.class_dir / f"{record.id}.png").read_bytes() == record.image


def test_close_rebuilds_metadata_whole_not_appended(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    metadata = ctx.out_dir / "imagefolder" / "train" / "metadata.jsonl"
    run_writer(ImageFolderWriter(ctx), [make_record(0, shard=S0)])
    with open(metadata, "ab") as handle:
        handle.write(b'{"file_name": "dalmatian/rec00')  # what a crash mid-append used to leave
    run_writer(ImageFolderWriter(ctx), [make_record(0, shard=S0), make_record(1, shard=S1)])
    assert [row["id"] for row in read_jsonl(metadata)] == ["rec0000", "rec0001"]


def test_close_removes_images_no_record_accounts_for(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, keep_rejected=True)
    split, rejected = ctx.out_dir / "imagefolder" / "train", ctx.out_dir / "rejected" / "imagefolder"
    from dalle_data.rundir.shards import ShardStore

    writer = ImageFolderWriter(ctx)
    # First attempt at S1 kept rec0002 and rec0003, then was cut off; redone, rec0002 is rejected
    # and rec0003 is not there at all (say, its prompt changed). The runner records a shard's ids
    # (its intent) before writing any of its files: that is how rec0003 is known to be the run's.
    writer.write(S0, [make_record(0, shard=S0), make_record(1, status="rejected", shard=S0)])
    ShardStore(ctx.layout).begin(S1, [make_record(2).id, make_record(3).id])
    writer.write(S1, [make_record(2, shard=S1), make_record(3, shard=S1)])
    (split / "a_b").mkdir()
    (split / "a_b" / "orphan.png").write_bytes(b"not ours")
    (rejected / "dalmatian" / "old.png").write_bytes(b"not ours")
    (split / "dalmatian" / "notes.txt").write_text("not an image")
    redone = [make_record(2, status="rejected", shard=S1)]
    writer.write(S1, redone)
    finished = [make_record(0, shard=S0), make_record(1, status="rejected", shard=S0), *redone]
    writer.close(metadata_only(finished))
    # files dalle-data did not write are never touched
    assert png_names(split) == ["a_b/orphan.png", "dalmatian/rec0000.png"]
    assert png_names(rejected) == ["dalmatian/old.png", "dalmatian/rec0001.png", "dalmatian/rec0002.png"]
    assert (split / "dalmatian" / "notes.txt").exists()
    assert [row["id"] for row in read_jsonl(split / "metadata.jsonl")] == ["rec0000"]
    assert [row["id"] for row in read_jsonl(rejected / "metadata.jsonl")] == ["rec0001", "rec0002"]


def test_disk_full_mid_shard_is_one_line_and_the_redone_shard_is_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path)
    split = ctx.out_dir / "imagefolder" / "train"
    records = [make_record(0), make_record(1), make_record(2)]
    with monkeypatch.context() as patch:
        fail_replace_onto(patch, "rec0001.png")
        with pytest.raises(DalleDataError) as caught:
            ImageFolderWriter(ctx).write(SHARD, records)
    message = str(caught.value)
    assert "\n" not in message
    assert "rec0001.png" in message and "free up disk space" in message and "--out" in message
    assert temp_files(ctx.out_dir) == []
    assert png_names(split) == ["dalmatian/rec0000.png"]
    assert not (split / "metadata.jsonl").exists()  # no index points at a missing image
    run_writer(ImageFolderWriter(ctx), records)  # the resumed run redoes the shard
    assert [row["id"] for row in read_jsonl(split / "metadata.jsonl")] == ["rec0000", "rec0001", "rec0002"]
    assert png_names(split) == ["dalmatian/rec0000.png", "dalmatian/rec0001.png", "dalmatian/rec0002.png"]


def test_disk_full_while_indexing_keeps_the_old_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = make_ctx(tmp_path)
    metadata = ctx.out_dir / "imagefolder" / "train" / "metadata.jsonl"
    run_writer(ImageFolderWriter(ctx), [make_record(0)])
    before = metadata.read_bytes()
    fail_replace_onto(monkeypatch, "metadata.jsonl")
    records = [make_record(0, shard=S0), make_record(1, shard=S1)]
    with pytest.raises(DalleDataError, match=r"metadata\.jsonl: .*free up disk space"):
        run_writer(ImageFolderWriter(ctx), records)
    assert metadata.read_bytes() == before
    assert temp_files(ctx.out_dir) == []


def test_record_that_does_not_match_the_context_is_a_bug(tmp_path: Path) -> None:
    writer = ImageFolderWriter(make_ctx(tmp_path))
    with pytest.raises(ValueError, match="class_dir"):
        writer.write(SHARD, [make_record(0, label_id=1).replace(class_dir="a/b")])
    with pytest.raises(ValueError, match="no image bytes"):
        writer.write(SHARD, [make_record(1, image=None)])
    with pytest.raises(ValueError, match="label_id"):
        writer.close([make_record(2, image=None).replace(label_id=7)])
    assert png_names(tmp_path) == []


def test_images_are_not_decoded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    def no_decode(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("writers must not decode images")

    monkeypatch.setattr(Image, "open", no_decode)
    ctx = make_ctx(tmp_path, keep_rejected=True)
    records = [make_record(0), make_record(1, status="rejected")]
    for writer in make_writers(["imagefolder", "parquet"], ctx):
        run_writer(writer, records)
    assert (ctx.out_dir / "parquet" / "train" / f"part-{SHARD}.parquet").exists()
    assert (ctx.out_dir / "imagefolder" / "train" / "dalmatian" / "rec0000.png").read_bytes() == records[0].image


def test_close_with_nothing_left_leaves_no_rows_pointing_at_missing_files(tmp_path) -> None:
    """A redone shard whose images all failed: no stale metadata or card survives."""
    import dataclasses

    from dalle_data.writers import ImageFolderWriter, WriterContext
    from tests.writers.helpers import make_record

    from tests.writers.helpers import CLASS_DIRS, CLASS_NAMES

    ctx = WriterContext(out_dir=tmp_path, class_names=CLASS_NAMES, class_dirs=CLASS_DIRS, keep_rejected=True)
    kept = make_record(0, status="kept", shard="s0")
    rejected = make_record(1, status="rejected", shard="s0")
    writer = ImageFolderWriter(ctx)
    writer.write("s0", [kept, rejected])
    writer.close([kept, rejected])
    failed = [dataclasses.replace(r, status="failed", kept=False, image=None) for r in (kept, rejected)]
    writer.close(failed)
    assert not (tmp_path / "imagefolder" / "train" / "metadata.jsonl").exists()
    assert not (tmp_path / "rejected" / "imagefolder" / "metadata.jsonl").exists()
    assert not (tmp_path / "imagefolder" / "README.md").exists()
    assert not list(tmp_path.rglob("*.png"))
