"""The run summary: what ``generate --json`` prints and ``OUT/summary.json`` holds.

It is a versioned, documented contract for CI: ``Summary`` below is the
schema (its JSON Schema is kept in ``docs/summary.schema.json``, and a test
checks the copy against the model), and every summary ``generate`` writes
is validated against it before it is written. Fields are added in new
minor releases; a field changes meaning or goes away only with a new
``schema`` version.

Exit codes of ``dalle-data generate`` (also in README):

    0    the dataset is complete (every quota met), or short with --allow-short
    1    internal error (a bug: please report it with DALLE_DATA_DEBUG=1 output)
    2    a user error: bad option, spec, input file, output directory, model
    3    the run ended short: some quota was not met within --max-attempts
    4    verify found the dataset damaged (and, with --repair, could not mend it all)
    75   another process holds the output directory (try again when it is done)
    130  interrupted (Ctrl-C, SIGTERM); rerun the same command to resume
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dalle_data.focus import describe as describe_focus
from dalle_data.records import NOT_SELECTED
from dalle_data.rundir.layout import Layout

SUMMARY_SCHEMA = "dalle-data/summary/v2"

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_SHORT = 3
EXIT_DAMAGED = 4
EXIT_GATE = 5  # `report --fail-if`: a gate on the dataset's figures failed
EXIT_LOCKED = 75
EXIT_INTERRUPTED = 130


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassCounts(_Strict):
    """One class (all its modes): generated = kept + rejected + failed."""

    target: int = Field(description="kept images wanted")
    generated: int = Field(description="records made: kept + rejected + failed (refused count as failed)")
    kept: int
    rejected: int
    failed: int = Field(description="no usable image: defects, refusals, unreadable sources or masks")
    acceptance: float = Field(description="kept / generated (0 when nothing was generated)")
    met: bool = Field(description="kept >= target")


class ModeCounts(_Strict):
    target: int
    generated: int
    kept: int
    rejected: int = 0
    failed: int = 0


class StageSeconds(_Strict):
    generate: float
    score: float
    encode: float
    write: float


class Summary(_Strict):
    """``OUT/summary.json`` / ``generate --json``."""

    schema_: Literal["dalle-data/summary/v2"] = Field(alias="schema", description="this format's name and version")
    status: Literal["complete", "short"] = Field(description="complete: every quota met; short: some quota unmet")
    complete: bool
    exit_code: int = Field(description="what generate exits with for this summary without --allow-short (0 or 3)")
    already_finished: bool = Field(default=False, description="the run had already ended: nothing was done now")
    already_complete: bool = Field(default=False, description="already_finished and complete")
    repaired: dict[str, int] = Field(default_factory=dict, description="what a rerun mended in a damaged finished run")
    part: str | None = Field(default=None, description="--shard i/n: this summary is of part i of n only")
    parts: int | None = Field(default=None, description="a merged sharded run: how many parts it was made in")
    review_applied: bool = Field(default=False, description="review --apply changed the dataset since generation: "
                                                              "kept, classes.*.kept/met and status count it now")
    generated: int
    kept: int
    rejected: int
    failed: int
    acceptance: float
    rounds: int
    shards: int
    shards_resumed: int = Field(description="finished shards replayed from their markers instead of redone")
    batch_size: int
    seconds: float
    images_per_second: float
    stage_seconds: StageSeconds = Field(description="busy seconds per stage; stages overlap, so they may sum to more "
                                                    "than seconds")
    generator_busy: float = Field(default=0.0, description="the share of wall time the generator was busy (0..1)")
    rejections: dict[str, int] = Field(description="records not kept, by reason code (see README: reason codes)")
    classes: dict[str, ClassCounts] = Field(description="per class, in the order the classes were given")
    modes: dict[str, ModeCounts]
    out: str
    outputs: dict[str, str] = Field(description="format -> dataset folder, only for datasets that exist")
    missing_outputs: dict[str, str] = Field(default_factory=dict, description="format -> why it was not written")
    spec_hash: str
    model: str
    backend: str
    scorer: str
    labels: list[str] = Field(description="ClassLabel names in id order (= OUT/labels.json)")
    labels_file: str
    settings: dict[str, Any]
    focus: list[str] | None = Field(default=None, description="generate --focus: one line per class the focus names")
    utilisation: dict[str, Any] | None = Field(
        default=None, description="the generator's stages in this process (prior, text_encoder, denoiser, "
                                  "image_decoder): calls, seconds, GFLOP per image (counted once per network and "
                                  "shape), achieved GFLOP/s and its share of the device's practical matmul limit")
    select: dict[str, Any] | None = Field(
        default=None, description="generate --select uncertain: the learner, candidates per kept image, how many "
                                  "passed the filter, were kept and not selected, and the learner's mean "
                                  "probability of the label over the kept and over the not selected")


def validate_summary(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` checked against the schema (a ``ValueError`` if it does not hold); returned as is."""
    Summary.model_validate(data)
    return data


def json_schema() -> dict[str, Any]:
    schema = Summary.model_json_schema(by_alias=True)
    schema["$id"] = "https://github.com/dalle-data/dalle-data/docs/summary.schema.json"
    schema["title"] = SUMMARY_SCHEMA
    return schema


def summarize(ledger: Any, stats: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run summary from the ledger's counts and the executor's stats (validated when ``extra`` completes it)."""
    per_class: dict[str, dict[str, Any]] = {}
    per_mode: dict[str, dict[str, Any]] = {}
    reasons: dict[str, int] = {}
    for counts in ledger.slots.values():
        plan = counts.plan
        rejected = counts.generated - counts.kept - counts.failed
        for row in (per_class.setdefault(plan.cls, _zero()), per_mode.setdefault(plan.mode, _zero())):
            row["target"] += counts.target
            row["generated"] += counts.generated + counts.unusable  # unusable sources: failed, no attempt spent
            row["kept"] += counts.kept
            row["failed"] += counts.failed + counts.unusable
            row["rejected"] += rejected
        for k, v in counts.reasons.items():
            reasons[k] = reasons.get(k, 0) + v
    generated, kept, complete = _totals(per_class)
    summary = {
        "schema": SUMMARY_SCHEMA,
        "status": "complete" if complete else "short",
        "complete": complete,
        "exit_code": EXIT_OK if complete else EXIT_SHORT,
        "generated": generated,
        "kept": kept,
        "rejected": sum(r["rejected"] for r in per_class.values()),
        "failed": sum(r["failed"] for r in per_class.values()),
        "acceptance": round(kept / generated, 4) if generated else 0.0,
        "rounds": stats.rounds,
        "shards": stats.shards,
        "shards_resumed": stats.shards_replayed,
        "batch_size": stats.batch_size,
        "seconds": round(stats.elapsed, 3),
        "images_per_second": round(generated / stats.elapsed, 3) if stats.elapsed else 0.0,
        "stage_seconds": stats.times.as_dict(),
        "generator_busy": round(stats.generator_busy, 4),
        "rejections": reasons,
        "classes": per_class,
        "modes": per_mode,
        **(extra or {}),
    }
    return validate_summary(summary) if extra else summary


def _totals(per_class: dict[str, dict[str, Any]]) -> tuple[int, int, bool]:
    """Each class's acceptance and whether it met its target; the run's generated, kept and completeness."""
    for row in per_class.values():
        row["acceptance"] = round(row["kept"] / row["generated"], 4) if row["generated"] else 0.0
        row["met"] = row["kept"] >= row["target"]
    generated = sum(r["generated"] for r in per_class.values())
    kept = sum(r["kept"] for r in per_class.values())
    return generated, kept, all(r["met"] for r in per_class.values())


def _zero() -> dict[str, Any]:
    return {"target": 0, "generated": 0, "kept": 0, "rejected": 0, "failed": 0}


def rebuild(run: Any, records: Any, outputs: tuple[dict[str, str], dict[str, str]],
            generated: Sequence[Any] | None = None) -> dict[str, Any]:
    """A summary in this schema from a run's records, for a run whose ``summary.json`` is older or damaged
    (timings and settings are kept from the old one where it has them); ``outputs``: the dataset folders
    written and why the others are missing (``dalle_data.writers.outputs_of``). ``generated``: the records as
    generation left them, when ``records`` has review's decisions applied (``select`` counts what the
    selection did, as the run's own summary does)."""
    old = run.summary if isinstance(run.summary, dict) else {}
    records = list(records)
    sources: dict[str, set[str]] = {}
    for record in records:
        if record.source_id:
            sources.setdefault(record.imitates or record.label, set()).add(record.source_id)
    targets = run.spec.slot_targets({cls: len(ids) for cls, ids in sources.items()})
    per_class = {cls: _zero() for cls in run.spec.classes}
    per_mode = {mode: _zero() for mode in run.spec.modes}
    reasons: dict[str, int] = {}
    for (cls, mode), (target, _) in targets.items():
        per_class[cls]["target"] += target
        per_mode[mode]["target"] += target
    for record in records:
        cls = record.imitates or record.label
        for row in (per_class.setdefault(cls, _zero()), per_mode.setdefault(record.mode, _zero())):
            row["generated"] += 1
            row["kept"] += record.status == "kept"
            row["failed"] += record.status in ("failed", "refused")
            row["rejected"] += record.status == "rejected"
        if record.status != "kept" and record.reject_reason:
            reasons[record.reject_reason] = reasons.get(record.reject_reason, 0) + 1
    generated, kept, complete = _totals(per_class)
    outputs, missing = outputs
    stages = {k: float((old.get("stage_seconds") or {}).get(k, 0.0)) for k in ("generate", "score", "encode", "write")}
    summary = {
        "schema": SUMMARY_SCHEMA, "status": "complete" if complete else "short", "complete": complete,
        "exit_code": EXIT_OK if complete else EXIT_SHORT, "generated": generated, "kept": kept,
        "rejected": sum(r["rejected"] for r in per_class.values()), "failed": sum(r["failed"] for r in per_class.values()),
        "acceptance": round(kept / generated, 4) if generated else 0.0, "rounds": int(old.get("rounds", 0)),
        "shards": len({r.shard for r in records}), "shards_resumed": int(old.get("shards_resumed", 0)),
        "batch_size": int(old.get("batch_size", 0)), "seconds": float(old.get("seconds", 0.0)),
        "images_per_second": float(old.get("images_per_second", 0.0)), "stage_seconds": stages,
        "rejections": reasons, "classes": per_class, "modes": per_mode, "out": str(run.out), "outputs": outputs,
        "missing_outputs": missing, "spec_hash": run.spec_hash, "model": str(old.get("model", run.spec.model)),
        "backend": str(old.get("backend", run.spec.backend)), "scorer": str(old.get("scorer", run.spec.scorer)),
        "labels": list(run.labels.names), "labels_file": str(Layout(run.out).labels),
        "settings": dict(old.get("settings") or {}),
    }
    if run.spec.focus is not None:
        summary["focus"] = describe_focus(run.spec.focus, list(run.spec.classes), run.spec.per_class or 0)
    if run.spec.select is not None:
        summary["select"] = selection_of(generated if generated is not None else records, run.spec, old.get("select"))
    return validate_summary(summary)


def selection_of(records: Sequence[Any], spec: Any, old: Any) -> dict[str, Any]:
    """The ``select`` section counted from the records as generation left them (as the ledger counts it
    during the run; review's later decisions do not change it, as they do not change ``generated``)."""
    kept = [r.learner_prob for r in records if r.status == "kept" and r.learner_prob is not None]
    dropped = [r.learner_prob for r in records if r.reject_reason == NOT_SELECTED and r.learner_prob is not None]
    passed = sum(r.status == "kept" or r.reject_reason in ("surplus", NOT_SELECTED) for r in records)
    name = old.get("learner") if isinstance(old, dict) else None
    return {"method": spec.select, "learner": name or (Path(spec.learner).name if spec.learner else None),
            "candidates_per_image": spec.candidates, "passed": passed,
            "kept": sum(r.status == "kept" for r in records),
            "not_selected": sum(r.reject_reason == NOT_SELECTED for r in records),
            "learner_prob_kept": round(sum(kept) / len(kept), 4) if kept else None,
            "learner_prob_not_selected": round(sum(dropped) / len(dropped), 4) if dropped else None}
