"""A writer that discards records: benchmarks use it to time everything else."""

from __future__ import annotations

from dalle_data.records import Record


class NoopWriter:
    """Counts records and writes nothing."""

    def __init__(self) -> None:
        self.count = 0
        self._closed = False

    def write(self, record: Record) -> None:
        if self._closed:
            raise RuntimeError("NoopWriter.write called after close")
        self.count += 1

    def close(self) -> None:
        self._closed = True
