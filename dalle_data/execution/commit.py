"""Commit: a finished shard's files, then its marker, atomically and in that order.

1. the intent (the record ids about to be written: what ``--overwrite`` and
   the stray sweeps know as the run's own, even after a kill);
2. every writer's files for the shard (each written to a temporary name,
   fsynced and renamed);
3. the completion marker ``OUT/shards/<shard>.jsonl``, last.

A kill anywhere leaves either no marker (the shard is redone, byte for
byte) or every file in place. Committing the same shard again writes the
same bytes under the same names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dalle_data import faults
from dalle_data.records import Record

if TYPE_CHECKING:
    from dalle_data.rundir.shards import ShardStore
    from dalle_data.writers import Writer


def commit(shard: str, records: Sequence[Record], writers: Sequence[Writer], store: ShardStore | Any | None) -> None:
    if store is not None:
        store.begin(shard, [r.id for r in records])
    for i, writer in enumerate(writers):
        writer.write(shard, records)
        if i == 0:
            faults.point("shard_files")
    faults.point("shard_marker")
    if store is not None:
        store.commit(shard, records)
