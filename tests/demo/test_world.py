"""The procedural shapes world: deterministic, balanced, captioned like the product's prompts."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np

from dalle_data.demo.world import BACKGROUNDS, CLASSES, SIZE, dataset, render, write_imagefolder


def test_renders_are_deterministic_per_split_and_index() -> None:
    a, b = dataset("train", 16), dataset("train", 16)
    assert all(np.array_equal(np.asarray(x.image), np.asarray(y.image)) and x.caption == y.caption for x, y in zip(a, b))
    held_out = dataset("test", 16)
    assert not any(np.array_equal(np.asarray(x.image), np.asarray(y.image)) for x, y in zip(a, held_out))


def test_classes_are_balanced_and_captions_name_them() -> None:
    renders = dataset("train", 8 * len(CLASSES))
    assert Counter(r.label for r in renders) == {c: 8 for c in CLASSES}
    assert all(r.label in r.caption for r in renders)
    assert all(r.image.size == (SIZE, SIZE) and r.image.mode == "RGB" for r in renders)


def test_styles_and_backgrounds_vary_and_show_in_captions() -> None:
    renders = dataset("train", 400)
    assert {r.background for r in renders} == set(BACKGROUNDS)
    outlined = [r for r in renders if r.outlined]
    assert 0.1 < len(outlined) / len(renders) < 0.4
    bare = [r for r in renders if r.caption.endswith(r.label)]  # class-only captions, like zero-shot prompts
    assert 0.2 < len(bare) / len(renders) < 0.4
    scenes = [r for r in renders if r not in bare]
    assert all("line drawing" in r.caption for r in outlined if r not in bare)
    assert all(BACKGROUNDS[r.background] in r.caption for r in scenes)


def test_the_shape_is_drawn_in_its_colour() -> None:
    """A filled red circle on a night background: red pixels dominate the non-background ones."""
    r = render("red circle", random.Random(3), background="night", outlined=False)
    pixels = np.asarray(r.image).reshape(-1, 3).astype(int)
    reddish = (pixels[:, 0] > 150) & (pixels[:, 1] < 100) & (pixels[:, 2] < 100)
    assert reddish.mean() > 0.05


def test_write_imagefolder_uses_safe_class_folders(tmp_path) -> None:
    root = write_imagefolder(tmp_path / "real", "test", 16)
    folders = sorted(p.name for p in root.iterdir())
    assert folders == sorted(c.replace(" ", "_") for c in CLASSES)
    assert sum(1 for _ in root.glob("*/*.png")) == 16
