"""A procedural world of coloured shapes, rendered with Pillow and NumPy.

Classes are colour × shape pairs (``CLASSES``). Each render varies the
background (plain, striped, dotted, night), the size, position and rotation
of the shape, and whether it is filled or outlined (a "line drawing"), and
comes with a caption made from the same kind of templates the product uses:
"a red circle on a striped background", "a line drawing of a blue square at
night". Rendering is deterministic: render ``i`` of a split depends only on
(split seed, i). Held-out splits are the "real" test set: ``write_held_out``
(``dalle-data demo-real``) writes one as an ImageFolder for ``probe``.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from dalle_data.errors import OutputDirError, SpecError
from dalle_data.naming import class_dirs

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (240, 210, 40),
}
CLASSES: tuple[str, ...] = (
    "red circle", "blue square", "green triangle", "yellow star",
    "red triangle", "blue star", "green circle", "yellow square",
)
BACKGROUNDS: dict[str, str] = {
    "plain": "on a plain background", "striped": "on a striped background",
    "dotted": "on a dotted background", "night": "at night",
}
SIZE = 32  # pixels; rendered at 4x and reduced, for clean edges
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}  # the shapes-demo model is trained on "train" only


@dataclass(frozen=True)
class Render:
    image: Image.Image
    label: str
    caption: str
    background: str
    outlined: bool


def _background(kind: str, rng: random.Random, size: int) -> Image.Image:
    if kind == "night":
        base = tuple(rng.randint(10, 40) for _ in range(3))
    else:
        base = tuple(rng.randint(190, 245) for _ in range(3))
    im = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(im)
    ink = tuple(max(0, c - rng.randint(40, 70)) for c in base)
    if kind == "striped":
        step = size // rng.choice([6, 8, 10])
        for x in range(-size, 2 * size, step):
            draw.line([(x, 0), (x + size, size)], fill=ink, width=max(1, step // 3))
    elif kind == "dotted":
        step = size // rng.choice([6, 8])
        for y in range(step // 2, size, step):
            for x in range(step // 2, size, step):
                r = max(1, step // 6)
                draw.ellipse([x - r, y - r, x + r, y + r], fill=ink)
    elif kind == "night":
        for _ in range(rng.randint(5, 15)):
            x, y = rng.randrange(size), rng.randrange(size)
            draw.point((x, y), fill=(200, 200, 220))
    return im


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if shape == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if shape == "triangle":
        return [(cx + r * math.cos(angle + k * 2 * math.pi / 3), cy + r * math.sin(angle + k * 2 * math.pi / 3))
                for k in range(3)]
    points = []  # star: 5 outer and 5 inner points
    for k in range(10):
        rad = r if k % 2 == 0 else r * 0.45
        a = angle + k * math.pi / 5
        points.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return points


def render(label: str, rng: random.Random, background: str | None = None, outlined: bool | None = None) -> Render:
    """One image of ``label`` with random pose and style (or the given ones)."""
    colour_name, shape = label.split(" ", 1)
    big = SIZE * 4
    background = background or rng.choice(list(BACKGROUNDS))
    outlined = rng.random() < 0.25 if outlined is None else outlined
    im = _background(background, rng, big)
    draw = ImageDraw.Draw(im)
    r = big * rng.uniform(0.28, 0.42)
    cx, cy = rng.uniform(r, big - r), rng.uniform(r, big - r)
    colour = tuple(min(255, max(0, c + rng.randint(-20, 20))) for c in COLOURS[colour_name])
    width = max(3, int(big * 0.05))
    if shape == "circle":
        box = [cx - r, cy - r, cx + r, cy + r]
        draw.ellipse(box, outline=colour, width=width) if outlined else draw.ellipse(box, fill=colour)
    else:
        pts = _polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi))
        if outlined:
            draw.line(pts + [pts[0]], fill=colour, width=width, joint="curve")
        else:
            draw.polygon(pts, fill=colour)
    image = im.resize((SIZE, SIZE), Image.Resampling.LANCZOS)
    return Render(image, label, caption(label, background, outlined, rng), background, outlined)


def caption(label: str, background: str, outlined: bool, rng: random.Random) -> str:
    where = BACKGROUNDS[background]
    if rng.random() < 0.3:  # the bare class, as zero-shot prompts and short user prompts say it
        return rng.choice([f"a {label}", f"a photo of a {label}", f"a picture of a {label}"])
    if outlined:
        return rng.choice([f"a line drawing of a {label} {where}", f"a {label} {where}, as a line drawing"])
    return rng.choice([f"a {label} {where}", f"a photo of a {label} {where}", f"A {label} {where}"])


def dataset(split: str, n: int, classes: tuple[str, ...] = CLASSES) -> list[Render]:
    """``n`` renders of a split, classes balanced (round robin), deterministic."""
    base = SPLIT_SEEDS[split] if split in SPLIT_SEEDS else sum(map(ord, split))
    return seeded_renders(base, n, classes)


def seeded_renders(seed: int, n: int, classes: tuple[str, ...] = CLASSES) -> list[Render]:
    """``n`` renders of the split with seed ``seed`` (render ``i`` draws from ``seed * 1_000_003 + i``)."""
    return [render(classes[i % len(classes)], random.Random(seed * 1_000_003 + i)) for i in range(n)]


def write_imagefolder(root: str | Path, split: str, n: int) -> Path:
    """Write renders as ``root/<class_dir>/<i>.png`` (a "real" labeled ImageFolder)."""
    root = Path(root)
    dirs = class_dirs(list(CLASSES))
    for i, r in enumerate(dataset(split, n)):
        folder = root / dirs[r.label]
        folder.mkdir(parents=True, exist_ok=True)
        r.image.save(folder / f"{split}-{i:05d}.png")
    return root


# -- a held-out "real" set on disk (``dalle-data demo-real``) ------------------------

HELD_OUT_MARKER = "demo-real.json"  # written last; marks a folder as demo-real's own output
MAX_PER_CLASS = 10_000  # keeps every render seed clear of the next split's (seeds are 1_000_003 apart)
_RENDER_NAME = re.compile(r"^\d{5}\.png$")


@dataclass(frozen=True)
class HeldOutSet:
    root: Path
    classes: tuple[str, ...]
    per_class: int
    seed: int

    @property
    def images(self) -> int:
        return self.per_class * len(self.classes)


def world_classes(names: Sequence[str]) -> tuple[str, ...]:
    """The world's classes named in ``names`` (ignoring case and extra spaces), in order; all when empty."""
    by_key = {c.casefold(): c for c in CLASSES}
    chosen: list[str] = []
    for name in names:
        cls = by_key.get(" ".join(name.split()).casefold())
        if cls is None:
            raise SpecError(f"{name!r} is not a class of the shapes world; choose from: {', '.join(CLASSES)}")
        if cls not in chosen:
            chosen.append(cls)
    return tuple(chosen) or CLASSES


def write_held_out(
    out: Path, *, per_class: int = 40, seed: int = SPLIT_SEEDS["test"], classes: tuple[str, ...] = CLASSES,
) -> HeldOutSet:
    """Write ``per_class`` renders of each class, from the split seeded ``seed``, as ``out/<class_dir>/<i>.png``.

    The tree is written into a hidden sibling folder and renamed into place, so
    ``out`` never holds half a set. ``out`` may be missing, empty, or an earlier
    output of this function (replaced); anything else is refused.
    """
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise SpecError(f"--per-class {per_class}: give at least 1 and at most {MAX_PER_CLASS}")
    if seed == SPLIT_SEEDS["train"]:
        raise SpecError(f"--seed {seed} is the shapes-demo model's training split, not held out; pick another "
                        f"(the default, {SPLIT_SEEDS['test']}, is the held-out test split)")
    replace = _check_out(out)
    dirs = class_dirs(list(classes))
    target = Path(os.path.abspath(out))  # "." and "x/.." have a name and a parent too
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        counts = dict.fromkeys(classes, 0)
        for r in seeded_renders(seed, per_class * len(classes), classes):
            folder = tmp / dirs[r.label]
            folder.mkdir(exist_ok=True)
            r.image.save(folder / f"{counts[r.label]:05d}.png")
            counts[r.label] += 1
        marker = {"written_by": "dalle-data demo-real", "seed": seed, "per_class": per_class,
                  "classes": list(classes), "folders": [dirs[c] for c in classes]}
        (tmp / HELD_OUT_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _move_into_place(tmp, target, replace)
    except OSError as err:
        raise OutputDirError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return HeldOutSet(out, tuple(classes), per_class, seed)


def _check_out(out: Path) -> bool:
    """Whether ``out`` holds an earlier held-out set to replace; raises ``OutputDirError`` if it cannot be used."""
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"{out} is not a directory; give a new or empty folder for the renders")
    if not out.exists() or not any(out.iterdir()):
        return False
    if not _is_held_out_set(out):
        raise OutputDirError(
            f"{out} is not empty and holds more than an earlier demo-real output; give a new or empty folder"
        )
    return True


def _is_held_out_set(out: Path) -> bool:
    try:
        marker = json.loads((out / HELD_OUT_MARKER).read_text(encoding="utf-8"))
        folders = set(marker["folders"]) if marker.get("written_by") == "dalle-data demo-real" else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    if folders is None:
        return False
    for entry in out.iterdir():
        if entry.name == HELD_OUT_MARKER:
            continue
        if entry.name not in folders or not entry.is_dir() or entry.is_symlink():
            return False
        if not all(f.is_file() and _RENDER_NAME.match(f.name) for f in entry.iterdir()):
            return False
    return True


def _move_into_place(tmp: Path, out: Path, replace: bool) -> None:
    if not replace:
        if out.exists():
            out.rmdir()  # empty
        tmp.rename(out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old)
