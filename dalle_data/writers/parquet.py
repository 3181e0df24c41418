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
from dalle_data.rundir.layout import WHERES, Layout, Where
from dalle_data.writers.base import (
    Format,
    Good,
    ReadBack,
    WriterContext,
    atomic_open,
    dataset_columns,
    dataset_row,
    destination,
    ensure_dir,
    hf_features,
    remove_file,
)
from dalle_data.rundir.shards import ShardStore


def read_part(path: Path) -> list[dict[str, Any]]:
    """The rows of a dalle-data Parquet file (image as ``{bytes, path}``)."""
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def record_of_row(row: dict[str, Any]) -> Record:
    """A dataset row of a dalle-data Parquet file back as a record (image bytes included)."""
    data = {k: v for k, v in row.items() if k in METADATA_FIELDS}
    data.update(label=row["label_name"], label_id=row["label"])
    return Record(**{**{f: None for f in ("reject_detail", "sha256", "learner_prob")}, **data},
                  image=(row.get("image") or {}).get("bytes"))


def renumber(ctx: WriterContext) -> int:
    """Rewrite every Parquet part (dataset and rejected) whose ClassLabel names are not the run's label map,
    each row's label id taken from its class name, or whose columns are not today's (a part written before
    a column was added: the new parts of a resumed run must not give the folder two schemas, which
    ``datasets`` refuses to load); returns how many files were rewritten. For runs made before labels.json
    existed, which numbered labels in the order classes were given, and for every resumed run."""
    writer = ParquetWriter(ctx)
    columns = [f.name for f in arrow_schema(ctx.class_names)]
    rewritten = 0
    for directory in writer.dirs.values():
        for path in sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []:
            if class_names_of(path) == ctx.class_names and column_names_of(path) == columns:
                continue
            records = [record_of_row(row) for row in read_part(path)]
            writer.write_part(path, [r.replace(label_id=ctx.class_names.index(r.label),
                                               class_dir=ctx.class_dirs[ctx.class_names.index(r.label)])
                                     for r in records])
            rewritten += 1
    return rewritten


def column_names_of(path: Path) -> list[str]:
    """The column names of a Parquet file (its footer only)."""
    import pyarrow.parquet as pq

    return list(pq.read_schema(path).names)


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
        self.dirs = dirs(ctx.layout)
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


# --- the format record: folders, verify, reading back ---------------------------------------


def dirs(layout: Layout) -> dict[Where, Path]:
    return {where: layout.parquet_dir(where) for where in WHERES}


def exists(layout: Layout) -> bool:
    return any(layout.parquet_dir().glob("part-*.parquet"))


def loader(out: str, folder: str) -> str:
    return f"datasets.load_dataset('parquet', data_dir='{out}/parquet')"


def quick_check(ctx: WriterContext, where: Where, ids: set[str], problems: list[str]) -> None:
    """Footers only: every part declares the run's labels, and the rows add up to the records placed here."""
    import pyarrow.parquet as pq

    folder = ctx.layout.parquet_dir(where)
    for part in sorted(folder.glob("part-*.parquet")):
        try:
            if class_names_of(part) != ctx.class_names:
                problems.append(f"{part} declares other labels than the run's label map")
        except (OSError, ValueError):
            pass  # unreadable: counted below
    rows = 0
    for part in sorted(folder.glob("part-*.parquet")):
        try:
            rows += pq.read_metadata(part).num_rows
        except (OSError, ValueError) as err:
            problems.append(f"{part} cannot be read ({str(err).splitlines()[0]})")
    if rows != len(ids):
        problems.append(f"{folder} holds {rows} row(s), the records say {len(ids)}")


def check(ctx: WriterContext, records: Sequence[Record], shards: set[str], good: Good) -> ReadBack:
    """Every part of this run's shards read whole: rows where the records place them, labels, image bytes."""
    import pyarrow.parquet as pq

    layout, found = ctx.layout, ReadBack()

    def bad(path: Path, what: str) -> None:
        found.bad.add(path)
        found.problems.append((what, "rewrite"))

    expected = {where: {r.id: r for r in records if destination(r, ctx) == where} for where in WHERES}
    seen: dict[str, str] = {}
    for where in WHERES:
        shards_here = {r.shard for r in expected[where].values()}
        for shard in sorted(shards_here | _parts_of(layout.parquet_dir(where), shards)):
            path = layout.parquet_part(shard, where)
            want = {i for i, r in expected[where].items() if r.shard == shard}
            if not path.is_file():
                if want:
                    bad(path, f"{path} is missing ({len(want)} image(s))")
                continue
            try:
                rows = pq.read_table(path).to_pylist()
                names = class_names_of(path)
            except (OSError, ValueError) as err:
                bad(path, f"{path} cannot be read ({str(err).splitlines()[0]})")
                continue
            if names != ctx.class_names:
                bad(path, f"{path} declares the labels {list(names or [])}, not the run's label map")
            got = set()
            for row in rows:
                rid = row.get("id")
                record = expected[where].get(rid)
                data = (row.get("image") or {}).get("bytes")
                if record is None:
                    bad(path, f"{path} holds {rid}, which belongs elsewhere")
                    continue
                got.add(rid)
                if rid in seen:
                    bad(path, f"{rid} is in {seen[rid]} and again in {path}")
                seen[rid] = str(path)
                if row.get("label") != record.label_id or row.get("label_name") != record.label:
                    bad(path, f"{path}: {rid} is labeled {row.get('label_name')!r}, its record {record.label!r}")
                if good(record, data):
                    found.images[rid] = data
                else:
                    bad(path, f"{path}: the image of {rid} does not decode or has another hash")
            if want - got:
                bad(path, f"{path} lacks {len(want - got)} image(s)")
    return found


def _parts_of(folder: Path, shards: set[str]) -> set[str]:
    if not folder.is_dir():
        return set()
    return {p.name[len("part-"):-len(".parquet")] for p in folder.glob("part-*.parquet")} & shards


def repair(ctx: WriterContext, records: Sequence[Record], found: ReadBack, relabel: bool) -> dict[str, int]:
    """Rewrite the parts found bad or missing (every part when ``relabel``: a run made before labels.json)."""
    writer, layout = ParquetWriter(ctx), ctx.layout
    by_part: dict[Path, list[Record]] = {}
    for record in records:
        where = destination(record, ctx)
        if where is not None:
            by_part.setdefault(layout.parquet_part(record.shard, where), []).append(record)  # type: ignore[arg-type]
    counts: dict[str, int] = {}
    for path in sorted(set(by_part) | found.bad):
        if path in found.bad or not path.is_file() or relabel:
            writer.write_part(path, by_part.get(path, []))
            counts["parquet files rewritten"] = counts.get("parquet files rewritten", 0) + 1
    return counts


def read_images(layout: Layout, records: Sequence[Record], where: Where) -> list[tuple[str, bytes | None]]:
    """``<part>#<id>`` and the image bytes of each record (None when its part or row is not there)."""
    import pyarrow.parquet as pq

    data: dict[str, bytes | None] = {}
    parts: dict[str, Path] = {}
    for shard in dict.fromkeys(r.shard for r in records):
        part = layout.parquet_part(shard, where)
        parts[shard] = part
        if part.is_file():
            for row in pq.read_table(part, columns=["id", "image"]).to_pylist():
                data[row["id"]] = (row["image"] or {}).get("bytes")
    return [(f"{parts[r.shard]}#{r.id}", data.get(r.id)) for r in records]


PARQUET = Format(
    name="parquet", title="Parquet", writer=ParquetWriter, dirs=dirs, exists=exists, loader=loader,
    quick_check=quick_check, check=check, repair=repair, read_images=read_images, checked_as="parquet rows",
    read_rank=20, card_files=lambda split: f"parquet/{split}/*.parquet", card_rank=10, inline=True,
)
