"""The decision log (append-only, replay: last wins, undo, torn lines) and decision validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dalle_data.review.decisions import DecisionError, DecisionLog
from dalle_data.review.selection import SelectionOptions
from dalle_data.review.session import ReviewSession
from dalle_data.writers.base import write_jsonl
from tests.review.test_selection import rec


def make_run(out: Path, adversarial: bool = True) -> Path:
    """A finished run on disk from synthetic records: cat ×3, dog ×2, one hard negative."""
    records = [rec(1, "cat", 0.1), rec(2, "cat", 0.2), rec(3, "cat", 0.3), rec(4, "dog", 0.05), rec(5, "dog", 0.4)]
    if adversarial:
        records.append(rec(6, "hard_negative", 0.0).replace(role="hard_negative", imitates="cat", label_id=2))
    from dalle_data.config import build_spec, dump_spec
    from dalle_data.rundir import labels_for

    out.mkdir(parents=True)
    spec = build_spec({"classes": ["cat", "dog"], "per_class": 3, "model": "tiny", "out": str(out),
                       "modes": {"vanilla": 0.5, "adversarial": 0.5} if adversarial else {"vanilla": 1.0}})
    spec_hash = spec.spec_hash({})
    (out / "spec.yaml").write_text(dump_spec(spec, spec_hash, "test", {}))
    (out / "labels.json").write_text(labels_for(spec).to_text(spec_hash))
    (out / "summary.json").write_text(json.dumps({"spec_hash": spec_hash, "complete": True}))
    write_jsonl(out / "manifest.jsonl", [r.metadata() for r in records])
    (out / "_SUCCESS").write_text("")
    return out


def post(session: ReviewSession, **body) -> dict:
    return session.decide(json.dumps(body).encode())


def log_lines(session: ReviewSession) -> list[dict]:
    if not session.log.path.exists():
        return []
    return [json.loads(line) for line in session.log.path.read_text().splitlines()]


@pytest.fixture()
def session(tmp_path: Path) -> ReviewSession:
    return ReviewSession.open(make_run(tmp_path / "out"), SelectionOptions(lowest=10))


def test_each_decision_is_one_line_on_disk_when_decide_returns(session: ReviewSession) -> None:
    answer = post(session, id="id001", action="reject")
    assert answer["item"]["decision"]["action"] == "reject"
    assert answer["progress"] == {"reviewed": 1, "total": 6}
    (line,) = log_lines(session)
    assert line["id"] == "id001" and line["action"] == "reject" and line["was"] == "cat"
    assert line["spec_hash"] == session.run.spec_hash and line["v"] == 1 and line["undo"] is False
    post(session, id="id002", action="relabel", label="dog")
    assert [x["action"] for x in log_lines(session)] == ["reject", "relabel"]
    assert log_lines(session)[1]["label"] == "dog"


def test_replay_last_decision_wins_and_clear_forgets(session: ReviewSession) -> None:
    post(session, id="id001", action="reject")
    post(session, id="id001", action="accept")
    post(session, id="id002", action="hard_negative")
    post(session, id="id003", action="accept")
    post(session, id="id003", action="clear", undo=True)
    state = DecisionLog(session.log.path, session.run.spec_hash).replay()
    assert {k: v.action for k, v in state.items()} == {"id001": "accept", "id002": "hard_negative"}
    assert state["id002"].label == "hard_negative"
    assert len(log_lines(session)) == 5  # append-only: nothing rewritten


def test_undo_is_a_new_line_restoring_the_previous_decision(session: ReviewSession) -> None:
    post(session, id="id004", action="relabel", label="cat")
    post(session, id="id004", action="reject")
    post(session, id="id004", action="relabel", label="cat", undo=True)  # what the page sends on undo
    lines = log_lines(session)
    assert lines[-1]["undo"] is True
    decision = DecisionLog(session.log.path, session.run.spec_hash).replay()["id004"]
    assert (decision.action, decision.label) == ("relabel", "cat")


def test_reopening_resumes_with_what_was_decided(session: ReviewSession) -> None:
    post(session, id="id001", action="reject")
    again = ReviewSession.open(session.run.out, SelectionOptions(lowest=10))
    assert again.progress() == {"reviewed": 1, "total": 6}
    item = next(i for i in again.state_json()["items"] if i["id"] == "id001")
    assert item["decision"]["action"] == "reject" and item["applied"] is False


def test_torn_last_line_and_other_runs_lines_are_skipped(session: ReviewSession) -> None:
    post(session, id="id001", action="reject")
    other = json.dumps({**log_lines(session)[0], "id": "id002", "spec_hash": "another-run"})
    with session.log.path.open("a") as handle:
        handle.write(other + "\n" + '{"v":1,"id":"id003","act')  # a power cut mid-line
    log = DecisionLog(session.log.path, session.run.spec_hash)
    assert list(log.replay()) == ["id001"]
    assert log.ignored == 2


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"id": "nope", "action": "reject"}, 404, "unknown image id"),
    ({"id": "id001", "action": "relabel", "label": "cow"}, 400, "unknown class 'cow'"),
    ({"id": "id001", "action": "relabel", "label": "hard_negative"}, 400, "unknown class"),
    ({"id": "id001", "action": "relabel"}, 400, "needs a label"),
    ({"id": "id001", "action": "relabel", "label": "cat"}, 400, "already labeled"),
    ({"id": "id001", "action": "accept", "label": "dog"}, 400, "takes no label"),
    ({"id": "id006", "action": "hard_negative"}, 400, "already a hard negative"),
    ({"id": "id001", "action": "delete"}, 400, "action"),
    ({"id": "id001", "action": "reject", "extra": 1}, 400, "extra"),
    ({"action": "reject"}, 400, "id"),
])
def test_invalid_decisions_are_refused_and_nothing_is_written(session: ReviewSession, body, status, message) -> None:
    with pytest.raises(DecisionError, match=message) as caught:
        session.decide(json.dumps(body).encode())
    assert caught.value.status == status
    assert log_lines(session) == []


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"\xff\xfe", b"null"])
def test_malformed_bodies_are_refused(session: ReviewSession, raw: bytes) -> None:
    with pytest.raises(DecisionError) as caught:
        session.decide(raw)
    assert caught.value.status == 400
    assert log_lines(session) == []


def test_hard_negative_needs_a_run_with_a_negative_label(tmp_path: Path) -> None:
    session = ReviewSession.open(make_run(tmp_path / "out", adversarial=False), SelectionOptions(lowest=10))
    with pytest.raises(DecisionError, match="no hard-negative label"):
        post(session, id="id001", action="hard_negative")
    assert log_lines(session) == []


def test_the_undo_stack_survives_a_reload(session: ReviewSession) -> None:
    post(session, id="id001", action="reject")
    post(session, id="id002", action="accept")
    post(session, id="id002", action="relabel", label="dog")
    post(session, id="id002", action="accept", undo=True)  # the page undid the relabel
    post(session, id="id003", action="hard_negative")
    again = ReviewSession.open(session.run.out, SelectionOptions(lowest=10))
    stack = again.state_json()["undo"]
    assert [(e["id"], e["prev"] and e["prev"]["action"]) for e in stack] == [
        ("id001", None), ("id002", None), ("id003", None)]
    post(again, id="id003", action="clear", undo=True)
    assert [e["id"] for e in ReviewSession.open(session.run.out, SelectionOptions(lowest=10)).undo_stack()] == [
        "id001", "id002"]
