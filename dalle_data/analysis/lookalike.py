"""Can the model draw each class? Its kept images against a wider vocabulary than the run's own classes.

The zero-shot filter asks "is this image more like its class than like the
run's other classes?". A class the model cannot draw passes that test when
every class of the run is wrong for it: ``--classes "red circle,blue
star,dalmatian" --model shapes-demo`` keeps ten "dalmatian" images that are
yellow stars, each at class probability 1.0. So after the run the scorer's
text embeddings of a wider vocabulary are kept (``OUT/embeddings/
text/vocabulary.npz``): the run's classes, the classes the model is known to draw
(for shapes-demo: the shapes world's eight) and the generic negative
vocabulary. The report then takes each kept image's nearest vocabulary entry
(its stored image embedding against those rows, the zero-shot filter's own
template ensemble) and warns when more than half of a class's kept images
(at least ``MIN_IMAGES``) are nearest something else: "'dalmatian': 9 of 10
images look more like 'yellow star'". ``--fail-if lookalike`` fails CI on it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dalle_data.files import atomic_write_bytes

MIN_IMAGES = 3  # fewer kept images than this say nothing
SHARE = 0.5  # more than this share nearest another entry: the class looks like something else


@dataclass(frozen=True)
class LookAlike:
    label: str
    images: int
    elsewhere: int  # images nearest another vocabulary entry
    nearest: str  # the entry most of those are nearest

    @property
    def warning(self) -> str:
        return (f"{self.label!r}: {self.elsewhere} of {self.images} images look more like {self.nearest!r} than "
                "like their class (a class the model may not know how to draw; see the report's grids)")

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "images": self.images, "elsewhere": self.elsewhere, "nearest": self.nearest}


def vocabulary_for(classes: Sequence[str], known: Sequence[str], negatives: Sequence[str]) -> list[str]:
    """The run's classes first, then the model's known classes, then the negative vocabulary; no repeats."""
    return list(dict.fromkeys([*classes, *known, *negatives]))


def save_vocabulary(path: Path, names: Sequence[str], rows: Any, scorer: str) -> None:
    """The vocabulary's text embeddings (rows, normalised) beside the image embeddings, written whole."""
    import io

    buf = io.BytesIO()
    np.savez(buf, names=np.array(list(names)), x=np.asarray(rows, np.float32), scorer=np.array(scorer))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buf.getvalue())


def load_vocabulary(path: Path) -> tuple[list[str], np.ndarray, str] | None:
    """(names, rows, scorer) of a saved vocabulary, or None when there is none (or it cannot be read)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return [str(n) for n in data["names"]], np.asarray(data["x"], np.float32), str(data["scorer"])
    except (OSError, ValueError, KeyError):
        return None


def look_alikes(records: Sequence[Any], emb: Any, vocabulary: tuple[list[str], np.ndarray, str] | None,
                classes: Sequence[str]) -> list[LookAlike]:
    """The classes most of whose kept images are nearest another vocabulary entry (see the module docstring).

    Only images with a stored embedding from the vocabulary's own scorer count; hard negatives do not (they
    are meant to look like something else)."""
    if vocabulary is None or emb is None:
        return []
    names, rows, scorer = vocabulary
    if getattr(emb, "scorer", scorer) != scorer or not len(rows):
        return []
    index = {n: i for i, n in enumerate(names)}
    out = []
    for label in classes:
        ids = [r.id for r in records if r.status == "kept" and r.label == label and r.role == "positive"
               and r.id in emb.row]
        if len(ids) < MIN_IMAGES or label not in index:
            continue
        nearest = (emb.take(ids) @ rows.T).argmax(1)
        others = Counter(names[k] for k in nearest if k != index[label])
        elsewhere = sum(others.values())
        if elsewhere > SHARE * len(ids):
            top = max(sorted(others), key=others.__getitem__)
            out.append(LookAlike(label, len(ids), elsewhere, top))
    return out
