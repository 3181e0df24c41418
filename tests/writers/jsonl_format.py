"""A test-only output format: one module plus one ``register`` call is all a format needs.

``OUT/jsonl/<split>/part-<shard>.jsonl`` (``OUT/rejected/jsonl/...``): one line per record placed there, with
its id, label, label id and image bytes in hex. Its folders come from the run's ``Layout`` (under OUT).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from dalle_data.records import Record
from dalle_data.rundir.layout import WHERES, Layout, Where
from dalle_data.writers.base import Format, Good, ReadBack, WriterContext, atomic_write_bytes, destination, ensure_dir


def dirs(layout: Layout) -> dict[Where, Path]:
    return {"dataset": layout.out / "jsonl" / layout.split, "rejected": layout.out / "rejected" / "jsonl"}


def part(layout: Layout, shard: str, where: Where) -> Path:
    return dirs(layout)[where] / f"part-{shard}.jsonl"


def read_part(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class JsonlWriter:
    def __init__(self, ctx: WriterContext) -> None:
        self.ctx = ctx

    def write(self, shard: str, records: Sequence[Record]) -> None:
        groups: dict[str, list[Record]] = {"dataset": [], "rejected": []}
        for record in records:
            where = destination(record, self.ctx)
            if where is not None:
                self.ctx.class_dir(record)
                groups[where].append(record)
        for where, rows in groups.items():
            if rows:
                path = part(self.ctx.layout, shard, where)  # type: ignore[arg-type]
                ensure_dir(path.parent)
                atomic_write_bytes(path, b"".join(json.dumps(
                    {"id": r.id, "label": r.label_id, "label_name": r.label, "image": r.image.hex()}).encode() + b"\n"
                    for r in rows if r.image is not None))

    def close(self, records: Sequence[Record]) -> None:
        pass


def check(ctx: WriterContext, records: Sequence[Record], shards: set[str], good: Good) -> ReadBack:
    found = ReadBack()
    for record in records:
        where = destination(record, ctx)
        if where is None:
            continue
        path = part(ctx.layout, record.shard, where)
        rows = {row["id"]: row for row in read_part(path)} if path.is_file() else {}
        data = bytes.fromhex(rows[record.id]["image"]) if record.id in rows else None
        if good(record, data):
            found.images[record.id] = data  # type: ignore[assignment]
        else:
            found.bad.add(record.shard)
            found.problems.append((f"{path} lacks a good image of {record.id}", "rewrite"))
    return found


def repair(ctx: WriterContext, records: Sequence[Record], found: ReadBack, relabel: bool) -> dict[str, int]:
    writer = JsonlWriter(ctx)
    for shard in sorted(found.bad):
        writer.write(shard, [r for r in records if r.shard == shard])
    return {"jsonl parts rewritten": len(found.bad)} if found.bad else {}


def read_images(layout: Layout, records: Sequence[Record], where: Where) -> list[tuple[str, bytes | None]]:
    out = []
    for record in records:
        path = part(layout, record.shard, where)
        rows = {row["id"]: row for row in read_part(path)} if path.is_file() else {}
        out.append((f"{path}#{record.id}", bytes.fromhex(rows[record.id]["image"]) if record.id in rows else None))
    return out


JSONL = Format(
    name="jsonl", title="JSONL", writer=JsonlWriter, dirs=dirs,
    exists=lambda layout: any(dirs(layout)["dataset"].glob("part-*.jsonl")),
    loader=lambda out, folder: f"datasets.load_dataset('json', data_dir='{folder}')",
    quick_check=lambda ctx, where, ids, problems: None, check=check, repair=repair, read_images=read_images,
    checked_as="jsonl rows", read_rank=90, inline=True,
)

__all__ = ["JSONL", "WHERES"]
