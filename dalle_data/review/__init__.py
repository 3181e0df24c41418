"""Human review of a finished run: the lowest-scoring kept images first.

``dalle-data review OUT`` puts a selection of a run's kept images in front of a
person (a local web page, a table, JSON or a self-contained HTML contact
sheet); their decisions are saved as they are made and ``--apply`` writes
them into the dataset.

Modules, each one job:

* ``run``: reads a run directory (``spec.yaml``, ``manifest.jsonl``) and the
  *original* state of every record (before any review was applied).
* ``selection``: which images to show (lowest CLIP score overall or per
  class, plus a seeded random sample), pure functions of the records.
* ``decisions``: the append-only decision log and its replay.
* ``session``: a run + a selection + the log; validates decisions.
* ``apply``: decisions → dataset files (Parquet, ImageFolder, manifest).
* ``images``: PNG bytes of a record wherever it lies, source thumbnails.
* ``server`` and ``page.html``: the loopback-only review page.
* ``export``: the self-contained HTML contact sheet.

On disk (everything review writes lives in ``OUT/review/``)::

    OUT/review/decisions.jsonl   one line per click, append-only, fsync'd per line
    OUT/review/originals.jsonl   each record's state before --apply first changed it
    OUT/review/applied.jsonl     one line per --apply that changed something

Decisions are relative to a record's original state (as ``generate`` made
it), so the result of ``--apply`` depends only on the last decision per image:
applying twice changes nothing the second time, and a decision changed or
undone after an apply is carried out by the next apply (a reject becomes a
restore). See ``decisions`` and ``apply`` for the formats and semantics.
"""

from __future__ import annotations

from dalle_data.review.decisions import ACTIONS, Decision, DecisionError, DecisionLog
from dalle_data.review.run import ReviewRun, load_run
from dalle_data.review.selection import Item, SelectionOptions, select

__all__ = [
    "ACTIONS",
    "Decision",
    "DecisionError",
    "DecisionLog",
    "Item",
    "ReviewRun",
    "SelectionOptions",
    "load_run",
    "select",
]
