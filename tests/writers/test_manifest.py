"""The manifest, make_writers, the atomic helper and the package's light import."""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dalle_data.errors import DalleDataError
from dalle_data.records import METADATA_FIELDS
from dalle_data.writers import (
    ImageFolderWriter,
    ManifestWriter,
    NoopWriter,
    ParquetWriter,
    Writer,
    WriterContext,
    atomic_write_bytes,
    make_writers,
)

from .helpers import CLASS_DIRS, CLASS_NAMES, hard_negative, make_ctx, make_record, read_jsonl, temp_files

ALL_STATUSES = [
    make_record(0),
    make_record(1, status="rejected"),
    make_record(2, status="failed"),
    make_record(3, status="refused"),
    hard_negative(4),
]


def test_manifest_has_every_record_without_image_bytes(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    writer = ManifestWriter(ctx)
    for record in ALL_STATUSES:
        writer.write(record)
    writer.close()
    rows = read_jsonl(ctx.out_dir / "manifest.jsonl")
    assert rows == [record.metadata() for record in ALL_STATUSES]
    assert all(tuple(row) == METADATA_FIELDS for row in rows)
    assert rows[2]["error"] == "backend refused the prompt" and rows[2]["clip_score"] is None


def test_manifest_lines_are_flushed_as_they_come(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    writer = ManifestWriter(ctx)
    writer.write(make_record(0))
    writer.write(make_record(1, status="failed"))
    assert [row["id"] for row in read_jsonl(ctx.out_dir / "manifest.jsonl")] == ["rec0000", "rec0001"]
    writer.close()


def test_manifest_appends_across_runs_and_writes_nan_as_null(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    for n in range(2):
        writer = ManifestWriter(ctx)
        writer.write(make_record(n, clip_score=math.nan))
        writer.close()
    rows = read_jsonl(ctx.out_dir / "manifest.jsonl")
    assert [row["id"] for row in rows] == ["rec0000", "rec0001"]
    assert rows[0]["clip_score"] is None


def test_manifest_close_is_idempotent_and_write_after_close_fails(tmp_path: Path) -> None:
    writer = ManifestWriter(make_ctx(tmp_path))
    writer.close()
    writer.close()
    with pytest.raises(RuntimeError):
        writer.write(make_record(0))
    assert not (tmp_path / "out" / "manifest.jsonl").exists()


def test_make_writers_builds_requested_formats_then_manifest(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path, keep_rejected=True)
    writers = make_writers(["imagefolder", "parquet", "imagefolder"], ctx)
    assert [type(w) for w in writers] == [ImageFolderWriter, ParquetWriter, ManifestWriter]
    assert all(isinstance(w, Writer) for w in writers)
    assert [type(w) for w in make_writers([], ctx)] == [ManifestWriter]
    for record in ALL_STATUSES:
        for writer in writers:
            writer.write(record)
    for writer in writers:
        writer.close()
    out = ctx.out_dir
    assert len(read_jsonl(out / "manifest.jsonl")) == len(ALL_STATUSES)
    assert len(read_jsonl(out / "imagefolder" / "train" / "metadata.jsonl")) == 2
    assert len(read_jsonl(out / "rejected" / "imagefolder" / "metadata.jsonl")) == 1
    assert (out / "rejected" / "parquet" / "part-00000.parquet").exists()
    assert sorted(p.name for p in out.iterdir()) == ["imagefolder", "manifest.jsonl", "parquet", "rejected"]


def test_unknown_format_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DalleDataError, match="unknown output format 'tfrecord'; choose from imagefolder, parquet"):
        make_writers(["parquet", "tfrecord"], make_ctx(tmp_path))


def test_noop_writer_discards(tmp_path: Path) -> None:
    writer = NoopWriter()
    for record in ALL_STATUSES:
        writer.write(record)
    writer.close()
    writer.close()
    assert writer.count == len(ALL_STATUSES) and isinstance(writer, Writer)
    with pytest.raises(RuntimeError):
        writer.write(make_record(0))


def test_atomic_write_bytes_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert temp_files(tmp_path) == []


def test_atomic_write_bytes_failure_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def quota(fd: int) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", quota)
    with pytest.raises(DalleDataError) as caught:
        atomic_write_bytes(target, b"new")
    assert str(caught.value).startswith(f"cannot write {target}: ")
    assert "free up disk space or choose another --out directory" in str(caught.value)
    assert target.read_bytes() == b"old"
    assert temp_files(tmp_path) == []


def test_writer_context_checks_its_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        WriterContext(out_dir=tmp_path, class_names=CLASS_NAMES, class_dirs=CLASS_DIRS[:2])
    with pytest.raises(ValueError):
        WriterContext(out_dir=tmp_path, class_names=CLASS_NAMES, class_dirs=CLASS_DIRS, shard_size=0)
    with pytest.raises(ValueError, match="split"):
        WriterContext(out_dir=tmp_path, class_names=CLASS_NAMES, class_dirs=CLASS_DIRS, split="../train")
    ctx = WriterContext(out_dir=str(tmp_path), class_names=list(CLASS_NAMES), class_dirs=list(CLASS_DIRS))  # type: ignore[arg-type]
    assert ctx.out_dir == tmp_path and ctx.class_names == CLASS_NAMES


def test_importing_writers_stays_light() -> None:
    code = (
        "import sys, dalle_data.writers; "
        "heavy = [m for m in ('torch', 'datasets', 'pandas', 'pyarrow', 'PIL') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
