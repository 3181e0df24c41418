"""The classifiers ``probe`` trains: a linear probe on scorer embeddings, or a small CNN from scratch.

A learner turns a set's images into features once (``features``, cached on
the set) and fits a classifier on rows of them (``fit``: features, labels,
number of classes, seed → a function from features to predicted class ids).

* ``linear``: multinomial logistic regression on the scorer's L2-normalized
  image embeddings (full batch, L-BFGS: deterministic, and the same for every
  seed; seeds still change which synthetic images a ``--sizes`` subset draws).
  Cheap anywhere, and what a user without a GPU probes their own data with.
* ``cnn``: a small convolutional network (conv–BatchNorm–ReLU blocks, one
  pooling stage per doubling of the input side, global average pooling as a plain mean)
  trained from scratch on the pixels, resized to one square side (32 to 256;
  by default the test images' median side, rounded down to a power of two),
  augmented with horizontal flips and small shifts; seeded (weights, batches,
  augmentation), on the GPU when there is one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dalle_data.errors import SpecError
from dalle_data.files import atomic_write_bytes

LEARNERS = ("linear", "cnn")
MIN_SIDE, MAX_SIDE = 32, 256
AUTO_MAX_SIDE = 128  # the default side stops here: larger photos are resized down, to train fast on a CPU

Predictor = Callable[[Any], Any]  # features (N, ...) -> class probabilities (N, classes), on the CPU


def make_learner(name: str, *, scorer: Any = None, image_size: int | None = None, epochs: int | None = None,
                 device: str = "cpu", test_images: Sequence[Any] = ()) -> Any:
    """The learner ``name`` (one of ``LEARNERS``); raises ``SpecError`` for another name or a bad size."""
    if name == "linear":
        return LinearLearner(scorer)
    if name == "cnn":
        return CnnLearner(image_size or auto_side(test_images), epochs=epochs, device=device)
    raise SpecError(f"--learner {name}: choose one of {', '.join(LEARNERS)}")


def auto_side(images: Sequence[Any]) -> int:
    """The median side of ``images`` rounded down to a power of two, within [MIN_SIDE, AUTO_MAX_SIDE]."""
    if not images:
        return MIN_SIDE
    sides = sorted(min(im.size) for im in images)
    median = sides[len(sides) // 2]
    side = 2 ** int(math.log2(max(median, 1)))
    return max(MIN_SIDE, min(AUTO_MAX_SIDE, side))


class LinearLearner:
    name = "linear"

    def __init__(self, scorer: Any) -> None:
        self.scorer = scorer
        self.key = f"linear:{getattr(scorer, 'name', 'scorer')}"

    def describe(self) -> str:
        return f"linear probe on {self.scorer.name} embeddings"

    def features(self, images: list[Any], batch: int = 64) -> Any:
        import torch

        chunks = [self.scorer.encode_images(images[s : s + batch]).float().cpu() for s in range(0, len(images), batch)]
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def fit(self, x: Any, y: Any, n_classes: int, seed: int) -> Predictor:
        return fit_linear(x, y, n_classes)


def fit_linear(x: Any, y: Any, n_classes: int, steps: int = 300, weight_decay: float = 1e-3) -> Predictor:
    """Multinomial logistic regression (full batch, L-BFGS, deterministic)."""
    import torch

    w = torch.zeros(x.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Any:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w + b, y) + weight_decay * w.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lambda z: torch.softmax(z.float() @ w + b, -1).detach()


def _min_steps() -> int:
    """300 updates at least (a few-shot set still learns); ``DALLE_DATA_CNN_MIN_STEPS`` lowers it for quick
    looks and for the test that runs every documented command line."""
    import os

    value = os.environ.get("DALLE_DATA_CNN_MIN_STEPS", "")
    return int(value) if value.isdecimal() and value.isascii() else 300


@dataclass(frozen=True)
class CnnConfig:
    epochs: int = 60
    min_steps: int = field(default_factory=_min_steps)
    batch: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    width: int = 16


class CnnLearner:
    name = "cnn"

    def __init__(self, side: int, *, epochs: int | None = None, device: str = "cpu",
                 config: CnnConfig | None = None) -> None:
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise SpecError(f"--image-size {side}: give a side from {MIN_SIDE} to {MAX_SIDE} pixels")
        if epochs is not None and epochs < 1:
            raise SpecError(f"--epochs {epochs}: give at least 1")
        self.side = side
        self.device = device
        config = config or CnnConfig()
        self.config = config if epochs is None else CnnConfig(**{**config.__dict__, "epochs": epochs})
        self.key = f"cnn:{side}"

    def describe(self) -> str:
        return f"small CNN from scratch at {self.side}x{self.side} px, {self.config.epochs} epochs"

    def features(self, images: list[Any]) -> Any:
        """The images as uint8 tensors, N×3×side×side (resized; any size and mode in)."""
        import numpy as np
        import torch
        from PIL import Image

        arrays = [np.asarray(im.convert("RGB").resize((self.side, self.side), Image.Resampling.BILINEAR))
                  for im in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def network(self, n_classes: int) -> Any:
        from torch import nn

        def block(cin: int, cout: int) -> list[Any]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        w = self.config.width
        stem: list[Any] = []
        side = self.side
        while side > MIN_SIDE:  # one cheap stage per doubling above 32 px: the cost stays near a 32 px net's
            stem += [*block(3 if not stem else w, w), nn.MaxPool2d(2)]
            side //= 2
        return nn.Sequential(
            *stem, *block(w if stem else 3, w), *block(w, w), nn.MaxPool2d(2),
            *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
            *block(2 * w, 4 * w), GlobalMean(), nn.Linear(4 * w, n_classes),
        )

    def fit(self, x: Any, y: Any, n_classes: int, seed: int) -> Predictor:
        import torch

        cfg = self.config
        if str(self.device).startswith("cuda"):  # the same seed, the same classifier: no racing kernels
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = self.network(n_classes).to(self.device)
        n = len(y)
        batch = min(cfg.batch, n)
        steps = max(cfg.min_steps, cfg.epochs * math.ceil(n / batch))
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
        pad = max(1, self.side // 16)
        net.train()
        order = torch.randperm(n, generator=gen)
        at = 0
        for _ in range(steps):
            if at + batch > n:
                order, at = torch.randperm(n, generator=gen), 0
            idx = order[at : at + batch]
            at += batch
            pixels = _augment(x[idx], gen, pad).to(self.device)
            loss = torch.nn.functional.cross_entropy(net(_normalize(pixels)), y[idx].to(self.device),
                                                     label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        net.eval()

        def predict(z: Any) -> Any:
            out = []
            with torch.no_grad():
                for s in range(0, len(z), 256):
                    out.append(torch.softmax(net(_normalize(z[s : s + 256].to(self.device))).float(), -1).cpu())
            return torch.cat(out)

        predict.net = net  # type: ignore[attr-defined]  # what save_onnx exports
        predict.side = self.side  # type: ignore[attr-defined]
        return predict


def GlobalMean() -> Any:  # noqa: N802 - a layer, named as torch names layers
    """Global average pooling as a plain mean (its backward is deterministic on CUDA; AdaptiveAvgPool2d's is not)."""
    from torch import nn

    class _GlobalMean(nn.Module):
        def forward(self, x: Any) -> Any:
            return x.mean((2, 3))

    return _GlobalMean()


def _normalize(pixels: Any) -> Any:
    return pixels.float() / 127.5 - 1.0


def _augment(pixels: Any, gen: Any, pad: int) -> Any:
    """Random horizontal flips and shifts of up to ``pad`` pixels (reflected borders), from ``gen``."""
    import torch

    n, c, h, w = pixels.shape
    flip = torch.rand(n, generator=gen) < 0.5
    pixels = torch.where(flip[:, None, None, None], pixels.flip(-1), pixels)
    padded = torch.nn.functional.pad(pixels.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (torch.arange(h)[None, :] + dy[:, None])[:, None, :, None].expand(n, c, h, w + 2 * pad)
    cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, None, :].expand(n, c, h, w)
    return padded.gather(2, rows).gather(3, cols)


ONNX_INSTALL = "pip install 'dalle-data[learner]' (onnx and onnxruntime)"


def save_onnx(predict: Predictor, path: Path | str, classes: Sequence[str], made_by: str) -> Path:
    """A trained CNN learner as an ONNX image classifier at ``path`` (written whole or not at all): input
    N×3×side×side float pixels in [0, 1] normalized by mean = std = 0.5 (what the CNN trained on), output
    N×classes probabilities, and every field ``--select uncertain:PATH`` reads in its metadata (``labels``,
    ``image_size``, ``mean``, ``std``, ``output``; see ``dalle_data.scoring.learner``)."""
    import copy
    import io
    import json
    import warnings

    import torch

    net = getattr(predict, "net", None)
    if net is None:
        raise SpecError("--save-learner saves the CNN: add --learner cnn (a linear probe runs on the scorer's "
                        "embeddings, which the file would have to carry)")
    try:
        import onnx
    except ImportError:
        raise SpecError(f"--save-learner writes ONNX: {ONNX_INSTALL}") from None
    side = int(getattr(predict, "side"))

    class Probabilities(torch.nn.Module):
        def __init__(self, body: Any) -> None:
            super().__init__()
            self.body = body

        def forward(self, x: Any) -> Any:
            return torch.softmax(self.body(x), -1)

    model = Probabilities(copy.deepcopy(net).cpu().float()).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice: it needs no onnxscript
        torch.onnx.export(model, (torch.zeros(1, 3, side, side),), buf, dynamo=False, input_names=["image"],
                          output_names=["probabilities"], dynamic_axes={"image": {0: "n"}, "probabilities": {0: "n"}},
                          opset_version=17)
    proto = onnx.load_from_string(buf.getvalue())
    meta = {"labels": json.dumps(list(classes)), "image_size": str(side), "mean": "[0.5, 0.5, 0.5]",
            "std": "[0.5, 0.5, 0.5]", "output": "probabilities", "made_by": made_by}
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    target = Path(path)
    if target.parent != Path(""):
        target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, proto.SerializeToString())
    return target
