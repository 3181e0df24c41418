"""The manifest, make_writers, the no-op writer, the safe file helpers and the package's light import."""

from __future__ import annotations

import errno
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dalle_data.errors import DalleDataError, OutputDirError
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
from dalle_data.writers.base import (
    append_jsonl,
    remove_temporaries,
    temp_path,
    write_jsonl,
)

from .helpers import (
    CLASS_DIRS,
    CLASS_NAMES,
    hard_negative,
    make_ctx,
    make_record,
    metadata_only,
    read_jsonl,
    run_writer,
    temp_files,
)

S0, S1 = "r001-s0000", "r001-s0001"

ALL_STATUSES = [
    make_record(0, shard=S0),
    make_record(1, status="rejected", shard=S0),
    make_record(2, status="failed", shard=S0),
    make_record(3, status="refused", shard=S1),
    hard_negative(4, shard=S1),
]


def test_manifest_has_every_record_in_order_without_image_bytes(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    run_writer(ManifestWriter(ctx), ALL_STATUSES)
    rows = read_jsonl(ctx.out_dir / "manifest.jsonl")
    assert rows == [record.metadata() for record in ALL_STATUSES]
    assert all(tuple(row) == METADATA_FIELDS for row in rows)
    assert [row["shard"] for row in rows] == [S0, S0, S0, S1, S1]
    assert rows[2]["error"] == "backend refused the prompt" and rows[2]["clip_score"] is None


def test_manifest_is_written_whole_at_close(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    manifest = ctx.out_dir / "manifest.jsonl"
    writer = ManifestWriter(ctx)
    writer.write(S0, ALL_STATUSES[:3])
    assert not manifest.exists()  # while the run goes, the runner's shard records are the log
    writer.close(metadata_only(ALL_STATUSES[:3]))
    assert [row["id"] for row in read_jsonl(manifest)] == ["rec0000", "rec0001", "rec0002"]
    # A resumed run closes again with every finished shard: rebuilt, not appended to.
    ManifestWriter(ctx).close(metadata_only(ALL_STATUSES))
    assert [row["id"] for row in read_jsonl(manifest)] == [r.id for r in ALL_STATUSES]
    assert temp_files(ctx.out_dir) == []


def test_manifest_writes_nan_and_infinity_as_null(tmp_path: Path) -> None:
    ctx = make_ctx(tmp_path)
    ManifestWriter(ctx).close([make_record(0, clip_score=math.nan, class_prob=math.inf, image=None)])
    (row,) = read_jsonl(ctx.out_dir / "manifest.jsonl")
    assert row["clip_score"] is None and row["class_prob"] is None


def test_make_writers_builds_requested_formats_then_manifest(tmp_path: Path) -> None:
    from dalle_data.embeddings import EmbeddingWriter

    ctx = make_ctx(tmp_path, keep_rejected=True)
    writers = make_writers(["imagefolder", "parquet", "imagefolder"], ctx)
    assert [type(w) for w in writers] == [ImageFolderWriter, ParquetWriter, EmbeddingWriter, ManifestWriter]
    assert all(isinstance(w, Writer) for w in writers)
    assert [type(w) for w in make_writers([], ctx)] == [EmbeddingWriter, ManifestWriter]
    for writer in writers:
        run_writer(writer, ALL_STATUSES)
    out = ctx.out_dir
    assert len(read_jsonl(out / "manifest.jsonl")) == len(ALL_STATUSES)
    assert len(read_jsonl(out / "imagefolder" / "train" / "metadata.jsonl")) == 2
    assert len(read_jsonl(out / "rejected" / "imagefolder" / "metadata.jsonl")) == 1
    assert sorted(p.name for p in (out / "parquet" / "train").iterdir()) == [f"part-{S0}.parquet", f"part-{S1}.parquet"]
    assert sorted(p.name for p in (out / "rejected" / "parquet").iterdir()) == [f"part-{S0}.parquet"]
    assert sorted(p.name for p in out.iterdir()) == ["imagefolder", "manifest.jsonl", "parquet", "rejected"]


def test_unknown_format_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(DalleDataError, match="unknown output format 'tfrecord'; choose from imagefolder, parquet"):
        make_writers(["parquet", "tfrecord"], make_ctx(tmp_path))


def test_noop_writer_counts_and_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    writer = NoopWriter()
    assert isinstance(writer, Writer)
    run_writer(writer, ALL_STATUSES)
    assert writer.count == len(ALL_STATUSES) and writer.shards == [S0, S1]
    assert list(tmp_path.iterdir()) == []


def test_atomic_write_bytes_replaces_whole_file_through_a_hidden_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    replaced: list[tuple[Path, Path]] = []
    real_replace = os.replace

    def spy(src: Any, dst: Any) -> None:
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert replaced == [(tmp_path / f".tmp-a.bin.{os.getpid()}.part", target)]
    assert temp_path(target) == replaced[0][0]
    assert temp_files(tmp_path) == []


def test_atomic_write_bytes_failure_keeps_old_file_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")

    def quota(fd: int) -> None:
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(os, "fsync", quota)
    with pytest.raises(OutputDirError) as caught:
        atomic_write_bytes(target, b"new")
    assert str(caught.value).startswith(f"cannot write {target}: ")
    assert "free up disk space or choose another --out directory" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert target.read_bytes() == b"old"
    assert temp_files(tmp_path) == []


def test_write_jsonl_writes_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "rows.jsonl"
    write_jsonl(path, [{"a": 1, "b": "é"}, {"a": 2, "b": None}])
    write_jsonl(path, [{"a": 3, "b": math.nan}])
    assert path.read_text(encoding="utf-8") == '{"a":3,"b":null}\n'
    assert temp_files(tmp_path) == []


def test_append_jsonl_adds_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "log.jsonl"
    append_jsonl(path, {"event": "start", "n": 1})
    append_jsonl(path, {"event": "stop", "score": math.inf})
    assert read_jsonl(path) == [{"event": "start", "n": 1}, {"event": "stop", "score": None}]


def test_append_jsonl_disk_error_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def read_only(*args: Any, **kwargs: Any) -> int:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    path = tmp_path / "log.jsonl"
    with monkeypatch.context() as patch, pytest.raises(OutputDirError) as caught:
        patch.setattr(os, "open", read_only)
        append_jsonl(path, {"event": "start"})
    message = str(caught.value)
    assert message.startswith(f"cannot write {path}: ") and "\n" not in message
    assert "check its permissions or choose another --out directory" in message


def test_remove_temporaries_deletes_temporaries_and_nothing_else(tmp_path: Path) -> None:
    keep = [
        tmp_path / "manifest.jsonl",
        tmp_path / "imagefolder" / "train" / "dalmatian" / "rec0000.png",
        tmp_path / "parquet" / "train" / "part-r001-s0000.parquet",
        tmp_path / "notes.tmp-1.part",
        tmp_path / "tmp-2.part",
        tmp_path / ".hidden",
    ]
    leftovers = [
        temp_path(tmp_path / "manifest.jsonl"),
        temp_path(tmp_path / "imagefolder" / "train" / "dalmatian" / "rec0001.png"),
        temp_path(tmp_path / "parquet" / "train" / "part-r001-s0001.parquet"),
    ]
    for path in keep + leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    assert remove_temporaries(tmp_path) == len(leftovers)
    assert all(path.exists() for path in keep)
    assert not any(path.exists() for path in leftovers)
    assert remove_temporaries(tmp_path) == 0
    assert remove_temporaries(tmp_path / "missing") == 0


def test_writer_context_checks_its_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        WriterContext(out_dir=tmp_path, class_names=CLASS_NAMES, class_dirs=CLASS_DIRS[:2])
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
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
