"""Shard completion markers: what makes a run resumable.

A shard is a run of consecutive work units within a round (``r001-s0003``:
round 1, shard 3). When all of a shard's files are in place, its records
(metadata, no images) are written to ``OUT/shards/<shard>.jsonl``, atomically
and last: that file is the completion marker. A resumed run replays the
markers it finds (so its quota rounds continue exactly where they stopped) and
redoes every shard without one, from scratch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from dalle_data.errors import OutputDirError
from dalle_data.records import Record
from dalle_data.writers.base import write_jsonl

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"


class ShardStore:
    def __init__(self, out_dir: Path) -> None:
        self.dir = Path(out_dir) / SHARDS_DIR
        self.replayed = 0

    def _path(self, shard: str) -> Path:
        return self.dir / f"{shard}.jsonl"

    def load(self, shard: str, unit_ids: Sequence[str]) -> list[Record] | None:
        """The shard's records if it finished with exactly these units, else None."""
        path = self._path(shard)
        if not path.is_file():
            return None
        try:
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            records = [Record(**row) for row in rows]
        except (OSError, ValueError, TypeError) as err:
            raise OutputDirError(f"shard marker {path} is unreadable ({err}); rerun with --overwrite") from None
        if [r.id for r in records] != list(unit_ids):
            log.warning("shard %s on disk holds other work than planned; redoing it", shard)
            return None
        self.replayed += 1
        return records

    def commit(self, shard: str, records: Sequence[Record]) -> None:
        write_jsonl(self._path(shard), [r.metadata() for r in records])
