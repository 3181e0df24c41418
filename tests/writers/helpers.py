"""Records, contexts, shard drivers and readers shared by the writer tests."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from dalle_data.records import Record
from dalle_data.writers import Writer, WriterContext

CLASS_NAMES = ("dalmatian", "a/b", "hard_negative")
CLASS_DIRS = ("dalmatian", "a_b", "hard_negative")
SHARD = "r001-s0000"


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def make_record(n: int = 0, label_id: int = 0, status: str = "kept", shard: str = SHARD, **changes: Any) -> Record:
    """A record with every field filled; ``n`` makes the id and the image unique."""
    failed = status in ("failed", "refused")
    fields: dict[str, Any] = {
        "id": f"rec{n:04d}",
        "label": CLASS_NAMES[label_id],
        "label_id": label_id,
        "class_dir": CLASS_DIRS[label_id],
        "role": "positive",
        "imitates": None,
        "prompt": f"a photo of a {CLASS_NAMES[label_id]} #{n}",
        "prompt_source": "templates/vanilla.yaml#3",
        "mode": "vanilla",
        "backend": "tiny",
        "model": "tiny-unclip",
        "seed": 1000 + n,
        "width": 8,
        "height": 8,
        "clip_score": None if failed else 0.25 + n / 1000,
        "class_prob": None if failed else 0.9,
        "top_class": None if failed else CLASS_NAMES[label_id],
        "kept": status == "kept",
        "status": status,
        "reject_reason": "clip_score below 0.2" if status == "rejected" else None,
        "error": "backend refused the prompt" if failed else None,
        "source_id": None,
        "source_path": None,
        "source2_id": None,
        "source2_path": None,
        "mask": None,
        "shard": shard,
        "created_at": "2024-05-01T12:00:00.000001+00:00",
        "image": None if failed else png_bytes((n % 256, 40, 200)),
    }
    fields.update(changes)
    return Record(**fields)


def hard_negative(n: int = 0, **changes: Any) -> Record:
    return make_record(n, label_id=2, role="hard_negative", imitates="dalmatian", mode="adversarial", **changes)


def make_ctx(tmp_path: Path, **changes: Any) -> WriterContext:
    return WriterContext(out_dir=tmp_path / "out", class_names=CLASS_NAMES, class_dirs=CLASS_DIRS, **changes)


def by_shard(records: Sequence[Record]) -> dict[str, list[Record]]:
    """Records grouped by ``record.shard``, shards and records in the order given."""
    shards: dict[str, list[Record]] = {}
    for record in records:
        shards.setdefault(record.shard, []).append(record)
    return shards


def metadata_only(records: Sequence[Record]) -> list[Record]:
    """What the runner hands to ``close``: the records without their image bytes."""
    return [record.replace(image=None) for record in records]


def run_writer(writer: Writer, records: Sequence[Record]) -> Writer:
    """Drive a writer as the runner does: each shard in turn, then ``close`` with metadata only."""
    for shard, rows in by_shard(records).items():
        writer.write(shard, rows)
    writer.close(metadata_only(records))
    return writer


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.startswith(".tmp-")]


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
