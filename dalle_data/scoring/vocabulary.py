"""Negative vocabulary for zero-shot filtering.

With a single class, "does the image's own class win?" is meaningless unless
there is something to lose against. These generic categories play that role,
and they are also what hard negatives (a "dalmatian-like car") should be
recognised as. Entries that name one of the run's classes are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

NEGATIVE_VOCABULARY: tuple[str, ...] = (
    "animal", "dog", "cat", "bird", "horse", "fish", "insect", "person", "face", "crowd",
    "car", "bicycle", "truck", "airplane", "boat", "train", "building", "house", "room",
    "street", "landscape", "forest", "beach", "mountain", "sky", "plant", "flower", "tree",
    "food", "fruit", "furniture", "chair", "table", "toy", "tool", "machine", "clothing",
    "shoe", "bag", "bottle", "cup", "book", "screen", "text", "logo", "pattern", "texture",
    "abstract shape", "sculpture", "painting",
)


def negatives_for(classes: Sequence[str]) -> list[str]:
    """The vocabulary minus anything that is, or contains, one of ``classes``."""
    names = {c.casefold() for c in classes}
    out = []
    for word in NEGATIVE_VOCABULARY:
        w = word.casefold()
        if w in names or any(w in n.split() or n in w.split() for n in names):
            continue
        out.append(word)
    return out
