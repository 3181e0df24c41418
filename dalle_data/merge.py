"""``dalle-data merge OUT``: the parts of a sharded run (``--shard i/n``) joined into one dataset.

The parts already wrote their images, Parquet shards and markers into OUT
under part-prefixed names (``p0003of0010-r001-s0000``); merging writes what
only the whole run can: the manifest, both ``metadata.jsonl`` files, the
class folders and card, the label map, ``summary.json`` (``"parts": n``) and
``_SUCCESS`` when every quota is met. It refuses, in one line, while a part
is unfinished or still running (naming the command that finishes each) and
when two parts made the same record. Merging twice gives the same files; the
next unsharded ``generate`` of the same spec on OUT merges too.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from dalle_data.errors import DalleDataError, OutputDirError
from dalle_data.execution.parts import Part
from dalle_data.execution.run import default_writers_for
from dalle_data.records import Record
from dalle_data.review.apply import recover
from dalle_data.review.run import with_applied
from dalle_data.rundir import RunDir, open_run, read_records
from dalle_data.rundir.directory import atomic_write_text, read_json_object
from dalle_data.rundir.lock import RunLock, RunLocked
from dalle_data.rundir.shards import ShardStore
from dalle_data.summary import rebuild
from dalle_data.writers import outputs_of
from dalle_data.writers.base import remove_file

log = logging.getLogger(__name__)


class PartsUnfinished(DalleDataError):
    """Some parts of a sharded run have not finished."""


def merge(out: Path | str, *, locked: bool = False) -> dict[str, Any]:
    """Join the finished parts in ``out``; returns the merged summary (see the module docstring)."""
    out = Path(out)
    recover(out, locked=locked)  # a cut-off review --apply is finished first (the reader does not)
    run = open_run(out)
    rundir = RunDir(out, run.spec.split)
    parts = rundir.parts()
    if not parts:
        raise OutputDirError(f"{out} is not a sharded run (no parts/): nothing to merge")
    counts = {int(name.split("-of-")[1]) for name in parts}
    if len(counts) != 1:
        raise OutputDirError(f"{out} holds parts of different splits ({', '.join(sorted(parts))}); remove the "
                             "stray ones or use another --out")
    (n,) = counts
    if locked:
        return _merge(out, run, parts, n)
    with RunLock(out, "dalle-data merge"):
        return _merge(out, run, parts, n)


def _merge(out: Path, run: Any, parts: dict[str, Path], n: int) -> dict[str, Any]:
    running, unfinished, summaries = [], [], []
    for i in range(n):
        part = Part(i, n)
        home = out / "parts" / part.name
        if not home.is_dir():
            unfinished.append(part)
            continue
        try:
            with RunLock(home, "dalle-data merge (checking the part)"):
                pass
        except RunLocked:
            running.append(str(part))
            continue
        summary = read_json_object(home / "summary.json")
        if summary is None or summary.get("spec_hash") != run.spec_hash:
            unfinished.append(part)
        else:
            summaries.append(summary)
    if running:
        raise PartsUnfinished(f"part(s) {', '.join(running)} of {out} are still running; merge when they are done")
    if unfinished:
        commands = " ; ".join(f"dalle-data generate --resume {out} --shard {p}" for p in unfinished)
        raise PartsUnfinished(f"{len(unfinished)} of {n} part(s) of {out} are unfinished "
                              f"({', '.join(str(p) for p in unfinished)}): {commands}")
    generated = _checked_parts(run, n, summaries)
    records = with_applied(run, generated)
    writers = default_writers_for(run.spec, run.labels, run.out)
    for writer in writers:
        writer.close(records)
    summary = rebuild(run, records, outputs_of(run.spec), generated)
    summary.update(_timings(summaries), parts=n)
    if records != generated:
        summary["review_applied"] = True
    atomic_write_text(run.layout.summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    if summary["complete"]:
        atomic_write_text(run.layout.success, "")
    else:
        remove_file(run.layout.success)
    log.info("merged %d parts of %s: %d records", n, out, len(records))
    return summary


def part_records(run: Any, n: int) -> list[Record]:
    """Every record of every part of ``n``, checked: no record made twice (shard names parsed, for any n)."""
    store = ShardStore(run.layout, run.labels)
    records: list[Record] = []
    seen: dict[str, str] = {}
    for shard in store.shards():
        part = Part.of_shard(shard)
        if part is None or part.count != n:
            continue
        for record in store.read(shard):
            if record.id in seen:
                raise OutputDirError(f"record {record.id} was made twice (shards {seen[record.id]} and {shard}); "
                                     f"run `dalle-data verify {run.out}`")
            seen[record.id] = shard
            records.append(record)
    return records


def _checked_parts(run: Any, n: int, summaries: list[dict[str, Any]]) -> list[Record]:
    """The parts' records, after checking that each part's markers hold every record its summary counts
    (a deleted marker would otherwise drop its images from the indexes while its files stay served)."""
    records = part_records(run, n)
    made: dict[str, int] = {}
    for record in records:
        part = Part.of_shard(record.shard)
        assert part is not None
        made[str(part)] = made.get(str(part), 0) + 1
    for summary in summaries:
        part = str(summary.get("part"))
        if made.get(part, 0) < int(summary.get("generated", 0)):
            lost = sorted(_lost_markers(run, part))
            what = f"shard marker(s) {', '.join(lost[:3])} are missing" if lost else "shard markers are missing"
            raise OutputDirError(
                f"part {part} of {run.out} counts {summary.get('generated')} record(s) but its markers hold "
                f"{made.get(part, 0)} ({what}); run `dalle-data verify {run.out} --repair`, or redo the part with "
                f"`dalle-data generate --resume {run.out} --shard {part}`")
    return records


def _lost_markers(run: Any, part: str) -> set[str]:
    """Shards of ``part`` that the manifest lists but no marker holds any more."""
    try:
        listed = {r.shard for r in read_records(run.layout.manifest, run.labels)}
    except OutputDirError:
        return set()
    return {s for s in listed if str(Part.of_shard(s)) == part and not run.layout.marker(s).is_file()}


def _timings(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts' times: their busy seconds add up; the wall time is the longest part's."""
    stages = {k: round(sum(float(s.get("stage_seconds", {}).get(k, 0.0)) for s in summaries), 4)
              for k in ("generate", "score", "encode", "write")}
    seconds = max((float(s.get("seconds", 0.0)) for s in summaries), default=0.0)
    generated = sum(int(s.get("generated", 0)) for s in summaries)
    return {"stage_seconds": stages, "seconds": round(seconds, 3),
            "images_per_second": round(generated / seconds, 3) if seconds else 0.0,
            "rounds": max((int(s.get("rounds", 0)) for s in summaries), default=0),
            "shards_resumed": sum(int(s.get("shards_resumed", 0)) for s in summaries),
            "batch_size": max((int(s.get("batch_size", 0)) for s in summaries), default=0)}

