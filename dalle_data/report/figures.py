"""The figures of a run's report, as one JSON-able dict (``dalle-data report --json`` prints it).

Everything is measured from the run's records (``manifest.jsonl``, as they are
after any review or dedup), its summary and its stored embeddings; nothing
depends on the clock, so the same run gives the same figures and the same
report files byte for byte.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dalle_data import __version__
from dalle_data.analysis import DEFAULT_THRESHOLD, diversity, duplicate_groups
from dalle_data.analysis.duplicates import cross_label_copies
from dalle_data.analysis.lookalike import load_vocabulary, look_alikes
from dalle_data.records import Record
from dalle_data.rundir.directory import read_json_object

if TYPE_CHECKING:
    from dalle_data.embeddings import EmbeddingSet
    from dalle_data.review.run import ReviewRun

SCHEMA = "dalle-data/report/v1"
BINS = 20
LOW_ACCEPTANCE = 0.3  # a class keeping under this share of what it generated is flagged
DUPLICATE_SHARE = 0.05  # duplicates setting aside more than this share of a class are flagged
_SOURCE = re.compile(r"^(?P<pack>[^:#]+):(?P<mode>[^:#]+)#(?P<index>\d+)$")


def histogram(values: Sequence[float], edges: np.ndarray) -> list[int]:
    if not values:
        return [0] * (len(edges) - 1)
    counts, _ = np.histogram(np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1]), bins=edges)
    return [int(c) for c in counts]


def clip_edges(records: Sequence[Record]) -> np.ndarray:
    """Shared CLIP-score bin edges for every class and mode: the scores' range, widened to tenths."""
    scores = [r.clip_score for r in records if r.clip_score is not None]
    if not scores:
        return np.linspace(0.0, 1.0, BINS + 1)
    low, high = math.floor(min(scores) * 10) / 10, math.ceil(max(scores) * 10) / 10
    if high <= low:
        high = low + 0.1
    return np.linspace(low, high, BINS + 1)


def histograms(records: Sequence[Record], labels: Sequence[str]) -> dict[str, Any]:
    """CLIP-score and class-probability histograms per label and mode, kept and rejected apart."""
    scored = [r for r in records if r.status in ("kept", "rejected") and r.clip_score is not None]
    out: dict[str, Any] = {}
    for name, edges, value in (("clip_score", clip_edges(scored), lambda r: r.clip_score),
                               ("class_prob", np.linspace(0.0, 1.0, BINS + 1), lambda r: r.class_prob)):
        groups: dict[tuple[str, str, str], list[float]] = {}  # (label, mode, status) -> values, in one pass
        for r in scored:
            groups.setdefault((r.label, r.mode, r.status), [])
            if value(r) is not None:
                groups[(r.label, r.mode, r.status)].append(value(r))
        by: dict[str, dict[str, dict[str, list[int]]]] = {}
        for label in labels:
            modes = sorted({mode for (lab, mode, _) in groups if lab == label})
            if modes:
                by[label] = {mode: {status: histogram(groups.get((label, mode, status), []), edges)
                                    for status in ("kept", "rejected")} for mode in modes}
        out[name] = {"edges": [round(float(e), 4) for e in edges], "by": by}
    return out


def class_table(run: ReviewRun, records: Sequence[Record], summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per label: target, generated, kept (now), rejected, failed, acceptance, met."""
    summary_classes = summary.get("classes", {})
    by_label: dict[str, list[Record]] = {}
    for record in records:
        by_label.setdefault(record.label, []).append(record)
    table: dict[str, dict[str, Any]] = {}
    for label in run.labels:
        rows = by_label.get(label, [])
        generated = sum(r.status in ("kept", "rejected") for r in rows)
        kept = sum(r.status == "kept" for r in rows)
        saved = summary_classes.get(label, {})
        target = int(saved.get("target", kept))
        table[label] = {
            "target": target, "generated": generated, "kept": kept,
            "rejected": sum(r.status == "rejected" for r in rows),
            "failed": sum(r.status in ("failed", "refused") for r in rows),
            "acceptance": round(kept / generated, 4) if generated else 0.0, "met": kept >= target,
            "role": "negative" if label == run.negative_label else "positive",
        }
    return table


def coverage(records: Sequence[Record], pack: Any) -> dict[str, Any]:
    """How often each template and each slot value was used and kept.

    Templates come from the record's ``prompt_source`` (``pack:mode#index``);
    slot values are found in the prompt text (a value is counted when it
    appears in the prompt, case-insensitively). Each slot is a diversity axis:
    ``distinct`` is how many of its values were used, ``evenness`` the
    normalised entropy of the kept images over its values (1.0: spread evenly
    over every value; 0.0: all on one).
    """
    generated = [r for r in records if r.status in ("kept", "rejected")]
    used: Counter[tuple[str, str]] = Counter()
    kept: Counter[tuple[str, str]] = Counter()
    for r in generated:
        key = (r.mode, r.prompt_source)
        used[key] += 1
        kept[key] += r.status == "kept"
    templates = []
    for (mode, source), n in sorted(used.items()):
        text = None
        match = _SOURCE.match(source)
        if match and pack is not None and match["pack"] == pack.name and match["mode"] in pack.modes:
            texts = pack.templates(match["mode"])
            text = texts[int(match["index"])] if int(match["index"]) < len(texts) else None
        templates.append({"mode": mode, "source": source, "template": text, "used": n, "kept": kept[(mode, source)]})
    slots: dict[str, Any] = {}
    if pack is not None:
        values: dict[str, set[str]] = {}
        for mode in pack.modes:
            for name, vals in pack.slots(mode).items():
                values.setdefault(name, set()).update(vals)
        modes_used = {r.mode for r in generated}
        for name in sorted(values):
            counts: dict[str, dict[str, int]] = {}
            for value in sorted(values[name]):
                needle = value.casefold()
                hits = [r for r in generated if needle in r.prompt.casefold()]
                counts[value] = {"used": len(hits), "kept": sum(r.status == "kept" for r in hits)}
            relevant = any(name in _fields(pack, mode) for mode in modes_used)
            if not relevant:
                continue
            kept_counts = np.array([c["kept"] for c in counts.values()], dtype=np.float64)
            slots[name] = {"values": counts, "distinct": int(sum(c["used"] > 0 for c in counts.values())),
                           "of": len(counts), "evenness": round(_evenness(kept_counts), 4)}
    return {"templates": templates, "slots": slots}


def _fields(pack: Any, mode: str) -> set[str]:
    if mode not in pack.modes:
        return set()
    return {name for text in pack.templates(mode) for name in re.findall(r"{(\w+)}", text)}


def _evenness(counts: np.ndarray) -> float:
    total = counts.sum()
    if total <= 0 or len(counts) < 2:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log(p)).sum() / math.log(len(counts)))


def compute(run: ReviewRun, emb: EmbeddingSet | None, *, pack: Any = None, threshold: float = DEFAULT_THRESHOLD,
            probe: dict[str, Any] | None = None, missing_embeddings: int = 0) -> dict[str, Any]:
    """Every figure of the report (see the module docstring)."""
    records = list(run.records)
    summary = read_json_object(run.layout.summary) or {}
    classes = class_table(run, records, summary)
    kept = [r for r in records if r.status == "kept"]
    div = diversity(records, emb, run.labels) if emb is not None else []
    groups = duplicate_groups(records, emb, threshold)
    conflicts = cross_label_copies(records)
    extra_by_label = Counter(g.label for g in groups for _ in g.extra)
    warnings: list[str] = []
    for label, row in classes.items():
        if not row["met"]:
            warnings.append(f"{label!r} is short: {row['kept']} of {row['target']} images")
        if row["generated"] >= 10 and row["acceptance"] < LOW_ACCEPTANCE:
            warnings.append(f"{label!r} kept only {row['acceptance']:.0%} of what was generated: the generator "
                            "struggles with it (look at its rejected images, or rephrase the class)")
        if row["kept"] and extra_by_label[label] / row["kept"] > DUPLICATE_SHARE:
            warnings.append(f"{label!r} has {extra_by_label[label]} near-duplicate image(s) "
                            f"({extra_by_label[label] / row['kept']:.0%} of its images); `dalle-data dedup` sets them aside")
    warnings += [d.warning for d in div if d.warning]
    for digest, ids in conflicts:
        warnings.append(f"the same image is kept under two labels ({', '.join(ids)}): a labelling conflict")
    cov = coverage(records, pack)
    for name, axis in cov["slots"].items():
        if axis["of"] >= 2 and axis["distinct"] < axis["of"]:
            warnings.append(f"only {axis['distinct']} of the {axis['of']} {name!r} values were used "
                            "(ask for more images per class, or fewer values)")
    if missing_embeddings:
        warnings.append(f"{missing_embeddings} image(s) have no stored embedding: diversity and near-duplicates "
                        "leave them out")
    looks = look_alikes(records, emb, load_vocabulary(run.layout.vocabulary), list(run.spec.classes))
    warnings[:0] = [look.warning for look in looks]  # first: the images of such a class are not of it at all
    size = len(kept)
    return {
        "schema": SCHEMA,
        "dalle_data_version": summary.get("versions", {}).get("dalle-data") or __version__,
        "spec_hash": run.spec_hash,
        "complete": run.complete,
        "images": size,
        "classes": classes,
        "modes": summary.get("modes", {}),
        "histograms": histograms(records, run.labels),
        "diversity": [d.as_json() for d in div],
        "duplicates": {
            "threshold": threshold,
            "groups": [g.as_json() for g in groups],
            "set_aside": sum(len(g.extra) for g in groups),
            "share": round(sum(len(g.extra) for g in groups) / size, 4) if size else 0.0,
            "cross_label": [{"sha256": h, "ids": list(ids)} for h, ids in conflicts],
        },
        "coverage": cov,
        "embeddings": {"images": len(emb) if emb is not None else 0, "missing": missing_embeddings,
                       "scorer": emb.scorer if emb is not None else None},
        "probe": probe,
        "look_alikes": [look.as_json() for look in looks],
        "warnings": warnings,
    }
