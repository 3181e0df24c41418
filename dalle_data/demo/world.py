"""A procedural world of coloured shapes, rendered with Pillow and NumPy.

Classes are colour × shape pairs (``CLASSES``). Each render varies the
background (plain, striped, dotted, night), the size, position and rotation
of the shape, and whether it is filled or outlined (a "line drawing"), and
comes with a caption made from the same kind of templates the product uses:
"a red circle on a striped background", "a line drawing of a blue square at
night". Rendering is deterministic: render ``i`` of a split depends only on
(split seed, i). Held-out splits are the "real" test set: ``write_held_out``
(``dalle-data demo-real``) writes one as an ImageFolder for ``probe``, with
each image's group (class, background, style) in ``metadata.jsonl``:

* ``held-out``: renders drawn as the world draws them (random background and
  style), classes balanced;
* ``balanced-test``: every class in every context (background × style) equally
  often, the test set on which a worst group can be measured;
* ``biased-train``: a few-shot training set in which a fraction ``bias`` of
  each class's images sit in one context of its own (a background, or a
  style), as a frisbee classifier sees every frisbee on a beach.
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
STYLES: tuple[str, ...] = ("filled", "line drawing")  # a render's style: ``outlined`` is a line drawing
CONTEXTS: dict[str, tuple[str, ...]] = {"background": tuple(BACKGROUNDS), "style": STYLES}
SIZE = 32  # pixels; rendered at 4x and reduced, for clean edges
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}  # the shapes-demo model is trained on "train" only


@dataclass(frozen=True)
class Render:
    image: Image.Image
    label: str
    caption: str
    background: str
    outlined: bool

    @property
    def style(self) -> str:
        return STYLES[int(self.outlined)]

    def groups(self) -> dict[str, str]:
        """The render's group fields, as ``metadata.jsonl`` writes them."""
        return {"background": self.background, "style": self.style}


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


def balanced_renders(seed: int, per_class: int, classes: tuple[str, ...] = CLASSES) -> list[Render]:
    """``per_class`` renders of each class spread evenly over every context (background × style).

    Render ``i`` (classes take turns) draws its pose from ``seed * 1_000_003 + i``;
    the ``k``-th render of a class takes context ``k`` of the grid, in turn.
    """
    grid = [(b, s) for s in STYLES for b in BACKGROUNDS]
    renders = []
    for i in range(per_class * len(classes)):
        background, style = grid[(i // len(classes)) % len(grid)]
        renders.append(render(classes[i % len(classes)], random.Random(seed * 1_000_003 + i), background,
                              style == STYLES[1]))
    return renders


def default_context_map(context: str, classes: tuple[str, ...], seed: int) -> dict[str, str]:
    """Each class's own context: the context's values shuffled by ``seed`` and dealt to the classes in turn."""
    values = list(CONTEXTS[context])
    random.Random(seed).shuffle(values)
    return {c: values[i % len(values)] for i, c in enumerate(classes)}


def biased_renders(
    seed: int, per_class: int, classes: tuple[str, ...], *, bias: float, context: str, context_map: dict[str, str],
) -> list[Render]:
    """``per_class`` renders of each class, ``round(bias * per_class)`` of them in the class's own context.

    The others take the context's other values in turn; the other group field
    (style when the context is the background, and the reverse) is drawn as
    the world draws it.
    """
    biased = round(bias * per_class)
    renders = []
    for i in range(per_class * len(classes)):
        cls, k = classes[i % len(classes)], i // len(classes)
        own = context_map[cls]
        others = [v for v in CONTEXTS[context] if v != own]
        value = own if k < biased or not others else others[(k - biased) % len(others)]
        rng = random.Random(seed * 1_000_003 + i)
        if context == "background":
            renders.append(render(cls, rng, background=value))
        else:
            renders.append(render(cls, rng, outlined=value == STYLES[1]))
    return renders


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
METADATA = "metadata.jsonl"  # each image's group: {"file_name", "label", "background", "style"}
SETS = ("held-out", "balanced-test", "biased-train")
DEFAULT_SEEDS = {"held-out": SPLIT_SEEDS["test"], "balanced-test": SPLIT_SEEDS["test"], "biased-train": 3}
MAX_PER_CLASS = 10_000  # keeps every render seed clear of the next split's (seeds are 1_000_003 apart)
_RENDER_NAME = re.compile(r"^\d{5}\.png$")


@dataclass(frozen=True)
class HeldOutSet:
    root: Path
    classes: tuple[str, ...]
    per_class: int
    seed: int
    kind: str = "held-out"
    context_map: dict[str, str] | None = None

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


def parse_context_map(text: str, classes: tuple[str, ...], context: str) -> dict[str, str]:
    """``"red circle=night,blue star=plain"`` as a class → context map; every class named once, values of ``context``."""
    values = CONTEXTS[context]
    chosen: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value = item.partition("=")
        if not sep:
            raise SpecError(f"--context-map {item!r}: write CLASS=VALUE, e.g. 'red circle={values[0]}'")
        (cls,) = world_classes([name])
        if cls not in classes:
            raise SpecError(f"--context-map {item!r}: {cls} is not one of the classes rendered ({', '.join(classes)})")
        value = " ".join(value.split())
        if value not in values:
            raise SpecError(f"--context-map {item!r}: {value!r} is not a {context}; choose from: {', '.join(values)}")
        chosen[cls] = value
    missing = [c for c in classes if c not in chosen]
    if missing:
        raise SpecError(f"--context-map names no {context} for {', '.join(missing)}; give every class one")
    return {c: chosen[c] for c in classes}


def write_held_out(
    out: Path, *, per_class: int = 40, seed: int | None = None, classes: tuple[str, ...] = CLASSES,
    kind: str = "held-out", bias: float = 1.0, context: str = "background", context_map: dict[str, str] | None = None,
) -> HeldOutSet:
    """Write ``per_class`` renders of each class of the set ``kind`` as ``out/<class_dir>/<i>.png``, and their groups.

    ``kind`` is one of ``SETS`` (see the module docstring); ``bias``,
    ``context`` and ``context_map`` shape a ``biased-train`` set (the map
    defaults to a seeded deal, ``default_context_map``). The tree is written
    into a hidden sibling folder and renamed into place, so ``out`` never
    holds half a set. ``out`` may be missing, empty, or an earlier output of
    this function (replaced); anything else is refused.
    """
    if kind not in SETS:
        raise SpecError(f"--set {kind}: choose one of {', '.join(SETS)}")
    seed = DEFAULT_SEEDS[kind] if seed is None else seed
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise SpecError(f"--per-class {per_class}: give at least 1 and at most {MAX_PER_CLASS}")
    if seed == SPLIT_SEEDS["train"]:
        raise SpecError(f"--seed {seed} is the shapes-demo model's training split, not held out; pick another "
                        f"(the default, {DEFAULT_SEEDS[kind]}, is held out)")
    if context not in CONTEXTS:
        raise SpecError(f"--context {context}: choose one of {', '.join(CONTEXTS)}")
    if not 0.0 <= bias <= 1.0:
        raise SpecError(f"--bias {bias}: give a fraction from 0 to 1 (1: every image of a class in its own {context})")
    cells = len(BACKGROUNDS) * len(STYLES)
    if kind == "balanced-test" and per_class % cells:
        raise SpecError(f"--per-class {per_class}: a balanced test set needs a multiple of {cells} "
                        f"({len(BACKGROUNDS)} backgrounds x {len(STYLES)} styles), e.g. {max(cells, per_class // cells * cells)}")
    if kind == "biased-train":
        context_map = context_map or default_context_map(context, classes, seed)
        renders = biased_renders(seed, per_class, classes, bias=bias, context=context, context_map=context_map)
    elif kind == "balanced-test":
        renders = balanced_renders(seed, per_class, classes)
    else:
        renders = seeded_renders(seed, per_class * len(classes), classes)
    replace = _check_out(out)
    dirs = class_dirs(list(classes))
    target = Path(os.path.abspath(out))  # "." and "x/.." have a name and a parent too
    tmp = target.parent / f".{target.name}.partial-{os.getpid()}"
    try:
        tmp.mkdir(parents=True)
        counts = dict.fromkeys(classes, 0)
        rows = []
        for r in renders:
            folder = tmp / dirs[r.label]
            folder.mkdir(exist_ok=True)
            name = f"{dirs[r.label]}/{counts[r.label]:05d}.png"
            r.image.save(tmp / name)
            rows.append({"file_name": name, "label": r.label, **r.groups()})
            counts[r.label] += 1
        rows.sort(key=lambda row: row["file_name"])
        (tmp / METADATA).write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        marker: dict[str, object] = {"written_by": "dalle-data demo-real", "set": kind, "seed": seed,
                                     "per_class": per_class, "classes": list(classes),
                                     "folders": [dirs[c] for c in classes]}
        if kind == "biased-train":
            marker |= {"bias": bias, "context": context, "context_map": context_map}
        (tmp / HELD_OUT_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _move_into_place(tmp, target, replace)
    except OSError as err:
        raise OutputDirError(f"cannot write {out}: {err.strerror or err}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return HeldOutSet(out, tuple(classes), per_class, seed, kind, context_map if kind == "biased-train" else None)


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
        if entry.name in (HELD_OUT_MARKER, METADATA) and entry.is_file():
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
