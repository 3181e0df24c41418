"""A writer that discards records: benchmarks use it to time everything else."""

from __future__ import annotations

from collections.abc import Sequence

from dalle_data.records import Record


class NoopWriter:
    """Counts records and writes nothing."""

    def __init__(self) -> None:
        self.count = 0
        self.shards: list[str] = []

    def write(self, shard: str, records: Sequence[Record]) -> None:
        self.count += len(records)
        self.shards.append(shard)

    def close(self, records: Sequence[Record]) -> None:
        pass
