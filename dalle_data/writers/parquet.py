"""Parquet shards that ``datasets``, pyarrow and pandas read as they are.

Layout (``OUT`` is the run's output directory)::

    OUT/parquet/<split>/part-<shard>.parquet     kept records of one shard of work
    OUT/rejected/parquet/part-<shard>.parquet    rejected records (only with keep_rejected)

``<shard>`` is the runner's shard id (``r001-s0000``: round 1, shard 0), so a
resumed run that redoes a shard replaces its file with the same content, and
a shard with nothing kept has no file.

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
Each file is written once, atomically (temporary file, fsync, rename), in row
groups of 100 images.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dalle_data.records import METADATA_FIELDS, Record
from dalle_data.writers.base import (
    WriterContext,
    atomic_open,
    dataset_columns,
    dataset_row,
    destination,
    ensure_dir,
    hf_features,
    remove_file,
)
from dalle_data.shards import ShardStore


def read_part(path: Path) -> list[dict[str, Any]]:
    """The rows of a dalle-data Parquet file (image as ``{bytes, path}``)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def record_of_row(row: dict[str, Any]) -> Record:
    """A dataset row of a dalle-data Parquet file back as a record (image bytes included)."""
    data = {k: v for k, v in row.items() if k in METADATA_FIELDS}
    data.update(label=row["label_name"], label_id=row["label"])
    return Record(**{**{f: None for f in ("reject_detail", "sha256")}, **data},
                  image=(row.get("image") or {}).get("bytes"))


def renumber(ctx: WriterContext) -> int:
    """Rewrite every Parquet part (dataset and rejected) whose ClassLabel names are not the run's label map,
    each row's label id taken from its class name; returns how many files were rewritten. For runs made
    before labels.json existed, which numbered labels in the order classes were given."""
    writer = ParquetWriter(ctx)
    rewritten = 0
    for directory in writer.dirs.values():
        for path in sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []:
            if class_names_of(path) == ctx.class_names:
                continue
            records = [record_of_row(row) for row in read_part(path)]
            writer.write_part(path, [r.replace(label_id=ctx.class_names.index(r.label),
                                               class_dir=ctx.class_dirs[ctx.class_names.index(r.label)])
                                     for r in records])
            rewritten += 1
    return rewritten


def class_names_of(path: Path) -> tuple[str, ...] | None:
    """The ClassLabel names a Parquet file's schema declares (its footer only), or None."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    try:
        features = json.loads(meta[b"huggingface"])["info"]["features"]
        return tuple(features["label"]["names"])
    except (KeyError, ValueError, TypeError):
        return None

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

ROW_GROUP_SIZE = 100  # what datasets uses for image data: fast random access
_SHARD_NAME = re.compile(r"^part-(.+)\.parquet$")


def arrow_schema(class_names: tuple[str, ...]) -> pa.Schema:
    """The shard schema, with the Hugging Face features in its metadata."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_()}
    fields = [pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())]))]
    fields += [pa.field(name, types[dtype]) for name, dtype in dataset_columns()]
    hf_meta = json.dumps({"info": {"features": hf_features(class_names)}})
    return pa.schema(fields, metadata={"huggingface": hf_meta})


def _columns(records: Sequence[Record]) -> dict[str, list[Any]]:
    names = [name for name, _ in dataset_columns()]
    columns: dict[str, list[Any]] = {"image": [], **{name: [] for name in names}}
    for record in records:
        columns["image"].append({"bytes": record.image, "path": f"{record.id}.png"})
        row = dataset_row(record)
        for name in names:
            columns[name].append(row[name])
    return columns


class ParquetWriter:
    """Writes each shard's kept (and, with keep_rejected, rejected) records as one Parquet file."""

    def __init__(self, ctx: WriterContext) -> None:
        self.ctx = ctx
        self.dirs = {
            "dataset": ctx.out_dir / "parquet" / ctx.split,
            "rejected": ctx.out_dir / "rejected" / "parquet",
        }
        self._schema: pa.Schema | None = None

    def write(self, shard: str, records: Sequence[Record]) -> None:
        groups: dict[str, list[Record]] = {"dataset": [], "rejected": []}
        for record in records:
            where = destination(record, self.ctx)
            if where is not None:
                self.ctx.class_dir(record)  # checks label, label_id and image
                groups[where].append(record)
        for where, rows in groups.items():
            if rows:
                self.write_part(self.dirs[where] / f"part-{shard}.parquet", rows)

    def write_part(self, path: Path, records: Sequence[Record]) -> None:
        """One Parquet file of ``records`` (with their image bytes), atomically; an empty list removes it."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not records:
            remove_file(path)
            return
        missing = [r.id for r in records if r.image is None]
        if missing:
            raise ValueError(f"record {missing[0]} has no image bytes; refusing to write it to {path}")
        if self._schema is None:
            self._schema = arrow_schema(self.ctx.class_names)
        ensure_dir(path.parent)
        table = pa.Table.from_pydict(_columns(records), schema=self._schema)
        with atomic_open(path) as handle:
            pq.write_table(table, handle, row_group_size=ROW_GROUP_SIZE)
        logger.debug("wrote %s (%d rows)", path, len(records))

    def close(self, records: Sequence[Record]) -> None:
        """Remove this run's shard files that no finished shard accounts for (left by an
        earlier attempt whose shard was later redone with other contents); never other files."""
        owned = {r.shard for r in records} | set(ShardStore(self.ctx.layout).intents())
        wanted = {
            where: {f"part-{r.shard}.parquet" for r in records if destination(r, self.ctx) == where}
            for where in self.dirs
        }
        for where, directory in self.dirs.items():
            if not directory.is_dir():
                continue
            for path in directory.iterdir():
                match = _SHARD_NAME.match(path.name)
                if match and match.group(1) in owned and path.name not in wanted[where]:
                    logger.info("removing stale shard %s", path)
                    remove_file(path)
