"""The user's classifier, as an ONNX model: what ``generate --select uncertain:PATH`` asks about each image.

``OnnxLearner.load(path)`` opens an ONNX image classifier with ``onnxruntime``
(on the CPU, one thread: the same image gives the same probabilities in any
batch, on any machine that runs the run) and checks it before anything is
generated:

* one input, 4-D, channels first (N×3×H×W); its side from the input's
  static shape, the metadata's ``image_size``, or ``--learner-size``;
* one output, N×C, C the number of classes; logits or probabilities
  (metadata ``output``: ``logits`` or ``probabilities``; without it, rows of
  non-negative numbers that sum to 1 are probabilities, anything else is
  softmaxed);
* the class order: the metadata's ``labels`` (a JSON list) or a
  ``--learner-labels`` file (one class a line, or a JSON list); every class
  of the run must be one of them (the learner may know more classes).

Preprocessing: RGB, resized to the side (bilinear), scaled to [0, 1], then
``(x - mean) / std`` per channel: ``mean`` / ``std`` from the metadata, the
options, or ImageNet's. ``probe --save-learner`` and ``loop --select
uncertain`` write models with every field in the metadata
(``probe.learners.save_onnx``).

The uncertainty of an image filed under ``label``: ``1 - p(label)``, so an
image the learner gets wrong or is unsure of ranks first; for a hard negative
whose label the learner does not know, ``p(imitated class)``: how far it
fools the learner.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dalle_data.errors import SpecError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OUTPUTS = ("logits", "probabilities")
INSTALL = "pip install 'dalle-data[learner]' (onnxruntime and onnx)"


@dataclass(frozen=True)
class LearnerOptions:
    """What the command line may say about a model whose metadata does not."""

    labels_file: str | None = None
    size: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


def parse_triple(text: str | None, flag: str) -> tuple[float, float, float] | None:
    """``"0.5,0.5,0.5"`` → a per-channel triple; raises ``SpecError`` for anything else."""
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise SpecError(f"{flag} {text}: give three numbers, one per channel (R,G,B), e.g. 0.5,0.5,0.5")
    return values  # type: ignore[return-value]


def read_labels_file(path: str | Path, flag: str = "--learner-labels") -> list[str]:
    """A class order: a JSON list of names, or one name a line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{flag} {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except ValueError as err:
            raise SpecError(f"{flag} {path}: not a JSON list of class names ({err})") from None
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    return _check_names(names, f"{flag} {path}")


def _check_names(names: Any, where: str) -> list[str]:
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n.strip() for n in names):
        raise SpecError(f"{where}: give the learner's classes in output order (a JSON list or one a line)")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise SpecError(f"{where}: class {dup!r} is named twice")
    return [str(n) for n in names]


class OnnxLearner:
    """An ONNX image classifier: ``probs(images)`` → one row of class probabilities per image."""

    def __init__(self, session: Any, path: Path, labels: list[str], side: tuple[int, int],
                 mean: tuple[float, ...], std: tuple[float, ...], output: str, digest: str) -> None:
        self.session, self.path, self.labels = session, path, labels
        self.side, self.mean, self.std, self.output, self.digest = side, mean, std, output, digest
        self.input_name = session.get_inputs()[0].name
        self.index = {c: i for i, c in enumerate(labels)}

    @classmethod
    def load(cls, path: str | Path, options: LearnerOptions | None = None) -> OnnxLearner:
        """Open and check ``path``; every problem is one ``SpecError`` line naming the file."""
        options = options or LearnerOptions()
        p = Path(path).expanduser()
        where = f"--select uncertain:{path}"
        try:
            blob = p.read_bytes()
        except IsADirectoryError:
            raise SpecError(f"{where}: is a folder; give the ONNX file (torch.onnx.export writes one)") from None
        except OSError as err:
            raise SpecError(f"{where}: cannot read it ({err.strerror or err})") from None
        try:
            import onnxruntime as ort
        except ImportError:
            raise SpecError(f"{where}: reading an ONNX learner needs onnxruntime: {INSTALL}") from None
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        so.log_severity_level = 3
        try:
            session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own kinds for a bad file
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SpecError(f"{where}: not an ONNX model onnxruntime can run ({first[:200]})") from None
        meta = dict(session.get_modelmeta().custom_metadata_map or {})
        inputs, outputs = session.get_inputs(), session.get_outputs()
        if len(inputs) != 1:
            raise SpecError(f"{where}: the model takes {len(inputs)} inputs; an image classifier takes one "
                            "(a batch of images, N×3×H×W)")
        if len(outputs) != 1:
            raise SpecError(f"{where}: the model has {len(outputs)} outputs; give a classifier with one "
                            "(N×classes: logits or probabilities)")
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise SpecError(f"{where}: its input has shape {_shape(shape)}; an image classifier here takes "
                            "N×3×H×W (channels first)")
        if isinstance(shape[1], int) and shape[1] != 3:
            raise SpecError(f"{where}: its input has {shape[1]} channels; give a model of RGB images (N×3×H×W)")
        if "float" not in str(inputs[0].type):
            raise SpecError(f"{where}: its input is {inputs[0].type}; give a model that takes float pixels")
        side = _side(shape, meta, options.size, where)
        labels = _labels(meta, options.labels_file, where)
        output = meta.get("output")
        if output is not None and output not in OUTPUTS:
            raise SpecError(f"{where}: its metadata says output={output!r}; give logits or probabilities")
        mean = options.mean or _meta_triple(meta, "mean", where) or IMAGENET_MEAN
        std = options.std or _meta_triple(meta, "std", where) or IMAGENET_STD
        if any(s <= 0 for s in std):
            raise SpecError(f"{where}: std {','.join(map(str, std))} must be above 0 in every channel")
        digest = hashlib.sha256(blob).hexdigest()[:16]
        learner = cls(session, p, labels, side, mean, std, output or "", digest)
        learner._check_output(where)
        return learner

    def _check_output(self, where: str) -> None:
        import numpy as np

        try:
            out = self.session.run(None, {self.input_name: np.zeros((1, 3, self.side[1], self.side[0]), np.float32)})[0]
        except Exception as err:  # noqa: BLE001
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise SpecError(f"{where}: it fails on a {self.side[0]}x{self.side[1]} image ({first[:200]})") from None
        out = np.asarray(out)
        if out.ndim != 2 or out.shape[0] != 1:
            raise SpecError(f"{where}: its output has shape {_shape(list(out.shape))} for one image; a classifier "
                            "gives N×classes")
        if out.shape[1] != len(self.labels):
            raise SpecError(f"{where}: it gives {out.shape[1]} scores per image but its classes are "
                            f"{len(self.labels)} ({', '.join(self.labels[:6])}{', …' if len(self.labels) > 6 else ''})")

    def check_classes(self, classes: Sequence[str]) -> None:
        """Every class of the run is one the learner knows (it may know more)."""
        missing = [c for c in classes if c not in self.index]
        if missing:
            raise SpecError(f"--select uncertain:{self.path}: the learner does not know class {missing[0]!r} "
                            f"(its classes: {', '.join(self.labels[:8])}{', …' if len(self.labels) > 8 else ''}); "
                            "give --learner-labels FILE with its output order, or a learner of these classes")

    def identity(self) -> str:
        """What decides this learner's answers: the file's bytes and the preprocessing (enters the spec hash)."""
        blob = json.dumps([self.digest, self.labels, list(self.side), list(self.mean), list(self.std), self.output])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.path.name} ({len(self.labels)} classes, {self.side[0]}x{self.side[1]} px)"

    def probs(self, images: Sequence[Any]) -> Any:
        """Class probabilities, one row per image (N×classes, float64); each image run alone (batch 1), so an
        image's answer never depends on the batch it came in."""
        import numpy as np
        from PIL import Image

        rows = []
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        for im in images:
            pixels = np.asarray(im.convert("RGB").resize(self.side, Image.Resampling.BILINEAR), np.float32) / 255.0
            x = ((pixels.transpose(2, 0, 1) - mean) / std)[None].astype(np.float32)
            rows.append(np.asarray(self.session.run(None, {self.input_name: x})[0], np.float64)[0])
        out = np.stack(rows) if rows else np.zeros((0, len(self.labels)))
        return out if self._are_probs(out) else _softmax(out)

    def _are_probs(self, out: Any) -> bool:
        import numpy as np

        if self.output:
            return self.output == "probabilities"
        return bool(out.size) and bool((out >= 0).all()) and bool(np.allclose(out.sum(1), 1.0, atol=1e-3))

    def uncertainty(self, probs: Any, label: str, imitates: str | None) -> tuple[float, float | None]:
        """(how much the learner needs this image, the learner's probability of its label or None)."""
        if label in self.index:
            p = float(probs[self.index[label]])
            return 1.0 - p, p
        if imitates is not None and imitates in self.index:
            return float(probs[self.index[imitates]]), None
        return 0.0, None


def _softmax(x: Any) -> Any:
    import numpy as np

    z = np.exp(x - x.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def _shape(shape: list[Any]) -> str:
    return "×".join(str(d) if isinstance(d, int) else "N" for d in shape) or "a scalar"


def _side(shape: list[Any], meta: dict[str, str], size: int | None, where: str) -> tuple[int, int]:
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0:
        if size is not None and (size, size) != (w, h):
            raise SpecError(f"{where}: --learner-size {size}, but the model takes {w}x{h} images")
        return (w, h)
    value = size if size is not None else meta.get("image_size")
    try:
        side = int(value) if value is not None else 0
    except ValueError:
        side = 0
    if not 8 <= side <= 4096:
        raise SpecError(f"{where}: its input side is not fixed and its metadata names no image_size; "
                        "give --learner-size PX")
    return (side, side)


def _labels(meta: dict[str, str], labels_file: str | None, where: str) -> list[str]:
    if labels_file is not None:
        return read_labels_file(labels_file)
    if "labels" not in meta:
        raise SpecError(f"{where}: the model's metadata names no classes; give --learner-labels FILE "
                        "(its output order, one class a line)")
    try:
        names = json.loads(meta["labels"])
    except ValueError:
        names = None
    return _check_names(names, f"{where} (metadata 'labels')")


def _meta_triple(meta: dict[str, str], key: str, where: str) -> tuple[float, float, float] | None:
    if key not in meta:
        return None
    try:
        values = json.loads(meta[key])
    except ValueError:
        values = None
    if not isinstance(values, list) or len(values) != 3 or not all(isinstance(v, int | float) for v in values):
        raise SpecError(f"{where}: its metadata {key}={meta[key]!r} is not three numbers; give --learner-{key}")
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def learner_of(spec: Any, expect: str | None = None) -> OnnxLearner | None:
    """The learner a spec's ``--select uncertain:PATH`` names (checked against its classes), or None.

    ``expect``: the identity the run was planned with (its spec hash holds it); a file changed since then
    (replaced by another ``probe --save-learner``, or another copy on another machine) is refused."""
    if getattr(spec, "select", None) is None:
        return None
    options = LearnerOptions(labels_file=spec.learner_labels, size=spec.learner_size,
                             mean=parse_triple(spec.learner_mean, "--learner-mean"),
                             std=parse_triple(spec.learner_std, "--learner-std"))
    learner = OnnxLearner.load(spec.learner, options)
    learner.check_classes(spec.classes)
    if expect is not None and learner.identity() != expect:
        raise SpecError(f"--select uncertain:{spec.learner}: the file changed after the run was planned (it is "
                        "part of the spec hash); keep it unchanged while the run goes on, or start a new run")
    return learner
