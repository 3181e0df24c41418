"""``dalle-data dedup OUT``: keep one image of each group of near-duplicates, set the others aside.

Groups are found among the images ``generate`` kept (their original state,
whatever review did since), by the same rule the report uses
(``analysis.duplicates``: same bytes, or cosine ≥ ``threshold`` between the
scorer's stored image embeddings, within a label). The ids to set aside are
written to ``OUT/review/dedup.json`` and carried out by the crash-safe
machinery of ``review --apply``: those images move to ``OUT/rejected/`` with
reason ``duplicate`` (never deleted), Parquet and ImageFolder are rewritten
through the writers, the manifest, summary, card and report are refreshed.

It is idempotent (the same threshold sets aside the same images; a second
run changes nothing), a person's review decision on an image wins over it,
and ``--undo`` removes ``dedup.json`` and brings every set-aside image back.
A later ``review --apply`` keeps the images dedup set aside apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dalle_data.analysis import DEFAULT_THRESHOLD, duplicate_groups
from dalle_data.errors import SpecError
from dalle_data.report import load_embeddings, refresh_report
from dalle_data.review.apply import DEDUP_FILE, apply_decisions, plan_changes, recover
from dalle_data.review.decisions import DecisionLog
from dalle_data.review.run import DECISIONS_FILE, load_run
from dalle_data.rundir.directory import atomic_write_text
from dalle_data.rundir.lock import RunLock
from dalle_data.writers.base import ensure_dir, remove_file


def dedup(out: Path | str, *, threshold: float = DEFAULT_THRESHOLD, undo: bool = False,
          dry_run: bool = False) -> dict[str, Any]:
    """Set aside all but one image of each near-duplicate group (or, with ``undo``, bring them back)."""
    if not 0.0 < threshold <= 1.0:
        raise SpecError(f"--threshold {threshold} must be in (0, 1]: the cosine at or above which two images "
                        "count as near-duplicates")
    out = Path(out)
    with RunLock(out, "dalle-data dedup"):
        recover(out, locked=True)  # a cut-off review --apply first, under the lock held here (the reader does not)
        run = load_run(out)
        path = run.review_dir / DEDUP_FILE
        groups: list[Any] = []
        missing = 0
        if not undo:
            originals = [run.original(r) for r in run.records]
            emb, _, missing = load_embeddings(run, run.spec, compute=not dry_run)
            groups = duplicate_groups(originals, emb, threshold)
        ids = sorted(i for g in groups for i in g.extra)
        log = DecisionLog(run.review_dir / DECISIONS_FILE, run.spec_hash)
        if dry_run:
            changes = plan_changes(run, log.replay(), frozenset() if undo else frozenset(ids))
        else:
            # dedup.json is the intent: written first, carried out by apply (crash-safe, journaled); a kill in
            # between leaves it for the next dedup or review --apply to carry out
            if undo:
                remove_file(path)
            else:
                ensure_dir(path.parent)
                atomic_write_text(path, json.dumps({"spec_hash": run.spec_hash, "threshold": threshold,
                                                    "set_aside": ids, "groups": [g.as_json() for g in groups]},
                                                   indent=2, ensure_ascii=False) + "\n")
            changes = apply_decisions(run, log, locked=True).changes
            refresh_report(out, locked=True)
    after = load_run(out) if not dry_run else run
    kept = {}
    for record in after.records:
        if record.status == "kept":
            kept[record.label] = kept.get(record.label, 0) + 1
    return {
        "out": str(out), "dry_run": dry_run, "undo": undo, "threshold": threshold,
        "groups": len(groups), "set_aside": len(ids),
        "changed": len(changes), "duplicate": sum(c.kind == "duplicate" for c in changes),
        "restored": sum(c.kind == "restored" for c in changes),
        "kept": {label: kept.get(label, 0) for label in run.labels}, "without_embeddings": missing,
        "complete": after.complete if not dry_run else run.complete,
    }
