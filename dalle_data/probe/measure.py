"""What a probe measures on the test set: top-1, per class, per group with the worst group, confusions.

A *group* is a (class, value) pair of one group field ("red circle" on the
"night" background): worst-group accuracy is the lowest accuracy over every
group of every field that has test images, as the spurious-correlation
literature (Waterbirds) reports it. Over several seeds every figure is a mean
with its standard deviation (``aggregate``); the worst group of a seed is that
seed's own lowest group, so ``worst_group`` is the mean of the seeds' worst.
Groups with fewer than ``MIN_GROUP_IMAGES`` test images are reported but are
never the worst.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

CONFUSED_PAIRS = 5  # the most confused (true, predicted) pairs a report lists
MIN_GROUP_IMAGES = 5  # a smaller group is reported but is not a candidate for the worst: one image is noise


def group_name(cls: str, value: str) -> str:
    return f"{cls} / {value}"


def evaluate(pred: Sequence[int], truth: Sequence[int], classes: Sequence[str],
             groups: Sequence[dict[str, str]] | None) -> dict[str, Any]:
    """One seed's figures: top1, per_class, groups {field: {"class / value": acc}}, worst, confusion."""
    pred, truth = [int(p) for p in pred], [int(t) for t in truth]
    n = len(classes)
    confusion = [[0] * n for _ in range(n)]
    for p, t in zip(pred, truth):
        confusion[t][p] += 1
    per_class = {c: round(confusion[i][i] / sum(confusion[i]), 4) for i, c in enumerate(classes) if sum(confusion[i])}
    by_group: dict[str, dict[str, list[int]]] = {}
    for i, g in enumerate(groups or ()):
        for field, value in g.items():
            hits = by_group.setdefault(field, {}).setdefault(group_name(classes[truth[i]], value), [0, 0])
            hits[0] += pred[i] == truth[i]
            hits[1] += 1
    group_acc = {f: {name: round(h / total, 4) for name, (h, total) in sorted(cells.items())}
                 for f, cells in sorted(by_group.items())}
    worst = _worst(group_acc, by_group)
    correct = sum(p == t for p, t in zip(pred, truth))
    return {"top1": round(correct / len(truth), 4) if truth else 0.0, "per_class": per_class,
            "groups": group_acc, "group_sizes": {f: {name: c[1] for name, c in sorted(cells.items())}
                                                  for f, cells in sorted(by_group.items())}, "worst": worst, "worst_group": worst["accuracy"] if worst else None,
            "confusion": confusion}


def _worst(group_acc: dict[str, dict[str, float]], by_group: dict[str, dict[str, list[int]]]) -> dict[str, Any] | None:
    cells = [(acc, field, name) for field, named in group_acc.items() for name, acc in named.items()
             if by_group[field][name][1] >= MIN_GROUP_IMAGES]
    if not cells:
        return None
    acc, field, name = min(cells)
    return {"field": field, "group": name, "accuracy": acc, "images": by_group[field][name][1]}


def confused_pairs(confusion: list[list[int]], classes: Sequence[str], top: int = CONFUSED_PAIRS) -> list[dict[str, Any]]:
    """The most frequent wrong (true → predicted) pairs: count and the share of the true class's test images."""
    pairs = []
    for t, row in enumerate(confusion):
        total = sum(row)
        for p, count in enumerate(row):
            if p != t and count:
                pairs.append({"true": classes[t], "predicted": classes[p], "count": count,
                              "rate": round(count / total, 4)})
    pairs.sort(key=lambda d: (-d["count"], d["true"], d["predicted"]))
    return pairs[:top]


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return round(mean, 4), round(statistics.stdev(values), 4) if len(values) > 1 else 0.0


def aggregate(runs: Sequence[dict[str, Any]], seeds: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """The figures of several seeds as mean and sd (``X`` and ``X_sd``), confusions summed, each seed's brief."""
    top1, top1_sd = mean_sd([r["top1"] for r in runs])
    worsts = [r["worst_group"] for r in runs if r["worst_group"] is not None]
    per_class = {c: mean_sd([r["per_class"][c] for r in runs]) for c in classes if c in runs[0]["per_class"]}
    groups = {f: {name: mean_sd([r["groups"][f][name] for r in runs]) for name in named}
              for f, named in runs[0]["groups"].items()}
    confusion = [[sum(r["confusion"][t][p] for r in runs) for p in range(len(classes))] for t in range(len(classes))]
    out: dict[str, Any] = {"top1": top1, "top1_sd": top1_sd}
    if worsts:
        out["worst_group"], out["worst_group_sd"] = mean_sd(worsts)
        sizes = runs[0]["group_sizes"]
        cells = [(v[0], f, name) for f, named in groups.items() for name, v in named.items()
                 if sizes[f][name] >= MIN_GROUP_IMAGES]
        if cells:
            acc, field, name = min(cells)
            out["worst"] = {"field": field, "group": name, "accuracy": acc}  # the lowest mean over seeds
    out["per_class"] = {c: v[0] for c, v in per_class.items()}
    out["per_class_sd"] = {c: v[1] for c, v in per_class.items()}
    if groups:
        out["groups"] = {f: {name: v[0] for name, v in named.items()} for f, named in groups.items()}
        out["groups_sd"] = {f: {name: v[1] for name, v in named.items()} for f, named in groups.items()}
        out["group_sizes"] = runs[0]["group_sizes"]
    out["confusion"] = confusion
    out["confused_pairs"] = confused_pairs(confusion, classes)
    out["seeds"] = [{"seed": s, "top1": r["top1"], "worst_group": r["worst_group"]} for s, r in zip(seeds, runs)]
    return out
