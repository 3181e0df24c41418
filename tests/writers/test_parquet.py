"""Parquet shards: readable by datasets, pyarrow and pandas; atomic; resumable."""

from __future__ import annotations

import errno
import io
import os
from pathlib import Path
from typing import Any

import pytest

from dalle_data.errors import DalleDataError
from dalle_data.records import Record
from dalle_data.writers import ParquetWriter, WriterContext
from dalle_data.writers import base as writers_base
from dalle_data.writers import parquet as parquet_module

from .helpers import CLASS_NAMES, hard_negative, make_ctx, make_record, temp_files


def write_all(ctx: WriterContext, records: list[Record]) -> ParquetWriter:
    writer = ParquetWriter(ctx)
    for record in records:
        writer.write(record)
    writer.close()
    return writer


def shard_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.parquet"))


@pytest.fixture
def written(tmp_path: Path) -> tuple[WriterContext, list[Record]]:
    """Five kept records (one 'a/b', one hard negative) in shards of two."""
    ctx = make_ctx(tmp_path, shard_size=2)
    records = [make_record(0), make_record(1, label_id=1), hard_negative(2), make_record(3), make_record(4)]
    write_all(ctx, records)
    return ctx, records


def test_one_shard_per_shard_size_records_last_one_at_close(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, shard_size=2)
    directory = ctx.out_dir / "parquet" / "train"
    writer = ParquetWriter(ctx)
    for n in range(5):
        writer.write(make_record(n))
    assert shard_names(directory) == ["part-00000.parquet", "part-00001.parquet"]
    writer.close()
    assert shard_names(directory) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert temp_files(ctx.out_dir) == []


def test_each_shard_is_written_in_one_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[Path] = []
    real_open = writers_base.atomic_open

    def counting_open(path: Path) -> Any:
        opened.append(path)
        return real_open(path)

    monkeypatch.setattr("dalle_data.writers.parquet.atomic_open", counting_open)
    write_all(make_ctx(tmp_path, shard_size=3), [make_record(n) for n in range(7)])
    assert [p.name for p in opened] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]


@pytest.mark.parametrize("how", ["data_files", "data_dir"])
def test_load_dataset_gives_image_and_classlabel(
    written: tuple[WriterContext, list[Record]], tmp_path: Path, how: str
) -> None:
    import datasets

    ctx, records = written
    root = ctx.out_dir / "parquet"
    if how == "data_files":
        kwargs: dict[str, Any] = {"data_files": str(root / "train" / "*.parquet")}
    else:
        kwargs = {"data_dir": str(root)}
    ds = datasets.load_dataset("parquet", cache_dir=str(tmp_path / "hf"), **kwargs)["train"]
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"] == datasets.ClassLabel(names=list(CLASS_NAMES))
    assert ds.features["clip_score"] == datasets.Value("float64")
    assert ds.features["kept"] == datasets.Value("bool")
    rows = {row["id"]: row for row in ds}
    assert set(rows) == {r.id for r in records}
    assert rows["rec0001"]["label"] == 1 and rows["rec0001"]["label_name"] == "a/b"
    negative = rows["rec0002"]
    assert (negative["label_name"], negative["role"], negative["imitates"]) == (
        "hard_negative",
        "hard_negative",
        "dalmatian",
    )
    assert rows["rec0000"]["image"].size == (8, 8)  # decoded to PIL
    raw = ds.cast_column("image", datasets.Image(decode=False))
    assert {row["id"]: row["image"]["bytes"] for row in raw} == {r.id: r.image for r in records}


def test_pyarrow_reads_typed_columns_and_exact_bytes(written: tuple[WriterContext, list[Record]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ctx, records = written
    table = pq.read_table(ctx.out_dir / "parquet" / "train")
    assert table.column_names[:4] == ["image", "label", "label_name", "id"]
    assert "label_id" not in table.column_names
    schema = table.schema
    assert schema.field("image").type == pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert schema.field("label").type == pa.int64()
    assert schema.field("seed").type == pa.int64()
    assert schema.field("clip_score").type == pa.float64()
    assert schema.field("kept").type == pa.bool_()
    assert schema.field("source_path").type == pa.string()
    assert b"huggingface" in schema.metadata
    rows = {row["id"]: row for row in table.to_pylist()}
    for record in records:
        assert rows[record.id]["image"]["bytes"] == record.image
        assert rows[record.id]["label"] == record.label_id
        assert rows[record.id]["seed"] == record.seed
        assert rows[record.id]["mask"] is None


def test_pandas_reads_shards(written: tuple[WriterContext, list[Record]]) -> None:
    import pandas as pd
    from PIL import Image

    ctx, records = written
    frame = pd.read_parquet(ctx.out_dir / "parquet" / "train")
    assert len(frame) == len(records)
    assert sorted(frame["label_name"]) == sorted(r.label for r in records)
    first = frame[frame["id"] == "rec0000"].iloc[0]
    assert first["image"]["bytes"] == records[0].image
    assert Image.open(io.BytesIO(first["image"]["bytes"])).size == (8, 8)


def test_rejected_go_apart_only_with_keep_rejected(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    records = [
        make_record(0),
        make_record(1, status="rejected"),
        make_record(2, status="failed"),
        make_record(3, status="refused"),
    ]
    ctx = make_ctx(tmp_path / "keep", keep_rejected=True)
    write_all(ctx, records)
    kept = pq.read_table(ctx.out_dir / "parquet" / "train").to_pylist()
    assert [row["id"] for row in kept] == ["rec0000"]
    rejected = pq.read_table(ctx.out_dir / "rejected" / "parquet" / "part-00000.parquet").to_pylist()
    assert [row["id"] for row in rejected] == ["rec0001"]
    assert rejected[0]["clip_score"] == records[1].clip_score
    assert rejected[0]["reject_reason"] == "clip_score below 0.2"
    assert rejected[0]["image"]["bytes"] == records[1].image

    plain = make_ctx(tmp_path / "drop")
    write_all(plain, records)
    assert not (plain.out_dir / "rejected").exists()


def test_resume_continues_numbering_and_skips_written_ids(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    ctx = make_ctx(tmp_path, shard_size=2)
    write_all(ctx, [make_record(0), make_record(1), make_record(2)])
    write_all(ctx, [make_record(2), make_record(3)])
    directory = ctx.out_dir / "parquet" / "train"
    assert shard_names(directory) == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    ids = pq.read_table(directory).column("id").to_pylist()
    assert sorted(ids) == ["rec0000", "rec0001", "rec0002", "rec0003"]


def test_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    writer = ParquetWriter(make_ctx(tmp_path))
    writer.write(make_record(0))
    writer.close()
    writer.close()
    assert len(shard_names(tmp_path / "out" / "parquet" / "train")) == 1
    with pytest.raises(RuntimeError):
        writer.write(make_record(1))


def test_disk_full_is_one_clear_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)
    ctx = make_ctx(tmp_path, shard_size=1)
    writer = ParquetWriter(ctx)
    with pytest.raises(DalleDataError) as caught:
        writer.write(make_record(0))
    message = str(caught.value)
    assert "\n" not in message
    assert "part-00000.parquet" in message and "free up disk space" in message and "--out" in message
    assert temp_files(ctx.out_dir) == []
    assert shard_names(ctx.out_dir / "parquet" / "train") == []


def test_unwritable_output_dir_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file, not a directory")
    writer = ParquetWriter(make_ctx(tmp_path, shard_size=1))
    with pytest.raises(DalleDataError, match="choose another --out"):
        writer.write(make_record(0))


def test_label_that_does_not_match_class_names_is_a_bug(tmp_path: Path) -> None:
    writer = ParquetWriter(make_ctx(tmp_path))
    with pytest.raises(ValueError, match="class_names"):
        writer.write(make_record(0, label="poodle"))
    with pytest.raises(ValueError, match="label_id"):
        writer.write(make_record(1).replace(label_id=7))


def test_hf_features_match_what_datasets_writes() -> None:
    import datasets

    expected = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.ClassLabel(names=list(CLASS_NAMES)),
            **{name: datasets.Value(dtype) for name, dtype in writers_base.dataset_columns()[1:]},
        }
    )
    assert writers_base.hf_features(CLASS_NAMES) == expected.to_dict()
    assert parquet_module.arrow_schema(CLASS_NAMES).remove_metadata() == expected.arrow_schema.remove_metadata()
