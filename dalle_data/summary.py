"""The run summary: what ``generate --json`` prints and ``OUT/summary.json`` holds.

It is a versioned, documented contract for CI: ``Summary`` below is the
schema (``dalle-data schema summary`` prints it as JSON Schema; a copy is
kept in ``docs/summary.schema.json``), and every summary ``generate`` writes
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

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SUMMARY_SCHEMA = "dalle-data/summary/v2"

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USER = 2
EXIT_SHORT = 3
EXIT_DAMAGED = 4
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
    stage_seconds: StageSeconds
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


def validate_summary(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` checked against the schema (a ``ValueError`` if it does not hold); returned as is."""
    Summary.model_validate(data)
    return data


def json_schema() -> dict[str, Any]:
    schema = Summary.model_json_schema(by_alias=True)
    schema["$id"] = "https://github.com/dalle-data/dalle-data/docs/summary.schema.json"
    schema["title"] = SUMMARY_SCHEMA
    return schema
