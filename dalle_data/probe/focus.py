"""From a classifier's mistakes to a focus (``dalle-data focus``): where the errors are, and what to ask for.

Input: one prediction per labeled validation image (``path``, ``label``,
``pred``, optional ``probs`` as {class: p}), in JSONL or CSV. Each image
counts an *error mass*: 1 - p(label) when it has ``probs``, else 1 when
``pred`` is not ``label`` and 0 when it is. From the masses:

- a class's **share** is (0.5 + its mean mass) over the mean of that across
  classes: a class with more errors gets more images, none gets none;
- within a class, a **group** (a value of a template slot, ``environment: at
  night``, that the validation image shows: from ``--groups FILE`` or tagged
  by the scorer) is chased only with at least ``MIN_GROUP_IMAGES`` images of
  the class; its **weight** is its mean mass over the class's, kept within
  [``MIN_WEIGHT``, ``MAX_WEIGHT``]; a value not chased keeps weight 1;
- a **confused pair** (A predicted as B) with at least ``MIN_PAIR_ERRORS`` images
  gets **contrast prompts**: A's vanilla templates in the slot values where A
  was taken for B, with a share of A's prompts of half A's errors that were B
  (all contrasts of a class together at most ``MAX_CONTRASTS_SHARE``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dalle_data.errors import SpecError
from dalle_data.focus import SCHEMA, check_focus
from dalle_data.modes import TEXT_MODES
from dalle_data.planning import template_pack
from dalle_data.probe import tag_groups
from dalle_data.probe.measure import MIN_GROUP_IMAGES
from dalle_data.probe.sets import jsonl_objects
from dalle_data.prompts import render_template

MIN_PAIR_ERRORS = 3
MIN_WEIGHT, MAX_WEIGHT = 0.1, 10.0
MAX_CONTRASTS_SHARE = 0.5
MAX_CONTRAST_PROMPTS = 8
PROB_TOLERANCE = 0.01  # and what rounding each probability to 4 decimals may add up to (see ``_probs``)


@dataclass(frozen=True)
class Prediction:
    path: str  # absolute (relative paths in the file are from its folder)
    label: str
    pred: str
    probs: dict[str, float] | None = None

    @property
    def mass(self) -> float:
        """How wrong the prediction is: 1 - p(label), or 0/1 without probabilities."""
        if self.probs is not None:
            return max(0.0, 1.0 - self.probs.get(self.label, 0.0))
        return float(self.pred != self.label)


def read_predictions(file: Path, classes: Sequence[str], text: str | None = None, *,
                     images: bool = True) -> list[Prediction]:
    """The predictions file's lines (or ``text``, read from it), checked; every problem is a one-line
    ``SpecError`` naming the file and line. ``images``: each line's image must exist (the scorer reads it)."""
    try:
        text = file.read_text(encoding="utf-8-sig") if text is None else text
    except FileNotFoundError:
        raise SpecError(f"--predictions {file}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"--predictions {file}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if not text.strip():
        raise SpecError(f"--predictions {file}: the file is empty (one line per validation image: path, label, pred)")
    rows = (_csv_rows(file, text) if file.suffix.lower() == ".csv"
            else jsonl_objects(file, text, "with path, label, pred and optionally probs"))
    known = set(classes)
    out = []
    for number, row in rows:
        where = f"{file}:{number}"
        for key in ("path", "label", "pred"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise SpecError(f"{where}: needs {key} (a line has path, label, pred and optionally probs)")
        for key in ("label", "pred"):
            if row[key] not in known:
                raise SpecError(f"{where}: {key} {row[key]!r} is not a class of the run ({', '.join(classes)})")
        path = os.path.abspath(file.parent / row["path"])
        if images and not os.path.isfile(path):
            raise SpecError(f"{where}: {row['path']}: no such image (relative paths are from {file.parent})")
        out.append(Prediction(path, row["label"], row["pred"], _probs(row.get("probs"), known, where)))
    return out


def _csv_rows(file: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    missing = [k for k in ("path", "label", "pred") if k not in (reader.fieldnames or [])]
    if missing:
        raise SpecError(f"{file}:1: the header needs path, label and pred (it lacks {', '.join(missing)})")
    rows = []
    for row in reader:
        number = reader.line_num
        if None in row:
            raise SpecError(f"{file}:{number}: more fields than the header names")
        probs = row.get("probs")
        if probs:
            try:
                row["probs"] = json.loads(probs)
            except ValueError:
                raise SpecError(f"{file}:{number}: probs is not a JSON object ({{\"class\": p, ...}})") from None
        else:
            row.pop("probs", None)
        rows.append((number, row))
    if not rows:
        raise SpecError(f"--predictions {file}: no lines after the header")
    return rows


def _probs(value: Any, known: set[str], where: str) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not value:
        raise SpecError(f"{where}: probs must be an object of class: probability")
    out = {}
    for cls, p in value.items():
        if cls not in known:
            raise SpecError(f"{where}: probs names {cls!r}, which is not a class of the run")
        if isinstance(p, bool) or not isinstance(p, int | float) or not 0 <= p <= 1 or not math.isfinite(p):
            raise SpecError(f"{where}: probs[{cls!r}] = {p!r} is not a probability (0..1)")
        out[cls] = float(p)
    total = sum(out.values())
    if abs(total - 1.0) > PROB_TOLERANCE + 5e-5 * len(known) or total <= 0:
        raise SpecError(f"{where}: probs add up to {total:.3f}, not 1 (give every class's probability)")
    return {cls: p / total for cls, p in out.items()}


def focus_inputs(spec: Any) -> tuple[Any, dict[str, list[str]], str | None]:
    """What a focus for ``spec`` is made of: its template pack, the slots of its text modes (adversarial aside;
    vanilla when it has none) with their values, and the mode contrast prompts are written in (or none)."""
    modes = [m for m in spec.modes if m in TEXT_MODES and m != "adversarial"] or ["vanilla"]
    pack = template_pack(spec)
    return pack, slot_values(pack, modes), next((m for m in ("vanilla", "style") if m in modes), None)


def slot_values(pack: Any, modes: Sequence[str]) -> dict[str, list[str]]:
    """Each slot of the pack's ``modes`` and its values, in pack order."""
    out: dict[str, list[str]] = {}
    for mode in modes:
        for name, values in pack.slots(mode).items():
            seen = out.setdefault(name, [])
            seen += [v for v in values if v not in seen]
    return out


def tag_slots(scorer: Any, images: Any, slots: dict[str, list[str]]) -> list[dict[str, str]]:
    """Each image's value of every slot, tagged by the scorer by zero shot ("a {class} VALUE", as ``probe
    --groups auto`` tags test images); ``images`` is a ``probe.sets.Loaded``."""
    fields = {slot: {v: ["a {cls} " + v] for v in values} for slot, values in slots.items()}
    return tag_groups(scorer, images, fields)


def find_focus(preds: Sequence[Prediction], groups: Sequence[dict[str, str]] | None, classes: Sequence[str],
               pack: Any, slots: dict[str, list[str]], contrast_mode: str | None,
               made_from: str = "", run: str = "") -> tuple[dict[str, Any], dict[str, Any]]:
    """The focus (canonical, as ``check_focus`` returns it) and what it was made from (for the table).

    ``groups``: per prediction, its slot values (only fields named as a slot of
    ``slots`` with one of its values count), or ``None``: shares only.
    """
    by_class: dict[str, list[int]] = {c: [] for c in classes}
    for i, p in enumerate(preds):
        by_class[p.label].append(i)
    masses = [p.mass for p in preds]
    mean = {c: (sum(masses[i] for i in rows) / len(rows)) if rows else 0.0 for c, rows in by_class.items()}
    seen = [c for c in classes if by_class[c]]
    base = sum(0.5 + mean[c] for c in seen) / len(seen)
    entries: dict[str, Any] = {}
    found: dict[str, Any] = {"classes": {}, "groups": [], "pairs": []}
    for cls in classes:
        rows = by_class[cls]
        wrong = [i for i in rows if preds[i].pred != cls]
        confusions = Counter(preds[i].pred for i in wrong)
        share = round((0.5 + mean[cls]) / base, 2) if rows else 1.0
        found["classes"][cls] = {"images": len(rows), "wrong": len(wrong), "mass": round(mean[cls], 3),
                                 "mostly_as": confusions.most_common(1)[0] if confusions else None, "share": share}
        entry: dict[str, Any] = {"share": share}
        if rows:
            entry["why"] = (f"{len(wrong)} of {len(rows)} validation images wrong"
                            + (f", {confusions.most_common(1)[0][1]} of them as {confusions.most_common(1)[0][0]!r}"
                               if confusions else ""))
        else:
            entry["why"] = "no validation images of this class"
        if groups is not None and mean[cls] > 0:
            weights: dict[str, dict[str, float]] = {}
            for slot, values in slots.items():
                for v in values:
                    members = [i for i in rows if groups[i].get(slot) == v]
                    if len(members) < MIN_GROUP_IMAGES:
                        continue
                    m = sum(masses[i] for i in members) / len(members)
                    w = round(min(MAX_WEIGHT, max(MIN_WEIGHT, m / mean[cls])), 2)
                    weights.setdefault(slot, {})[v] = w
                    found["groups"].append({"class": cls, "slot": slot, "value": v, "images": len(members),
                                            "wrong": sum(preds[i].pred != cls for i in members), "weight": w})
            if weights:
                entry["weights"] = weights
        contrasts = _contrasts(cls, wrong, preds, groups, slots, pack, contrast_mode)
        for c in contrasts:
            found["pairs"].append({"class": cls, "mistaken_for": c["mistaken_for"], "errors": c["errors"],
                                   "where": c["where"], "share": c["share"], "prompts": len(c["prompts"])})
        if contrasts:
            entry["contrasts"] = contrasts
        entries[cls] = entry
    focus = {"schema": SCHEMA, "made_from": made_from, "run": run,
             "rule": (f"a group (class x slot value) is chased with at least {MIN_GROUP_IMAGES} validation images; "
                      f"a confused pair with at least {MIN_PAIR_ERRORS} errors"),
             "classes": entries}
    canonical = check_focus(focus, list(classes))
    for cls, entry in canonical["classes"].items():  # keep each contrast's evidence for a person to read
        for c, raw in zip(entry.get("contrasts", []), entries[cls].get("contrasts", [])):
            c["errors"], c["where"] = raw["errors"], raw["where"]
    return canonical, found


def _contrasts(cls: str, wrong: list[int], preds: Sequence[Prediction], groups: Sequence[dict[str, str]] | None,
               slots: dict[str, list[str]], pack: Any, mode: str | None) -> list[dict[str, Any]]:
    """Contrast prompt lists for the pairs (``cls`` taken for another) with enough errors: the slot values
    where the errors were, most errors first; a slot without such evidence (no groups) takes its values in turn."""
    if mode is None or not wrong:
        return []
    pairs = Counter(preds[i].pred for i in wrong)
    out = []
    for other, n in sorted(pairs.items(), key=lambda kv: (-kv[1], kv[0])):
        if n < MIN_PAIR_ERRORS:
            continue
        members = [i for i in wrong if preds[i].pred == other]
        where: dict[str, list[str]] = {}
        for slot, values in slots.items():
            counts = Counter(groups[i].get(slot) for i in members if groups and groups[i].get(slot) in values)
            if counts:
                where[slot] = [v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], slots[slot].index(kv[0])))]
        prompts: list[str] = []
        seen: set[str] = set()
        depth = max((len(v) for v in where.values()), default=0) or max(
            [min(len(v), MAX_CONTRAST_PROMPTS) for v in slots.values() if v], default=1)
        for k in range(depth):
            values = {slot: where[slot][min(k, len(where[slot]) - 1)] if slot in where else vs[k % len(vs)]
                      for slot, vs in slots.items() if vs}
            for text in render_template(pack, mode, cls, values):
                if text.casefold() not in seen:
                    seen.add(text.casefold())
                    prompts.append(text)
        if not prompts:
            continue
        out.append({"mistaken_for": other, "errors": n, "where": where,
                    "share": round(0.5 * n / len(wrong), 2), "prompts": prompts[:MAX_CONTRAST_PROMPTS]})
    total = sum(c["share"] for c in out)
    if total > MAX_CONTRASTS_SHARE:
        for c in out:
            c["share"] = math.floor(100 * c["share"] * MAX_CONTRASTS_SHARE / total) / 100
    return [c for c in out if c["share"] > 0]
