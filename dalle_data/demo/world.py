"""A procedural world of coloured shapes, rendered with Pillow and NumPy.

Classes are colour × shape pairs (``CLASSES``). Each render varies the
background (plain, striped, dotted, night), the size, position and rotation
of the shape, and whether it is filled or outlined (a "line drawing"), and
comes with a caption made from the same kind of templates the product uses:
"a red circle on a striped background", "a line drawing of a blue square at
night". Rendering is deterministic: render ``i`` of a split depends only on
(split seed, i). Held-out splits are the "real" test set.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

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
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


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
    return [render(classes[i % len(classes)], random.Random(base * 1_000_003 + i)) for i in range(n)]


def write_imagefolder(root: str | Path, split: str, n: int) -> Path:
    """Write renders as ``root/<class_dir>/<i>.png`` (a "real" labeled ImageFolder)."""
    from dalle_data.naming import class_dirs

    root = Path(root)
    dirs = class_dirs(list(CLASSES))
    for i, r in enumerate(dataset(split, n)):
        folder = root / dirs[r.label]
        folder.mkdir(parents=True, exist_ok=True)
        r.image.save(folder / f"{split}-{i:05d}.png")
    return root
