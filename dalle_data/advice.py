"""Advice dalle-data gives in more than one place, written once.

Where to start reviewing: the README, ``dalle-data --help``, ``review
--help``, ``make demo``'s closing lines and the dataset card all name the
same order, the one ``benchmarks/review_orderings.py`` found finds the most
wrong-label images first (the margin of the image's label over the runner-up
label: 2.5-3x as many as chance in the first 16; the CLIP-score order, the
default, which finds prompt drift, no more than chance). The names here match
``review.orderings.ORDERINGS`` (a test holds them together).
"""

from __future__ import annotations

REVIEW_ORDER = "margin"
REVIEW_FLAG = "--smallest-margin"


def review_command(out: str, n: int = 50) -> str:
    """The review command to advise for the run in ``out``: its ``n`` likeliest wrong-label images."""
    return f"dalle-data review {out} {REVIEW_FLAG} {n}"
