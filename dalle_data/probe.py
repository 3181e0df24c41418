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
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dalle_data.errors import SpecError
from dalle_data.naming import safe_dir_name
from dalle_data.sources import IMAGE_SUFFIXES, SourceError, load_rgb

log = logging.getLogger(__name__)


@dataclass
class LabeledImages:
    paths: list[str]
    labels: list[str]
    data: list[bytes | None]

    def images(self) -> list[Any]:
        out = []
        for path, data in zip(self.paths, self.data):
            out.append(load_rgb(data if data is not None else Path(path), None, path))
        return out


def from_output(out: Path, include_rejected: bool = False) -> LabeledImages:
    """Positive kept images (and rejected ones) of a dalle-data output, with their class names."""
    rows: list[tuple[str, str, bytes | None]] = []
    roots = [("imagefolder", out / "imagefolder")] + ([("rejected", out / "rejected" / "imagefolder")] if include_rejected else [])
    for _, root in roots:
        for meta in sorted(root.glob("**/metadata.jsonl")):
            for line in meta.read_text(encoding="utf-8").splitlines():
                row = json.loads(line) if line.strip() else None
                if row and row.get("role", "positive") == "positive":
                    rows.append((str(meta.parent / row["file_name"]), row["label_name"], None))
    if not rows:
        rows = _from_parquet(out, include_rejected)
    if not rows:
        raise SpecError(f"--train {out}: no kept images found (is it a dalle-data output?)")
    if include_rejected and not (out / "rejected").is_dir():
        raise SpecError(f"--ablate filter needs the rejected images: rerun generate with --keep-rejected into {out}")
    return LabeledImages([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])


def _from_parquet(out: Path, include_rejected: bool) -> list[tuple[str, str, bytes | None]]:
    import pyarrow.parquet as pq

    parts = sorted(out.glob("parquet/*/*.parquet")) + (sorted(out.glob("rejected/parquet/*.parquet")) if include_rejected else [])
    rows = []
    for part in parts:
        for row in pq.read_table(part, columns=["id", "label_name", "role", "image"]).to_pylist():
            if row["role"] == "positive":
                rows.append((f"{part}#{row['id']}", row["label_name"], row["image"]["bytes"]))
    return rows


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


def embed(scorer: Any, images: LabeledImages, batch: int = 64) -> Any:
    import torch

    chunks = []
    loaded = []
    for path, data in zip(images.paths, images.data):
        try:
            loaded.append(load_rgb(data if data is not None else Path(path), None, path))
        except SourceError as err:
            raise SpecError(str(err)) from None
    for start in range(0, len(loaded), batch):
        chunks.append(scorer.encode_images(loaded[start : start + batch]).cpu())
    return torch.cat(chunks)


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
    synthetic = from_output(train)
    test_set = from_imagefolder(test, classes)
    index = {c: i for i, c in enumerate(classes)}
    x_test = torch.nn.functional.normalize(embed(scorer, test_set), dim=-1)
    y_test = torch.tensor([index[c] for c in test_set.labels])

    def probe(sets: list[LabeledImages]) -> dict[str, Any]:
        x = torch.nn.functional.normalize(torch.cat([embed(scorer, s) for s in sets]), dim=-1)
        y = torch.tensor([index[c] for s in sets for c in s.labels])
        predict = fit_linear(x, y, len(classes))
        return {"train_images": len(y), **accuracy(predict(x_test), y_test, classes)}

    results: dict[str, Any] = {"synthetic": probe([synthetic])}
    if ablate_filter:
        results["synthetic (unfiltered)"] = probe([from_output(train, include_rejected=True)])
    if real_train is not None:
        real = from_imagefolder(real_train, classes)
        results["real"] = probe([real])
        results["real + synthetic"] = probe([real, synthetic])
    scorer.set_labels(classes)
    with torch.no_grad():
        scale = float(scorer.model.logit_scale.detach().exp())
        zero = (scale * x_test @ scorer._label_emb.cpu().T).argmax(-1)
    results["zero-shot"] = {"train_images": 0, **accuracy(zero, y_test, classes)}
    return {"classes": classes, "test_images": len(y_test), "scorer": scorer.name, "results": results}
