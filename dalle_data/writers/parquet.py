"""Parquet shards that ``datasets``, pyarrow and pandas read as they are.

Layout (``OUT`` is the run's output directory)::

    OUT/parquet/<split>/part-00000.parquet     kept records, shard_size rows each
    OUT/parquet/<split>/part-00001.parquet     ... the last shard is written at close
    OUT/rejected/parquet/part-00000.parquet    rejected records (only with keep_rejected)

Columns, in order: ``image`` (struct ``{bytes: binary, path: string}``, the
record's exact PNG bytes and ``"<id>.png"``), ``label`` (int64, the label id),
``label_name`` (string, the class name), then every other ``Record`` field
except ``label_id`` in declaration order, typed (float64 scores, int64
seed/width/height, bool ``kept``, nullable strings). The Arrow schema metadata
carries the Hugging Face features under the ``huggingface`` key, so::

    datasets.load_dataset("parquet", data_dir="OUT/parquet")

gives ``image`` as ``Image()`` (decodes to PIL) and ``label`` as
``ClassLabel(names=class_names)``. ``pyarrow.parquet.read_table`` and
``pandas.read_parquet`` read the same files (``image`` is then a dict).

Rows are buffered and each shard is written once, atomically (temporary file,
fsync, rename), in row groups of 100 images. Shard numbers continue after the
shards already in the directory, and ids already in those shards are skipped,
so a resumed run neither overwrites nor duplicates. Records still buffered
when the process dies are lost from Parquet (they are in the manifest).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.records import Record
from dalle_data.writers.base import (
    WriterContext,
    atomic_open,
    dataset_columns,
    dataset_row,
    destination,
    ensure_dir,
    hf_features,
)

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

ROW_GROUP_SIZE = 100  # what datasets uses for image data: fast random access
_SHARD_NAME = re.compile(r"^part-(\d+)\.parquet$")


def arrow_schema(class_names: tuple[str, ...]) -> pa.Schema:
    """The shard schema, with the Hugging Face features in its metadata."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    fields = [pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))]
    fields += [pa.field(name, types[dtype]) for name, dtype in dataset_columns()]
    hf_meta = json.dumps({"info": {"features": hf_features(class_names)}})
    return pa.schema(fields, metadata={"huggingface": hf_meta})


class _ShardSink:
    """Buffers records for one directory and writes ``part-NNNNN.parquet`` shards."""

    def __init__(self, directory: Path, class_names: tuple[str, ...], shard_size: int) -> None:
        self.directory = directory
        self.class_names = class_names
        self.shard_size = shard_size
        self.buffer: list[Record] = []
        self.shards_written = 0
        self._next_index: int | None = None
        self._seen: set[str] = set()
        self._schema: pa.Schema | None = None

    def add(self, record: Record) -> None:
        if self._next_index is None:
            self._open()
        if record.id in self._seen:
            logger.debug("%s: %s is already written, skipping", self.directory, record.id)
            return
        self._seen.add(record.id)
        self.buffer.append(record)
        if len(self.buffer) >= self.shard_size:
            self.flush()

    def _open(self) -> None:
        """Find the next free shard number and the ids already on disk."""
        import pyarrow.parquet as pq

        ensure_dir(self.directory)
        indices = [-1]
        for path in self.directory.iterdir():
            match = _SHARD_NAME.match(path.name)
            if match:
                indices.append(int(match.group(1)))
                self._seen.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
        self._next_index = max(indices) + 1
        if self._seen:
            logger.info("%s: continuing after %d existing rows", self.directory, len(self._seen))

    def flush(self) -> None:
        if not self.buffer:
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._schema is None:
            self._schema = arrow_schema(self.class_names)
        assert self._next_index is not None
        path = self.directory / f"part-{self._next_index:05d}.parquet"
        table = pa.Table.from_pydict(_columns(self.buffer), schema=self._schema)
        with atomic_open(path) as handle:
            pq.write_table(table, handle, row_group_size=ROW_GROUP_SIZE)
        logger.debug("wrote %s (%d rows)", path, len(self.buffer))
        self.buffer = []
        self._next_index += 1
        self.shards_written += 1


def _columns(records: list[Record]) -> dict[str, list[Any]]:
    names = [name for name, _ in dataset_columns()]
    columns: dict[str, list[Any]] = {"image": [], **{name: [] for name in names}}
    for record in records:
        columns["image"].append({"bytes": record.image, "path": f"{record.id}.png"})
        row = dataset_row(record)
        for name in names:
            columns[name].append(row[name])
    return columns


class ParquetWriter:
    """Writes kept records (and, with keep_rejected, rejected ones) as Parquet shards."""

    def __init__(self, ctx: WriterContext) -> None:
        self.ctx = ctx
        self._sinks = {
            "dataset": _ShardSink(ctx.out_dir / "parquet" / ctx.split, ctx.class_names, ctx.shard_size),
            "rejected": _ShardSink(ctx.out_dir / "rejected" / "parquet", ctx.class_names, ctx.shard_size),
        }
        self._closed = False

    def write(self, record: Record) -> None:
        if self._closed:
            raise RuntimeError("ParquetWriter.write called after close")
        where = destination(record, self.ctx)
        if where is None:
            return
        self.ctx.class_dir(record)  # checks label, label_id and image
        self._sinks[where].add(record)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._sinks["dataset"].flush()
        finally:
            self._sinks["rejected"].flush()
