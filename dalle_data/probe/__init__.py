"""Does the synthetic data help a classifier on real images? ``dalle-data probe``.

``run_probe`` trains a learner (``learners``: a linear probe on scorer
embeddings, or a small CNN from scratch on the pixels) on each training set
the options ask for and measures it on a real labeled test set
(``measure``): top-1, per class, per group with the worst group, the
confusions; over ``seeds`` seeds, as mean ± sd. Training sets:

* ``synthetic``: the kept images of a dalle-data output;
* ``synthetic (unfiltered)``: kept and rejected images (``--ablate filter``;
  needs a run made with ``--keep-rejected``);
* ``real`` (``--real-train``) and ``real + synthetic``;
* ``real + N synthetic`` for each ``N`` of ``--sizes`` (``N synthetic``
  without ``--real-train``): a class-balanced random subset, drawn per seed,
  so that the report can draw accuracy against synthetic images added;
* ``zero-shot``: the scorer itself, for reference (no training).

Hard negatives (adversarial images) are left out: their label is not a class
of the test set. The report (``--json``, ``OUT/report/probe.json``) follows
``SCHEMA`` (documented in ``docs/probe.md``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dalle_data.errors import SpecError
from dalle_data.probe.learners import LEARNERS, ONNX_INSTALL, fit_linear, make_learner, save_onnx
from dalle_data.probe.measure import aggregate, evaluate
from dalle_data.probe.sets import (
    LabeledImages,
    Loaded,
    from_imagefolder,
    from_output,
    load_readable,
    read_groups,
    rejected_from_output,
)

__all__ = ["LEARNERS", "SCHEMA", "fit_linear", "parse_sizes", "run_probe"]

SCHEMA = "dalle-data/probe/2"
MAX_SEEDS = 20
log = logging.getLogger(__name__)


def parse_sizes(text: str | None) -> list[int]:
    """``"0,64,192"`` → ``[0, 64, 192]`` (sorted, unique); raises ``SpecError`` for anything else."""
    if text is None:
        return []
    sizes = []
    for part in (p.strip() for p in text.split(",")):
        try:
            size = int(part)
        except ValueError:
            size = -1
        if size < 0 or not part.isascii():
            raise SpecError(f"--sizes {text}: give whole numbers of synthetic images, e.g. 0,64,192")
        sizes.append(size)
    return sorted(set(sizes))


def check_options(learner: str, seeds: int) -> None:
    """``--learner`` and ``--seeds`` as one-line errors, before anything is loaded."""
    if learner not in LEARNERS:
        raise SpecError(f"--learner {learner}: choose one of {', '.join(LEARNERS)}")
    if not 1 <= seeds <= MAX_SEEDS:
        raise SpecError(f"--seeds {seeds}: give from 1 to {MAX_SEEDS} (each seed trains every setting again)")


def pack_fields(spec: Any) -> dict[str, dict[str, list[str]]]:
    """What ``--groups auto`` tags test images with: each slot of the run's template pack (its values, as
    "a {cls} VALUE"), and, when the run used two or more template modes, the mode (its templates filled)."""
    from dalle_data.planning import template_pack  # deferred: planning loads only for --groups auto

    pack = template_pack(spec)
    modes = [m for m in pack.modes if m in spec.modes and m != "adversarial"] or list(pack.modes)
    fields: dict[str, dict[str, list[str]]] = {}
    for mode in modes:
        for name, values in pack.slots(mode).items():
            for v in values:
                fields.setdefault(name, {})[v] = ["a {cls} " + v]
    if len(modes) > 1:
        fields["mode"] = {m: filled(pack.templates(m), pack.slots(m)) for m in modes}
    return fields


def filled(templates: tuple[str, ...], slots: dict[str, tuple[str, ...]], most: int = 16) -> list[str]:
    """Up to ``most`` prompts from ``templates``, slot values taken in turn, ``{cls}`` left to fill."""
    width = max((len(v) for v in slots.values()), default=1)
    out = []
    for t in templates:
        for k in range(width):
            out.append(t.format(cls="{cls}", **{n: v[k % len(v)] for n, v in slots.items()}))
    return out[:most] if len(out) <= most else out[:: max(1, len(out) // most)][:most]


def run_probe(
    train: Path, test: Path, *, scorer: Any, classes: Sequence[str], real_train: Path | None = None,
    ablate_filter: bool = False, learner: str = "linear", seeds: int = 1, sizes: Sequence[int] = (),
    groups: str | Path | None = None, tag_fields: dict[str, dict[str, list[str]]] | None = None,
    image_size: int | None = None, epochs: int | None = None, device: str = "cpu",
    progress: Callable[[str], None] | None = None, predictions: dict[str, list[dict[str, Any]]] | None = None,
    save_learner: Path | None = None,
) -> dict[str, Any]:
    """Every comparison the options ask for, over the run's ``classes``; returns the report (``--json``).

    ``groups``: ``None`` (the test folder's ``metadata.jsonl``, if any), a
    JSONL file, or ``"auto"``: the scorer tags each test image with one value
    of each of ``tag_fields`` (field → value → prompts with ``{cls}``: the
    run's template-pack slots, and its modes) by zero shot (``tag_groups``).
    ``save_learner``: the seed-0 CNN of ``real + synthetic`` (``synthetic``
    without real images) saved there as ONNX (``learners.save_onnx``): the
    learner ``generate --select uncertain:PATH`` asks.
    Everything is checked before any training starts. ``predictions``, when
    given, is filled with each setting's seed-0 predictions on the test images
    (path, label, pred, probs: what ``dalle-data focus --from-probe`` reads).
    """
    import torch

    say = progress or (lambda line: None)
    check_options(learner, seeds)
    if save_learner is not None:
        check_save_learner(learner, save_learner)
    if 0 in sizes and real_train is None:
        raise SpecError("--sizes 0: zero synthetic images is the real baseline; add --real-train DIR or drop the 0")
    classes = list(classes)
    sets: dict[str, tuple[str, LabeledImages]] = {"train": (f"--train {train}", from_output(train))}
    if ablate_filter:
        sets["train (rejected)"] = (f"--train {train} (rejected)", rejected_from_output(train))
    test_images = from_imagefolder(test, classes)
    groups_source = "metadata.jsonl" if test_images.groups is not None else None
    if groups is not None and groups != "auto":
        test_images.groups = read_groups(Path(groups), test_images, test)
        groups_source = str(groups)
    sets["test"] = (f"--test {test}", test_images)
    if real_train is not None:
        sets["real-train"] = (f"--real-train {real_train}",
                              from_imagefolder(real_train, classes, "--real-train", with_groups=False))
    loaded = {name: load_readable(images, what) for name, (what, images) in sets.items()}
    index = {c: i for i, c in enumerate(classes)}
    synthetic = loaded["train"]
    too_many = [n for n in sizes if n > len(synthetic.labels)]
    if too_many:
        raise SpecError(f"--sizes {','.join(map(str, too_many))}: --train {train} has only "
                        f"{len(synthetic.labels)} kept images of the test's classes")
    _check_trainable(loaded, classes, real_train is not None)
    test_set = loaded["test"]
    the_learner = make_learner(learner, scorer=scorer, image_size=image_size, epochs=epochs, device=device,
                               test_images=test_set.images)
    say(f"preparing {sum(len(s.images) for s in loaded.values())} images for the {the_learner.describe()}")
    features = {name: _features(the_learner, s) for name, s in loaded.items()}
    y_test = torch.tensor([index[c] for c in test_set.labels])

    agreement = None
    if groups == "auto":
        auto = tag_groups(scorer, test_set, tag_fields or {})
        if test_set.groups:
            agreement = tagging_agreement(auto, test_set.groups)
        test_set.groups = auto
        groups_source = "auto"

    seed_list = list(range(seeds))
    settings: list[tuple[str, list[str], int | None]] = [("synthetic", ["train"], None)]
    if ablate_filter:
        settings.append(("synthetic (unfiltered)", ["train", "train (rejected)"], None))
    if real_train is not None:
        settings += [("real", ["real-train"], None), ("real + synthetic", ["real-train", "train"], None)]
    for n in sizes:
        if n == 0:
            continue  # the "real" row
        settings.append((f"real + {n} synthetic" if real_train is not None else f"{n} synthetic",
                         (["real-train"] if real_train is not None else []) + ["train"], n))

    saved_setting = "real + synthetic" if real_train is not None else "synthetic"
    results: dict[str, Any] = {}
    for name, parts, subset in settings:
        runs = []
        started = time.monotonic()
        for seed in seed_list:
            x, y, counts = _training_set(features, loaded, parts, index, subset, seed)
            predict = the_learner.fit(x, y, len(classes), seed)
            probs = predict(features["test"])
            runs.append(evaluate(probs.argmax(-1), y_test, classes, test_set.groups))
            if predictions is not None and seed == seed_list[0]:
                predictions[name] = prediction_lines(test_set, probs, classes)
            if save_learner is not None and seed == seed_list[0] and name == saved_setting:
                save_onnx(predict, save_learner, classes, f"dalle-data probe: {learner} on {name}, seed {seed}")
        row = {"train_images": len(y), "real_images": counts["real"], "synthetic_images": counts["synthetic"],
               **aggregate(runs, seed_list, classes)}
        results[name] = row
        say(f"{name}: top-1 {_pm(row['top1'], row['top1_sd'])}"
            + (f", worst group {_pm(row['worst_group'], row['worst_group_sd'])}" if "worst_group" in row else "")
            + f" ({len(y)} images, {seeds} seed(s), {time.monotonic() - started:.0f}s)")
    zero = zero_shot(scorer, test_set, classes)
    results["zero-shot"] = {"train_images": 0, "real_images": 0, "synthetic_images": 0,
                            **aggregate([evaluate(zero, y_test, classes, test_set.groups)], [0], classes)}
    results["zero-shot"].pop("seeds")
    report: dict[str, Any] = {
        "schema": SCHEMA, "learner": learner, "learner_detail": the_learner.describe(), "seeds": seeds,
        "classes": classes, "test_images": len(y_test), "scorer": scorer.name,
        "skipped": {name: s.skipped for name, s in loaded.items()},
        "groups_source": groups_source, "group_fields": sorted({f for g in test_set.groups or () for f in g}),
        "results": results, "curve": _curve(results, real_train is not None),
    }
    if agreement is not None:
        report["tagging_agreement"] = agreement
    if save_learner is not None:
        report["saved_learner"] = {"path": str(save_learner), "setting": saved_setting, "seed": seed_list[0]}
    return report


def check_save_learner(learner: str, path: Path) -> None:
    """``--save-learner PATH``, before anything is trained: a CNN, onnx installed, a file that can be written."""
    if learner != "cnn":
        raise SpecError("--save-learner saves the CNN: add --learner cnn (a linear probe runs on the scorer's "
                        "embeddings, which the file would have to carry)")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise SpecError(f"--save-learner writes ONNX: {ONNX_INSTALL}") from None
    if Path(path).is_dir():
        raise SpecError(f"--save-learner {path}: is a folder; give a file name (e.g. learner.onnx)")
    if Path(path).suffix.lower() != ".onnx":
        raise SpecError(f"--save-learner {path}: name the file *.onnx (it is an ONNX model)")
    import os

    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the folders still to make go under the nearest one that exists
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SpecError(f"--save-learner {path}: cannot write under {parent}")


def prediction_lines(test_set: Loaded, probs: Any, classes: list[str]) -> list[dict[str, Any]]:
    """One line per test image: its path, label, the predicted class and every class's probability."""
    lines = []
    for path, label, row in zip(test_set.paths, test_set.labels, probs.tolist()):
        p = {c: round(v, 4) for c, v in zip(classes, row)}
        lines.append({"path": path, "label": label, "pred": classes[max(range(len(row)), key=row.__getitem__)],
                      "probs": p})
    return lines


def _pm(mean: float, sd: float) -> str:
    return f"{mean:.1%}" + (f" ± {sd:.1%}" if sd else "")


def _features(learner: Any, s: Loaded) -> Any:
    if not s.images:
        return None  # an empty set (no rejected images, say) adds no rows
    if learner.key not in s.cache:
        s.cache[learner.key] = learner.features(s.images)
    return s.cache[learner.key]


def _check_trainable(loaded: dict[str, Loaded], classes: list[str], real: bool) -> None:
    """Every setting has at least two classes to tell apart."""
    for name in ("train", "real-train") if real else ("train",):
        present = set(loaded[name].labels)
        if len(present & set(classes)) < 2:
            raise SpecError(f"{'--train' if name == 'train' else '--real-train'}: a classifier needs images of at "
                            f"least two classes; it has {len(present)} ({', '.join(sorted(present)) or 'none'})")


def _training_set(features: dict[str, Any], loaded: dict[str, Loaded], parts: list[str], index: dict[str, int],
                  subset: int | None, seed: int) -> tuple[Any, Any, dict[str, int]]:
    """The rows of ``parts`` (the synthetic part cut to ``subset`` images, class-balanced, by ``seed``)."""
    import torch

    xs, ys, counts = [], [], {"real": 0, "synthetic": 0}
    for part in parts:
        if features[part] is None:
            continue
        rows = [i for i, c in enumerate(loaded[part].labels) if c in index]
        if part == "train" and subset is not None:
            rows = balanced_subset([loaded[part].labels[i] for i in rows], rows, subset, seed)
        xs.append(features[part][rows])
        ys += [index[loaded[part].labels[i]] for i in rows]
        counts["real" if part == "real-train" else "synthetic"] += len(rows)
    return torch.cat(xs), torch.tensor(ys), counts


def balanced_subset(labels: list[str], rows: list[int], n: int, seed: int) -> list[int]:
    """``n`` of ``rows``, spread over the classes as evenly as they allow, drawn by ``seed``."""
    rng = random.Random(seed)
    n = min(n, len(rows))
    by_class: dict[str, list[int]] = {}
    for label, row in zip(labels, rows):
        by_class.setdefault(label, []).append(row)
    for pool in by_class.values():
        rng.shuffle(pool)
    chosen: list[int] = []
    while len(chosen) < n:
        for pool in by_class.values():
            if pool and len(chosen) < n:
                chosen.append(pool.pop())
    return sorted(chosen)


def zero_shot(scorer: Any, test_set: Loaded, classes: list[str]) -> Any:
    """The scorer's own zero-shot predictions on the test images (the class prompts of ``set_labels``)."""
    import torch

    x = _features(make_learner("linear", scorer=scorer), test_set)
    scorer.set_labels(classes)
    with torch.no_grad():
        scale = float(scorer.model.logit_scale.detach().exp())
        return (scale * x @ scorer._label_emb.float().cpu().T).argmax(-1)


def tag_groups(scorer: Any, test_set: Loaded, fields: dict[str, dict[str, list[str]]]) -> list[dict[str, str]]:
    """Each test image's value of every field, by zero shot: the value whose prompts (``{cls}`` filled with the
    image's class; their embeddings averaged) are nearest the image."""
    import torch

    if not fields:
        raise SpecError("--groups auto: the run's template pack has no slots to tag the test images with; "
                        "give --groups FILE instead")
    x = _features(make_learner("linear", scorer=scorer), test_set)
    tags: list[dict[str, str]] = [{} for _ in test_set.labels]
    with torch.no_grad():
        for field, values in sorted(fields.items()):
            names = list(values)
            for label in sorted(set(test_set.labels)):
                text = torch.stack([
                    torch.nn.functional.normalize(torch.nn.functional.normalize(
                        scorer.encode_text([p.format(cls=label) for p in values[v]]).float().cpu(), dim=-1
                    ).mean(0), dim=-1) for v in names])
                rows = [i for i, c in enumerate(test_set.labels) if c == label]
                for i, b in zip(rows, (x[rows] @ text.T).argmax(-1).tolist()):
                    tags[i][field] = names[b]
    return tags


def tagging_agreement(auto: list[dict[str, str]], truth: list[dict[str, str]]) -> dict[str, Any]:
    """For each tagged slot, the true field it agrees with best, under the majority mapping of its values."""
    out: dict[str, Any] = {}
    for slot in sorted({k for g in auto for k in g}):
        best: dict[str, Any] | None = None
        for field in sorted({k for g in truth for k in g}):
            pairs = [(a[slot], t[field]) for a, t in zip(auto, truth) if slot in a and field in t]
            if not pairs:
                continue
            counts: dict[str, dict[str, int]] = {}
            for a, t in pairs:
                counts.setdefault(a, {}).setdefault(t, 0)
                counts[a][t] += 1
            mapping = {a: max(sorted(c), key=c.__getitem__) for a, c in counts.items()}
            agree = sum(mapping[a] == t for a, t in pairs) / len(pairs)
            if best is None or agree > best["agreement"]:
                common = max(sum(t == v for _, t in pairs) for v in {t for _, t in pairs})
                best = {"field": field, "agreement": round(agree, 4), "images": len(pairs),
                        "chance": round(common / len(pairs), 4),  # always naming the commonest true value
                        "mapping": dict(sorted(mapping.items()))}
        if best is not None:
            out[slot] = best
    return out


def _curve(results: dict[str, Any], real: bool) -> list[dict[str, Any]]:
    """Accuracy and worst group against synthetic images added (to the real set, when there is one)."""
    points = {}
    for name, row in results.items():
        if name == "zero-shot" or name == "synthetic (unfiltered)":
            continue
        if real and row["real_images"] == 0:
            continue
        points[row["synthetic_images"]] = {"synthetic_images": row["synthetic_images"], "setting": name,
                                           **{k: row[k] for k in ("top1", "top1_sd", "worst_group", "worst_group_sd")
                                              if k in row}}
    return [points[n] for n in sorted(points)] if len(points) > 1 else []
