"""Parquet shards: one file per shard of work, read by datasets, pyarrow and pandas; atomic; idempotent."""

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

from .helpers import (
    CLASS_NAMES,
    SHARD,
    hard_negative,
    make_ctx,
    make_record,
    metadata_only,
    run_writer,
    snapshot,
    temp_files,
)

S0, S1, S2 = "r001-s0000", "r001-s0001", "r002-s0000"


def shard_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.parquet"))


def ids_in(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(path).column("id").to_pylist()


@pytest.fixture
def written(tmp_path: Path) -> tuple[WriterContext, list[Record]]:
    """Five kept records (one 'a/b', one hard negative) in two shards; a failed one in the second."""
    ctx = make_ctx(tmp_path)
    kept = [
        make_record(0, shard=S0),
        make_record(1, label_id=1, shard=S0),
        hard_negative(2, shard=S0),
        make_record(3, shard=S1),
        make_record(4, shard=S1),
    ]
    run_writer(ParquetWriter(ctx), [*kept, make_record(5, status="failed", shard=S1)])
    return ctx, kept


def test_one_file_per_shard_named_by_the_shard(written: tuple[WriterContext, list[Record]]) -> None:
    ctx, _ = written
    directory = ctx.out_dir / "parquet" / "train"
    assert shard_names(directory) == [f"part-{S0}.parquet", f"part-{S1}.parquet"]
    assert ids_in(directory / f"part-{S0}.parquet") == ["rec0000", "rec0001", "rec0002"]
    assert ids_in(directory / f"part-{S1}.parquet") == ["rec0003", "rec0004"]  # the failed one is not there
    assert temp_files(ctx.out_dir) == []


def test_each_shard_is_written_in_one_go_through_a_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    ctx = make_ctx(tmp_path)
    writer = ParquetWriter(ctx)
    writer.write(S0, [make_record(n, shard=S0) for n in range(3)])
    writer.write(S1, [make_record(n, shard=S1) for n in range(3, 7)])
    directory = ctx.out_dir / "parquet" / "train"
    assert [dst for _, dst in replaced] == [directory / f"part-{S0}.parquet", directory / f"part-{S1}.parquet"]
    for src, dst in replaced:
        assert src.parent == dst.parent
        assert src.name == f".tmp-{dst.name}.{os.getpid()}.part"


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
    assert ds.features["shard"] == datasets.Value("string")
    rows = {row["id"]: row for row in ds}
    assert set(rows) == {r.id for r in records}
    assert rows["rec0001"]["label"] == 1 and rows["rec0001"]["label_name"] == "a/b"
    assert rows["rec0003"]["shard"] == S1
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
    assert schema.field("shard").type == pa.string()
    assert b"huggingface" in schema.metadata
    rows = {row["id"]: row for row in table.to_pylist()}
    for record in records:
        assert rows[record.id]["image"] == {"bytes": record.image, "path": f"{record.id}.png"}
        assert rows[record.id]["label"] == record.label_id
        assert rows[record.id]["seed"] == record.seed
        assert rows[record.id]["shard"] == record.shard
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
    run_writer(ParquetWriter(ctx), records)
    assert ids_in(ctx.out_dir / "parquet" / "train" / f"part-{SHARD}.parquet") == ["rec0000"]
    assert shard_names(ctx.out_dir / "rejected" / "parquet") == [f"part-{SHARD}.parquet"]
    rejected = pq.read_table(ctx.out_dir / "rejected" / "parquet" / f"part-{SHARD}.parquet").to_pylist()
    assert [row["id"] for row in rejected] == ["rec0001"]
    assert rejected[0]["clip_score"] == records[1].clip_score
    assert rejected[0]["reject_reason"] == "clip_score below 0.2"
    assert rejected[0]["image"]["bytes"] == records[1].image

    plain = make_ctx(tmp_path / "drop")
    run_writer(ParquetWriter(plain), records)
    assert shard_names(plain.out_dir / "parquet" / "train") == [f"part-{SHARD}.parquet"]
    assert not (plain.out_dir / "rejected").exists()


def test_shard_with_nothing_kept_writes_no_file(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, keep_rejected=True)
    writer = ParquetWriter(ctx)
    writer.write(S0, [make_record(0, shard=S0)])
    writer.write(S1, [make_record(1, status="rejected", shard=S1), make_record(2, status="failed", shard=S1)])
    writer.write(S2, [make_record(3, status="refused", shard=S2)])
    assert shard_names(ctx.out_dir / "parquet" / "train") == [f"part-{S0}.parquet"]
    assert shard_names(ctx.out_dir / "rejected" / "parquet") == [f"part-{S1}.parquet"]


def test_writing_a_shard_again_gives_the_same_file_and_no_duplicates(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, keep_rejected=True)
    records = [make_record(0), make_record(1, label_id=1), make_record(2, status="rejected")]
    writer = ParquetWriter(ctx)
    writer.write(SHARD, records)
    first = snapshot(ctx.out_dir)
    ParquetWriter(ctx).write(SHARD, records)  # a resumed run redoes the shard with a fresh writer
    assert snapshot(ctx.out_dir) == first
    assert sorted(first) == [f"parquet/train/part-{SHARD}.parquet", f"rejected/parquet/part-{SHARD}.parquet"]
    writer.close(metadata_only(records))
    assert ids_in(ctx.out_dir / "parquet" / "train") == ["rec0000", "rec0001"]
    assert ids_in(ctx.out_dir / "rejected" / "parquet") == ["rec0002"]


def test_redoing_a_shard_replaces_its_file(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    writer = ParquetWriter(ctx)
    writer.write(SHARD, [make_record(0), make_record(1)])
    redone = [make_record(0), make_record(1, status="rejected"), make_record(2)]
    writer.write(SHARD, redone)
    writer.close(metadata_only(redone))
    assert ids_in(ctx.out_dir / "parquet" / "train" / f"part-{SHARD}.parquet") == ["rec0000", "rec0002"]


def test_close_removes_shard_files_no_finished_shard_accounts_for(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, keep_rejected=True)
    train, rejected = ctx.out_dir / "parquet" / "train", ctx.out_dir / "rejected" / "parquet"
    from dalle_data.rundir.shards import ShardStore

    writer = ParquetWriter(ctx)
    # An earlier, interrupted attempt left shard files that the finished run no longer has
    # (the runner records each shard's intent before its files: S2's tells it was the run's).
    writer.write(S0, [make_record(0, shard=S0), make_record(1, status="rejected", shard=S0)])
    writer.write(S1, [make_record(2, shard=S1), make_record(3, status="rejected", shard=S1)])
    ShardStore(ctx.layout).begin(S2, [make_record(4).id])
    writer.write(S2, [make_record(4, shard=S2)])
    (train / "notes.txt").write_text("not a shard")
    (train / "part-mine.parquet").write_bytes(b"a user's own file, named like a shard")
    kept_bytes = (train / f"part-{S0}.parquet").read_bytes()
    # The finished run: S0 as before, S1 redone with nothing kept nor rejected, no S2 at all.
    finished = [
        make_record(0, shard=S0),
        make_record(1, status="rejected", shard=S0),
        make_record(2, status="failed", shard=S1),
        make_record(3, status="refused", shard=S1),
    ]
    writer.close(metadata_only(finished))
    assert shard_names(train) == sorted([f"part-{S0}.parquet", "part-mine.parquet"])
    assert shard_names(rejected) == [f"part-{S0}.parquet"]
    assert (train / f"part-{S0}.parquet").read_bytes() == kept_bytes
    assert (train / "notes.txt").exists()


def test_close_needs_no_image_bytes_and_leaves_written_shards_alone(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    records = [make_record(0, shard=S0), make_record(1, shard=S1)]
    for record in records:
        ParquetWriter(ctx).write(record.shard, [record])
    before = snapshot(ctx.out_dir)
    ParquetWriter(ctx).close(metadata_only(records))  # a resumed run that only replays finished shards
    ParquetWriter(ctx).close(metadata_only(records))
    assert snapshot(ctx.out_dir) == before


def test_disk_full_is_one_clear_line_and_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(src: Any, dst: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full_disk)
    ctx = make_ctx(tmp_path)
    with pytest.raises(DalleDataError) as caught:
        ParquetWriter(ctx).write(SHARD, [make_record(0)])
    message = str(caught.value)
    assert "\n" not in message
    assert f"part-{SHARD}.parquet" in message and "free up disk space" in message and "--out" in message
    assert temp_files(ctx.out_dir) == []
    assert shard_names(ctx.out_dir / "parquet" / "train") == []


def test_unwritable_output_dir_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("a file, not a directory")
    with pytest.raises(DalleDataError, match="choose another --out"):
        ParquetWriter(make_ctx(tmp_path)).write(SHARD, [make_record(0)])


def test_record_that_does_not_match_the_context_is_a_bug(tmp_path: Path) -> None:
    writer = ParquetWriter(make_ctx(tmp_path))
    with pytest.raises(ValueError, match="class_names"):
        writer.write(SHARD, [make_record(5), make_record(0, label="poodle")])
    with pytest.raises(ValueError, match="label_id"):
        writer.write(SHARD, [make_record(1).replace(label_id=7)])
    with pytest.raises(ValueError, match="no image bytes"):
        writer.write(SHARD, [make_record(2, image=None)])
    assert not (tmp_path / "out" / "parquet").exists()  # a shard with a bad record writes nothing


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
