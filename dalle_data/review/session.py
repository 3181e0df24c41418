"""A review session: one run, one selection, the decision log, validation.

The server, the listings and the contact sheet all go through a
``ReviewSession``: it knows which images are shown, what was decided about
each, and it refuses decisions that cannot apply (an id outside the
selection: 404; an unknown class, a relabel to the image's own class, a hard
negative in a run without a hard-negative label: 400). A refused decision
writes nothing.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from dalle_data.review.apply import outcome, recover
from dalle_data.review.decisions import (
    Decision,
    DecisionBody,
    DecisionError,
    DecisionLog,
)
from dalle_data.review.images import locate
from dalle_data.review.orderings import prepare
from dalle_data.review.run import DECISIONS_FILE, ReviewRun, load_run
from dalle_data.review.selection import Item, SelectionOptions, select

log = logging.getLogger(__name__)

ITEM_FIELDS = ("id", "label", "role", "imitates", "prompt", "prompt_source", "mode", "clip_score", "class_prob",
               "top_class", "width", "height", "seed", "source_id", "source_path", "source2_id", "source2_path",
               "mask", "shard")


class ReviewSession:
    """The images under review and their decisions; thread-safe."""

    def __init__(self, run: ReviewRun, opts: SelectionOptions) -> None:
        self.run = run
        self.opts = opts
        records = run.reviewable()
        values, groups = prepare(run, opts, records)
        self.items: list[Item] = select(records, opts, run.labels, values, groups)
        self.by_id: dict[str, Item] = {item.record.id: item for item in self.items}
        self.log = DecisionLog(run.review_dir / DECISIONS_FILE, run.spec_hash)
        self.decisions: dict[str, Decision] = self.log.replay()
        self._lock = threading.Lock()

    @classmethod
    def open(cls, out: Path | str, opts: SelectionOptions) -> ReviewSession:
        recover(out)  # a cut-off review --apply is finished first (commands do this, the reader does not)
        return cls(load_run(out), opts)

    # --- decisions ---------------------------------------------------------

    def decide(self, body: bytes) -> dict[str, Any]:
        """Validate a posted decision, log it (fsync'd), and return the item's new state."""
        request = DecisionBody.parse(body)
        item = self.by_id.get(request.id)
        if item is None:
            raise DecisionError(f"unknown image id {request.id!r}: not in this review", status=404)
        label = self._check(item, request)
        decision = self.log.make(request.id, request.action, label, item.record.label, undo=request.undo)
        with self._lock:
            self.log.append(decision)
            if decision.action == "clear":
                self.decisions.pop(decision.id, None)
            else:
                self.decisions[decision.id] = decision
            return {"ok": True, "item": self.item_json(item), "progress": self.progress()}

    def _check(self, item: Item, request: DecisionBody) -> str | None:
        """The label a decision files the image under; raises ``DecisionError`` (400)."""
        record, run = item.record, self.run
        if request.action == "relabel":
            if request.label is None:
                raise DecisionError("relabel needs a label: one of the run's classes")
            if request.label not in run.classes:
                raise DecisionError(f"unknown class {request.label!r}; choose from {', '.join(run.classes)}")
            if request.label == record.label and record.role == "positive":
                raise DecisionError(f"the image is already labeled {request.label!r}; accept it instead")
            return request.label
        if request.label is not None:
            raise DecisionError(f"{request.action} takes no label")
        if request.action == "hard_negative":
            if run.negative_label is None:
                raise DecisionError("this run has no hard-negative label (it had no adversarial mode); reject the image instead")
            if record.role != "positive":
                raise DecisionError("the image is already a hard negative")
            return run.negative_label
        return None

    # --- views ---------------------------------------------------------------

    def decision_of(self, record_id: str) -> Decision | None:
        return self.decisions.get(record_id)

    def undo_stack(self, limit: int = 500) -> list[dict[str, Any]]:
        """The page's undo stack rebuilt from the log, so undo works across reloads.

        Each decision pushes ``{"id", "prev"}`` (the decision it replaced, or
        None); an ``undo`` line pops. Entries outside this selection are left out.
        """
        stack: list[dict[str, Any]] = []
        current: dict[str, Decision] = {}
        for decision in self.log.lines():
            if decision.undo and stack and stack[-1]["id"] == decision.id:
                stack.pop()
            elif not decision.undo:
                stack.append({"id": decision.id, "prev": _decision_json(current.get(decision.id))})
            if decision.action == "clear":
                current.pop(decision.id, None)
            else:
                current[decision.id] = decision
        return [entry for entry in stack if entry["id"] in self.by_id][-limit:]

    def progress(self) -> dict[str, int]:
        reviewed = sum(1 for item in self.items if item.record.id in self.decisions)
        return {"reviewed": reviewed, "total": len(self.items)}

    def item_json(self, item: Item) -> dict[str, Any]:
        """An image as the page, ``--json`` and the contact sheet show it (original state).

        The record's fields, except ``seed``: a decimal string, exact where a JSON number is not.
        """
        record = item.record
        decision = self.decisions.get(record.id)
        current = self.run.current(record.id)
        data: dict[str, Any] = {name: getattr(record, name) for name in ITEM_FIELDS}
        # Seeds are 63-bit: as a JSON number, JavaScript (the page) would round most of them.
        data["seed"] = None if record.seed is None else str(record.seed)
        data.update(why=item.why, rank=item.rank, file=locate(self.run, record),
                    decision=_decision_json(decision),
                    applied=None if decision is None else current == outcome(self.run, record, decision))
        return data

    def state_json(self) -> dict[str, Any]:
        """Everything the page needs to draw itself."""
        run = self.run
        return {
            "out": str(run.out), "name": run.out.resolve().name, "spec_hash": run.spec_hash,
            "classes": list(run.classes), "negative_label": run.negative_label, "labels": list(run.labels),
            "complete": run.complete, "selection": {**self.opts.model_dump(), "description": self.opts.describe(),
                                                "title": self.opts.title},
            "kept": len(run.reviewable()), "decisions_file": str(self.log.path),
            "progress": self.progress(), "items": [self.item_json(item) for item in self.items],
            "undo": self.undo_stack(),
        }


def _decision_json(decision: Decision | None) -> dict[str, Any] | None:
    if decision is None:
        return None
    return {"action": decision.action, "label": decision.label, "time": decision.time}
