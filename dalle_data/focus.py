"""A focus: where the next images go, as a record (``focus.yaml``, schema ``dalle-data/focus/1``).

``dalle-data focus`` writes one from a classifier's mistakes; a person may
edit it; ``generate --focus FILE`` reads it into the spec (hashed: the same
spec and focus make the same ids and bytes). Per class it holds:

- ``share``: the class's part of the run's images, relative to the others
  (1 for a class the focus does not name): ``--per-class N`` becomes a total
  of N per class, dealt by share (largest remainder, ties in class order);
- ``weights``: per template slot (``environment``), a weight per value: the
  class's template prompts use a value that often, relative to the others
  (a value not named weighs 1; 0 never uses it);
- ``contrasts``: prompts written for a confused pair (the class in the
  contexts where it was mistaken for another), each list with the ``share``
  of the class's vanilla prompts it takes.

Everything here is pure data and arithmetic; what a focus is made from is
``dalle_data.probe.focus``, where it is spent is ``dalle_data.planning``.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from dalle_data.errors import SpecError

__all__ = ["SCHEMA", "check_focus", "class_quotas", "describe", "item_weight", "load_focus_file", "spread"]

SCHEMA = "dalle-data/focus/1"
MAX_CONTRAST_SHARE = 0.9  # a class keeps at least a tenth of its vanilla prompts from its templates
_TOP = frozenset({"schema", "classes", "made_from", "rule", "run", "why"})
_CLASS = frozenset({"share", "weights", "contrasts", "why"})
_CONTRAST = frozenset({"mistaken_for", "share", "prompts", "errors", "where"})
T = TypeVar("T")


def load_focus_file(path: str | Path) -> dict[str, Any]:
    """A focus file's mapping (not yet checked: ``check_focus``); a missing or malformed file is a ``SpecError``."""
    path = Path(path).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError(f"focus file {path} does not exist (make one with `dalle-data focus OUT --predictions FILE`)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"focus file {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise SpecError(f"focus file {path}{where}: {getattr(err, 'problem', None) or 'not valid YAML'}") from None
    if not isinstance(data, dict):
        raise SpecError(f"focus file {path}: it must be a mapping with schema: {SCHEMA} and classes:")
    return data


MAX_NUMBER = 1e6  # a share or weight above it is a typo, and products of such numbers overflow


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0 \
            or value > MAX_NUMBER:
        raise ValueError(f"{where}: give a number from 0 to {MAX_NUMBER:g}, not {value!r}")
    return float(value)


def check_focus(data: Mapping[str, Any], classes: Sequence[str] | None = None) -> dict[str, Any]:
    """The focus in its canonical form (what the spec holds and hashes); ``ValueError`` names the first problem.

    Unknown keys, classes not in ``classes`` (when given), negative or non-numeric
    weights and shares, and contrast lists without prompts are refused. Slot
    names and values are checked against the template pack by ``planning``.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"a focus is a mapping with schema: {SCHEMA} and classes:")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"schema: this version reads {SCHEMA!r}, not {data.get('schema')!r}")
    unknown = sorted(set(map(str, data)) - _TOP)
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(sorted(_TOP))})")
    body = data.get("classes")
    if not isinstance(body, Mapping) or not body:
        raise ValueError("classes: give at least one class, each with share:, weights: or contrasts:")
    out_classes: dict[str, Any] = {}
    for cls, entry in body.items():
        cls = str(cls)
        if classes is not None and cls not in classes:
            raise ValueError(f"class {cls!r} is not a class of the run ({', '.join(classes)}): take it out of "
                             "the focus file")
        if not isinstance(entry, Mapping):
            raise ValueError(f"classes.{cls}: a mapping of share:, weights:, contrasts:")
        bad = sorted(set(map(str, entry)) - _CLASS)
        if bad:
            raise ValueError(f"classes.{cls}: unknown key {bad[0]!r} (known: {', '.join(sorted(_CLASS))})")
        item: dict[str, Any] = {"share": _number(entry.get("share", 1.0), f"classes.{cls}.share")}
        weights: dict[str, dict[str, float]] = {}
        if not isinstance(entry.get("weights") or {}, Mapping):
            raise ValueError(f"classes.{cls}.weights: a mapping of slot name to {{value: weight}}")
        if not isinstance(entry.get("contrasts") or [], list):
            raise ValueError(f"classes.{cls}.contrasts: a list of {{mistaken_for:, share:, prompts:}}")
        for slot, values in (entry.get("weights") or {}).items():
            if not isinstance(values, Mapping) or not values:
                raise ValueError(f"classes.{cls}.weights.{slot}: a mapping of slot value to weight")
            weights[str(slot)] = {str(v): _number(w, f"classes.{cls}.weights.{slot}.{v}") for v, w in values.items()}
        if weights:
            item["weights"] = weights
        contrasts = []
        for k, c in enumerate(entry.get("contrasts") or []):
            where = f"classes.{cls}.contrasts[{k}]"
            if not isinstance(c, Mapping):
                raise ValueError(f"{where}: a mapping of mistaken_for:, share:, prompts:")
            bad = sorted(set(map(str, c)) - _CONTRAST)
            if bad:
                raise ValueError(f"{where}: unknown key {bad[0]!r} (known: {', '.join(sorted(_CONTRAST))})")
            prompts = c.get("prompts")
            if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise ValueError(f"{where}.prompts: a list of prompt texts")
            other = c.get("mistaken_for")  # what the prompts contrast with: shown, not checked (it may be any label)
            contrasts.append({"mistaken_for": None if other is None else str(other),
                              "share": _number(c.get("share", 0.0), f"{where}.share"),
                              "prompts": [" ".join(p.split()) for p in prompts]})
        total = sum(c["share"] for c in contrasts)
        if total > MAX_CONTRAST_SHARE:
            raise ValueError(f"classes.{cls}.contrasts: their shares add up to {total:g}; keep them at most "
                             f"{MAX_CONTRAST_SHARE:g} (the rest of the class's prompts come from its templates)")
        if contrasts:
            item["contrasts"] = contrasts
        if "why" in entry:
            item["why"] = str(entry["why"])
        out_classes[cls] = item
    if classes is not None and not any(out_classes.get(c, {}).get("share", 1.0) > 0 for c in classes):
        raise ValueError("every class has share 0: nothing would be made")
    out: dict[str, Any] = {"schema": SCHEMA}
    for key in ("made_from", "run", "rule", "why"):
        if key in data:
            out[key] = data[key] if isinstance(data[key], str | int | float) else str(data[key])
    out["classes"] = out_classes
    return out


def class_quotas(total_per_class: int, classes: Sequence[str], focus: Mapping[str, Any] | None) -> dict[str, int]:
    """Each class's kept-image quota: ``total_per_class`` × classes, dealt by share (largest remainder)."""
    if not focus:
        return dict.fromkeys(classes, total_per_class)
    shares = [float(focus["classes"].get(c, {}).get("share", 1.0)) for c in classes]
    total = total_per_class * len(classes)
    whole = sum(shares)
    exact = [total * s / whole for s in shares]
    quotas = [math.floor(x) for x in exact]
    order = sorted(range(len(classes)), key=lambda i: (-(exact[i] - quotas[i]), i))
    for i in order[: total - sum(quotas)]:
        quotas[i] += 1
    return dict(zip(classes, quotas))


def item_weight(values: Mapping[str, str], weights: Mapping[str, Mapping[str, float]]) -> float:
    """A prompt's weight: the product of its slot values' weights (a value not named weighs 1)."""
    w = 1.0
    for slot, value in values.items():
        w *= float(weights.get(slot, {}).get(value, 1.0))
    return w


def spread(items: Sequence[T], weights: Sequence[float], n: int) -> list[T]:
    """``n`` picks from ``items``, each about ``n × weight / total`` times, interleaved (stride scheduling).

    Deterministic: the item due first is picked, ties go to the earlier item;
    an item of weight 0 is never picked. ``[]`` when every weight is 0.
    """
    heap = [((0.5 / w), i) for i, w in enumerate(weights) if w > 0]
    heapq.heapify(heap)
    picks: list[T] = []
    counts = [0] * len(items)
    while heap and len(picks) < n:
        _, i = heapq.heappop(heap)
        picks.append(items[i])
        counts[i] += 1
        heapq.heappush(heap, ((counts[i] + 0.5) / weights[i], i))
    return picks


def describe(focus: Mapping[str, Any], classes: Sequence[str], per_class: int) -> list[str]:
    """One line per class the focus names: its images, its heaviest slot values, its contrasts, and why."""
    quotas = class_quotas(per_class, classes, focus)
    lines = []
    for cls in classes:
        entry = focus["classes"].get(cls)
        if entry is None:
            continue
        parts = [f"{quotas[cls]} images (share {entry['share']:g})"]
        for slot, values in (entry.get("weights") or {}).items():
            top = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
            parts.append(f"{slot}: " + ", ".join(f"{v} ×{w:g}" for v, w in top[:3]) + (" ..." if len(top) > 3 else ""))
        for c in entry.get("contrasts") or []:
            against = f" against {c['mistaken_for']!r}" if c.get("mistaken_for") else ""
            parts.append(f"{len(c['prompts'])} contrast prompt(s){against} ({c['share']:.0%})")
        line = f"{cls}: " + "; ".join(parts)
        if entry.get("why"):
            line += f" because {entry['why']}"
        lines.append(line)
    return lines
