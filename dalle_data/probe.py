"""Does the synthetic data help? A linear probe on CLIP image embeddings.

``probe`` embeds images with a CLIP scorer, trains a multinomial logistic
regression (a linear probe, as in the CLIP paper) on a training set and
reports top-1 accuracy, overall and per class, on a real labeled test set,
beside the scorer's zero-shot accuracy on the same test set. Training sets:

* ``synthetic``: the kept images of a dalle-data output;
* ``synthetic (unfiltered)``: kept and rejected images (``--ablate filter``;
  needs a run made with ``--keep-rejected``);
* ``real``: a real labeled ImageFolder (``--real-train``), and
  ``real + synthetic``.

Hard negatives (adversarial images) are left out: their label is not a class
of the test set. Test folders are matched to class names exactly or by their
safe folder name ("red circle" ↔ "red_circle").

An unreadable image (empty, truncated, not an image) in any set is skipped
with one warning line per set, as ``generate`` treats bad sources; the report
counts them per set (``skipped``: ``train``, ``train (rejected)`` with
``--ablate filter``, ``test``, ``real-train``). A set none of whose files can
be read is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dalle_data.errors import SpecError
from dalle_data.naming import safe_dir_name
from dalle_data.review.apply import recover
from dalle_data.rundir import open_run
from dalle_data.sources import IMAGE_SUFFIXES, SourceError, load_rgb
from dalle_data.verify import writer_context
from dalle_data.writers.base import destination
from dalle_data.writers.formats import read_back

log = logging.getLogger(__name__)


MAX_REASONS = 3  # unreadable files named in a warning or error line


@dataclass
class LabeledImages:
    paths: list[str]
    labels: list[str]
    data: list[bytes | None]


@dataclass(frozen=True)
class Embedded:
    """The readable images of a set: L2-normalized embeddings, their labels, and how many files were skipped."""

    x: Any
    labels: list[str]
    skipped: int


def from_output(out: Path) -> LabeledImages:
    """The positive kept images of a dalle-data output, with their class names (read through its records)."""
    labeled = _run_images(out, "dataset")
    if not labeled.paths:
        raise SpecError(f"--train {out}: no kept images found (is it a dalle-data output?)")
    return labeled


def rejected_from_output(out: Path) -> LabeledImages:
    """The rejected positive images of a dalle-data output (made with ``--keep-rejected``); may be empty."""
    recover(out)
    if not open_run(out).spec.keep_rejected:
        raise SpecError(f"--ablate filter needs the rejected images: rerun generate with --keep-rejected into {out}")
    return _run_images(out, "rejected")


def _run_images(out: Path, where: str) -> LabeledImages:
    """The positive images a run's records place in its dataset (or rejected set): the run's files only,
    from its ImageFolder tree when it has one, else from its Parquet parts (``Format.read_rank``)."""
    recover(out)  # a cut-off review --apply is finished first (commands do this, the reader does not)
    run = open_run(out)
    layout, ctx = run.layout, writer_context(run)
    records = [r for r in run.records() if destination(r, ctx) == where and r.role == "positive"]
    fmt, images = read_back(layout, run.spec.formats, records, where)  # type: ignore[arg-type]
    data = [d if d is not None or fmt is None or not fmt.inline else b"" for _, d in images]
    return LabeledImages([path for path, _ in images], [r.label for r, _ in zip(records, images)], data)


def from_imagefolder(root: Path, classes: Sequence[str]) -> LabeledImages:
    """A real ImageFolder (``root/<class>/<image>``), folders mapped onto ``classes``."""
    if not root.is_dir():
        raise SpecError(f"{root}: no such directory")
    by_folder = {safe_dir_name(c): c for c in classes} | {c: c for c in classes}
    paths, labels = [], []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = by_folder.get(folder.name)
        if label is None:
            log.warning("%s: folder %s is not a class of the training set; skipped", root, folder.name)
            continue
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(f))
                labels.append(label)
    if not paths:
        raise SpecError(f"{root}: no images in folders named after the classes ({', '.join(classes)})")
    return LabeledImages(paths, labels, [None] * len(paths))


def load_readable(images: LabeledImages, what: str) -> tuple[list[Any], list[str], list[str]]:
    """The readable images with their labels, and why each other file was skipped (one warning line).

    ``what`` names the set in messages (``--test DIR``). Raises ``SpecError``
    when the set has files but none of them can be read.
    """
    loaded, labels, reasons = [], [], []
    for path, label, data in zip(images.paths, images.labels, images.data):
        try:
            loaded.append(load_rgb(data if data is not None else Path(path), None, path))
            labels.append(label)
        except SourceError as err:
            reasons.append(str(err))
    if reasons:
        total = len(images.paths)
        named = "; ".join(reasons[:MAX_REASONS])
        if len(reasons) > MAX_REASONS:
            named += f"; and {len(reasons) - MAX_REASONS} more"
        if not loaded:
            raise SpecError(f"{what}: none of its {_files(total, 'image file')} could be read ({named})")
        log.warning("%s: skipped %s of %d (%s)", what, _files(len(reasons), "unreadable file"), total, named)
    return loaded, labels, reasons


def _files(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def embed(scorer: Any, images: LabeledImages, what: str, batch: int = 64) -> Embedded:
    """L2-normalized CLIP embeddings of the readable images of a set (unreadable ones skipped)."""
    import torch

    loaded, labels, reasons = load_readable(images, what)
    chunks = [scorer.encode_images(loaded[start : start + batch]).cpu() for start in range(0, len(loaded), batch)]
    x = torch.nn.functional.normalize(torch.cat(chunks), dim=-1) if chunks else None
    return Embedded(x, labels, len(reasons))


def fit_linear(x: Any, y: Any, n_classes: int, steps: int = 300, weight_decay: float = 1e-3) -> Any:
    """Multinomial logistic regression (full batch, L-BFGS, deterministic)."""
    import torch

    torch.manual_seed(0)
    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: (z @ w + b).argmax(-1)


def accuracy(pred: Any, truth: Any, classes: Sequence[str]) -> dict[str, Any]:
    per_class = {}
    for i, name in enumerate(classes):
        mask = truth == i
        if int(mask.sum()):
            per_class[name] = round(float((pred[mask] == i).float().mean()), 4)
    return {"top1": round(float((pred == truth).float().mean()), 4), "per_class": per_class}


def run_probe(
    train: Path, test: Path, *, scorer: Any, classes: Sequence[str], real_train: Path | None = None,
    ablate_filter: bool = False,
) -> dict[str, Any]:
    """Every comparison the options ask for, over the run's ``classes``; returns the report (``--json``)."""
    import torch

    classes = list(classes)
    sets: dict[str, tuple[str, LabeledImages]] = {"train": (f"--train {train}", from_output(train))}
    if ablate_filter:
        sets["train (rejected)"] = (f"--train {train} (rejected)", rejected_from_output(train))
    sets["test"] = (f"--test {test}", from_imagefolder(test, classes))
    if real_train is not None:
        sets["real-train"] = (f"--real-train {real_train}", from_imagefolder(real_train, classes))
    embedded = {name: embed(scorer, images, what) for name, (what, images) in sets.items()}
    index = {c: i for i, c in enumerate(classes)}
    test_set = embedded["test"]
    x_test, y_test = test_set.x, torch.tensor([index[c] for c in test_set.labels])

    def probe(names: list[str]) -> dict[str, Any]:
        parts = [embedded[n] for n in names if embedded[n].labels]
        x = torch.cat([p.x for p in parts])
        y = torch.tensor([index[c] for p in parts for c in p.labels])
        predict = fit_linear(x, y, len(classes))
        return {"train_images": len(y), **accuracy(predict(x_test), y_test, classes)}

    results: dict[str, Any] = {"synthetic": probe(["train"])}
    if ablate_filter:
        results["synthetic (unfiltered)"] = probe(["train", "train (rejected)"])
    if real_train is not None:
        results["real"] = probe(["real-train"])
        results["real + synthetic"] = probe(["real-train", "train"])
    scorer.set_labels(classes)
    with torch.no_grad():
        scale = float(scorer.model.logit_scale.detach().exp())
        zero = (scale * x_test @ scorer._label_emb.cpu().T).argmax(-1)
    results["zero-shot"] = {"train_images": 0, **accuracy(zero, y_test, classes)}
    return {"classes": classes, "test_images": len(y_test), "scorer": scorer.name,
            "skipped": {name: e.skipped for name, e in embedded.items()}, "results": results}
