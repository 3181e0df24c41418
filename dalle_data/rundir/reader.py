"""A run read back: its spec (validated), label map, records and images.

``open_run(OUT)`` is how review, verify, probe, ``--from`` and report read a
run. Nothing in ``OUT`` is trusted as written: ``spec.yaml`` is validated with
the same model ``generate`` uses, its hash is recomputed and checked against
the hash it carries and the one in ``run.json`` (so a hand-edited class list,
split or label cannot make an old record mean something else), ``labels.json``
must be the map the spec makes, and every path is built by ``Layout`` from
validated names, so it stays inside OUT.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dalle_data.config import build_spec, load_config
from dalle_data.errors import OutputDirError, SpecError
from dalle_data.labels import LabelMap
from dalle_data.records import Record, reason_code, validate_record
from dalle_data.rundir.directory import RunDir, describe_difference
from dalle_data.rundir.layout import Layout

if TYPE_CHECKING:
    from dalle_data.config import RunSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """A run directory read back (see the module docstring)."""

    out: Path
    layout: Layout
    spec: RunSpec
    spec_hash: str
    inputs: dict[str, str]
    labels: LabelMap
    identity: dict[str, Any] | None
    summary: dict[str, Any] | None
    labels_saved: bool  # labels.json exists (runs made before it number labels in class order)
    _records: list[Record] | None = field(default=None, repr=False, compare=False)

    @property
    def ended(self) -> bool:
        """The run ended (complete or short) for this spec: ``summary.json`` says so."""
        return self.summary is not None and self.summary.get("spec_hash") == self.spec_hash

    @property
    def complete(self) -> bool:
        return self.ended and bool(self.summary and self.summary.get("complete")) and self.layout.success.is_file()

    def records(self) -> list[Record]:
        """Every record as it is now (``manifest.jsonl``), in manifest order."""
        return read_records(self.layout.manifest, self.labels)

    def originals(self) -> dict[str, Record]:
        """By id, each record's state before ``review --apply`` or ``dedup`` first changed it (lines saved for
        another spec are left out; one of another generation of the same id is the caller's to compare)."""
        return {r.id: r for r in read_records(self.layout.originals, self.labels, self.spec_hash)}

    def label_spec(self) -> dict[str, Any]:
        return {"classes": list(self.labels.classes), "negative_label": self.labels.negative_label}


def negative_label(spec: RunSpec) -> str | None:
    return spec.negative_label if "adversarial" in spec.modes else None


def labels_for(spec: RunSpec) -> LabelMap:
    return LabelMap.build(spec.classes, negative_label(spec))


def open_run(out: Path | str) -> Run:
    """Read and check the run in ``out``; a one-line ``OutputDirError`` when it does not hold up.

    Reading changes nothing: a ``review --apply`` that was cut off is finished (or undone) by the command
    that opens the run (``dalle_data.review.apply.recover``), not here.
    """
    out = Path(out)
    if not out.is_dir():
        raise OutputDirError(f"{out} does not exist or is not a directory; pass the --out folder of a run")
    rundir = RunDir(out)
    if not rundir.is_ours():
        raise OutputDirError(f"{out} holds no dalle-data run (no run.json or saved spec.yaml); pass the --out folder of a run")
    layout = Layout(out)
    try:
        saved = yaml.safe_load(layout.spec.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise OutputDirError(f"{layout.spec} cannot be read ({err}); restore it from run.json or rerun") from None
    if not isinstance(saved, dict):
        raise OutputDirError(f"{layout.spec} is not a dalle-data spec")
    values = load_config(layout.spec)
    values["out"] = str(out)
    try:
        spec = build_spec(values, source=str(layout.spec))
    except SpecError as err:
        raise OutputDirError(f"{err}; {layout.spec} does not hold up: restore it") from None
    inputs = {str(k): str(v) for k, v in (saved.get("input_digests") or {}).items()}
    spec_hash = spec.spec_hash(inputs)
    identity = rundir.identity()
    expected = str(identity["spec_hash"]) if identity else str(saved.get("spec_hash", ""))
    if spec_hash != expected or str(saved.get("spec_hash", "")) != expected:
        what = describe_difference(identity.get("spec", {}), spec.content_dict()) if identity else "its hash differs"
        raise OutputDirError(f"{layout.spec} was changed after the run was made ({what}); restore it, "
                             "or make a new run with the changed spec in another --out")
    layout = Layout(out, spec.split)
    labels = labels_for(spec)
    labels_saved = layout.labels.is_file()
    if labels_saved:
        try:
            on_disk = LabelMap.from_json(json.loads(layout.labels.read_text(encoding="utf-8")), str(layout.labels))
        except ValueError as err:
            raise OutputDirError(f"{layout.labels} is not valid JSON ({err})") from None
        if on_disk != labels:
            raise OutputDirError(f"{layout.labels} does not match the run's spec (labels or folders differ); "
                                 f"restore it, or run `dalle-data verify {out} --repair`")
    return Run(out=out, layout=layout, spec=spec, spec_hash=spec_hash, inputs=inputs, labels=labels,
               identity=identity, summary=rundir.saved_summary(), labels_saved=labels_saved)


def read_records(path: Path, labels: LabelMap | None = None, spec_hash: str | None = None) -> list[Record]:
    """Records from a JSON Lines file of ``Record.metadata()`` rows, validated.

    With ``spec_hash``, rows that carry another ``spec_hash`` are skipped. A
    torn last line (a power cut mid-append) is skipped with a warning. With
    ``labels``, a label outside the map is an error and label ids follow the map.
    """
    records: list[Record] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return records
    except (OSError, UnicodeDecodeError) as err:
        raise OutputDirError(f"cannot read {path}: {err}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row: dict[str, Any] = json.loads(line)
            if spec_hash is not None and isinstance(row, dict) and row.get("spec_hash", spec_hash) != spec_hash:
                continue
            if isinstance(row, dict):
                row.pop("spec_hash", None)
            record = validate_record(row, f"{path.name} line {number}")
        except (ValueError, TypeError) as err:
            if number == len(lines):
                log.warning("%s: skipping a torn last line (%s)", path, err)
                continue
            raise OutputDirError(f"{path} line {number} is not a dalle-data record ({err})") from None
        code = reason_code(record.reject_reason, record.status)
        if code != record.reject_reason:
            record = record.replace(reject_reason=code)
        if labels is not None:
            try:
                entry = labels.entry(record.label)
            except KeyError:
                raise OutputDirError(f"{path} line {number}: label {record.label!r} is not in the run's label map") from None
            if (record.label_id, record.class_dir) != (entry.id, entry.folder):
                record = record.replace(label_id=entry.id, class_dir=entry.folder)
        records.append(record)
    return records
