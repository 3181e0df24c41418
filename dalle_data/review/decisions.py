"""The decision log: every review click, append-only, fsync'd line by line.

``OUT/review/decisions.jsonl`` gets one JSON line per decision, written with
one ``write`` and an ``fsync`` before the page is told it was saved, so
closing the tab, killing the server or a power cut loses at most the click in
flight (a torn last line is skipped on replay). Lines are never rewritten::

    {"v": 1, "time": "2026-05-01T12:00:00+00:00", "spec_hash": "e05666c1c9f8d791",
     "session": "3f9a0c1d", "id": "0f72726be552910fada4", "action": "relabel",
     "label": "dog", "was": "cat", "undo": false}

* ``action``: ``accept`` (keep as generated), ``reject`` (leave the kept set),
  ``relabel`` (file under ``label``, one of the run's classes, as a positive),
  ``hard_negative`` (file under the run's hard-negative label, ``label``, with
  ``imitates`` = the original class, as ``generate`` labels adversarial
  images) or ``clear`` (not reviewed: back to the original state).
* ``was``: the image's original label, for people reading the log.
* ``undo``: the line restores the state before the previous click; the page
  keeps an undo stack and writes the restored decision (or ``clear``) as a
  new line, so the log stays append-only.
* ``spec_hash``: the run the decision belongs to; replay ignores lines of
  another run (a folder reused with ``generate --overwrite`` and another spec).

Replay: the last line per id wins; ``clear`` removes the id.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dalle_data.errors import DalleDataError
from dalle_data.writers.base import append_jsonl

log = logging.getLogger(__name__)

ACTIONS: tuple[str, ...] = ("accept", "reject", "relabel", "hard_negative", "clear")
Action = Literal["accept", "reject", "relabel", "hard_negative", "clear"]
FORMAT_VERSION = 1


class DecisionError(DalleDataError):
    """A decision that cannot be taken; ``status`` is the HTTP status the server answers."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class DecisionBody(BaseModel):
    """What the page posts: one decision about one image."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, max_length=128)
    action: Action
    label: str | None = Field(default=None, max_length=1000)
    undo: bool = False

    @classmethod
    def parse(cls, body: bytes) -> DecisionBody:
        """Parse a request body; malformed JSON or fields raise ``DecisionError`` (400)."""
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise DecisionError("the request body is not JSON") from None
        except RecursionError:  # [[[[...]]]]: a few KiB are enough to exhaust the parser's stack
            raise DecisionError("the request body is nested too deeply to be a decision") from None
        if not isinstance(data, dict):
            raise DecisionError("the request body must be a JSON object: {\"id\": ..., \"action\": ...}")
        try:
            return cls(**data)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "body"
            raise DecisionError(f"{where}: {first.get('msg', 'invalid')}") from None


@dataclass(frozen=True)
class Decision:
    """One line of the log (see the module docstring)."""

    id: str
    action: str
    label: str | None
    was: str
    time: str
    spec_hash: str
    session: str
    undo: bool = False
    v: int = FORMAT_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        return {"v": data.pop("v"), "time": data.pop("time"), "spec_hash": data.pop("spec_hash"),
                "session": data.pop("session"), **data}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Decision:
        if row.get("action") not in ACTIONS or not isinstance(row.get("id"), str):
            raise ValueError(f"not a decision: {row!r:.80}")
        return cls(
            id=row["id"], action=row["action"], label=row.get("label"), was=str(row.get("was", "")),
            time=str(row.get("time", "")), spec_hash=str(row.get("spec_hash", "")),
            session=str(row.get("session", "")), undo=bool(row.get("undo", False)), v=int(row.get("v", 1)),
        )


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class DecisionLog:
    """``OUT/review/decisions.jsonl`` for one run (``spec_hash``)."""

    def __init__(self, path: Path, spec_hash: str) -> None:
        self.path = Path(path)
        self.spec_hash = spec_hash
        self.session = secrets.token_hex(4)
        self.ignored = 0  # lines of other runs, or torn, found by the last replay

    def append(self, decision: Decision) -> None:
        """One line, written and fsync'd before this returns."""
        append_jsonl(self.path, decision.to_json())

    def make(self, record_id: str, action: str, label: str | None, was: str, undo: bool = False) -> Decision:
        return Decision(id=record_id, action=action, label=label, was=was, time=now(),
                        spec_hash=self.spec_hash, session=self.session, undo=undo)

    def lines(self) -> list[Decision]:
        """Every decision of this run, in log order."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as err:
            raise DalleDataError(f"cannot read {self.path}: {err}") from None
        out: list[Decision] = []
        self.ignored = 0
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                decision = Decision.from_json(json.loads(line))
            except (ValueError, TypeError) as err:
                log.warning("%s line %d skipped: %s", self.path, number, err)
                self.ignored += 1
                continue
            if decision.spec_hash != self.spec_hash:
                self.ignored += 1
                continue
            out.append(decision)
        return out

    def replay(self) -> dict[str, Decision]:
        """The decision in force per id: the last line wins, ``clear`` removes it."""
        state: dict[str, Decision] = {}
        for decision in self.lines():
            if decision.action == "clear":
                state.pop(decision.id, None)
            else:
                state[decision.id] = decision
        return state
