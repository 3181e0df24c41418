"""Named fault points, for crash tests only.

``DALLE_DATA_FAULT=<point>:<n>`` makes the process kill itself with SIGKILL
the n-th time it reaches ``point(<point>)`` — the way a power cut, an OOM
kill or a preempted machine would stop it. Unset (always, outside tests),
``point`` costs one dictionary lookup.

Points: ``generate`` (before a generator call), ``shard_files`` (between
the shard's Parquet file and its images), ``shard_marker`` (after all of a
shard's files, before its completion marker), ``loop_trained`` (after a
loop step's training and focus, before its figures are recorded).
"""

from __future__ import annotations

import os
import signal

ENV = "DALLE_DATA_FAULT"
_counts: dict[str, int] = {}


def point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
