"""Which images a review shows: lowest CLIP overall and per class, seeded spot checks, ties."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dalle_data.records import Record
from dalle_data.review.selection import SelectionOptions, select


def rec(n: int, label: str = "cat", score: float | None = 0.5, status: str = "kept") -> Record:
    return Record(
        id=f"id{n:03d}", label=label, label_id=0, class_dir=label, role="positive", imitates=None,
        prompt=f"a {label}", prompt_source="t", mode="vanilla", backend="b", model="m", seed=n, width=8, height=8,
        clip_score=score, class_prob=0.5, top_class=label, kept=status == "kept", status=status,
        reject_reason=None, error=None, source_id=None, source_path=None, source2_id=None, source2_path=None,
        mask=None, shard="r001-s0000", created_at="2026-01-01T00:00:00+00:00",
    )


def ids(items) -> list[str]:
    return [item.record.id for item in items]


RECORDS = [rec(i, "cat" if i % 2 else "dog", score=(i * 37 % 20) / 100) for i in range(20)]


def test_lowest_overall_is_sorted_by_score_and_skips_what_was_not_kept() -> None:
    records = RECORDS + [rec(99, score=-1.0, status="rejected"), rec(98, score=-1.0, status="failed")]
    items = select(records, SelectionOptions(lowest=5))
    scores = [item.record.clip_score for item in items]
    assert scores == sorted(r.clip_score for r in RECORDS)[:5]
    assert [item.rank for item in items] == [1, 2, 3, 4, 5]
    assert {item.why for item in items} == {"lowest"}
    assert "id099" not in ids(items) and "id098" not in ids(items)


def test_lowest_per_class_takes_n_of_each_class_in_label_order() -> None:
    items = select(RECORDS, SelectionOptions(lowest=3, per_class=True), labels=("dog", "cat"))
    assert [item.record.label for item in items] == ["dog"] * 3 + ["cat"] * 3
    for label in ("cat", "dog"):
        got = [i.record.clip_score for i in items if i.record.label == label]
        assert got == sorted(r.clip_score for r in RECORDS if r.label == label)[:3]
    assert [item.rank for item in items] == [1, 2, 3, 1, 2, 3]


def test_a_class_with_fewer_images_than_n_gives_all_it_has() -> None:
    records = [rec(1, "cat"), rec(2, "cat"), rec(3, "dog")]
    items = select(records, SelectionOptions(lowest=5, per_class=True), labels=("cat", "dog"))
    assert ids(items) == ["id001", "id002", "id003"]


def test_ties_are_broken_by_id_whatever_the_input_order() -> None:
    tied = [rec(n, score=0.1) for n in (5, 3, 9, 1)] + [rec(7, score=0.2)]
    assert ids(select(tied, SelectionOptions(lowest=3))) == ["id001", "id003", "id005"]
    assert ids(select(list(reversed(tied)), SelectionOptions(lowest=3))) == ["id001", "id003", "id005"]


def test_unscored_images_come_first() -> None:
    items = select([rec(1, score=-0.5), rec(2, score=None)], SelectionOptions(lowest=1))
    assert ids(items) == ["id002"]


def test_random_sample_is_deterministic_for_a_seed_and_disjoint_from_the_lowest() -> None:
    opts = SelectionOptions(lowest=4, random=5, seed=7)
    first, again = select(RECORDS, opts), select(list(reversed(RECORDS)), opts)
    assert ids(first) == ids(again)
    lowest = [i for i in first if i.why == "lowest"]
    sample = [i for i in first if i.why == "random"]
    assert len(lowest) == 4 and len(sample) == 5
    assert not set(ids(lowest)) & set(ids(sample))
    assert first[:4] == lowest  # its own section, after the lowest
    other = select(RECORDS, SelectionOptions(lowest=4, random=5, seed=8))
    assert ids(other) != ids(first)


def test_random_alone_and_more_than_there_is() -> None:
    items = select(RECORDS, SelectionOptions(lowest=0, random=100, seed=1))
    assert sorted(ids(items)) == sorted(r.id for r in RECORDS)
    assert {item.why for item in items} == {"random"}


def test_shuffle_mixes_the_same_images_deterministically() -> None:
    plain = select(RECORDS, SelectionOptions(lowest=5, random=5, seed=3))
    mixed = select(RECORDS, SelectionOptions(lowest=5, random=5, seed=3, shuffle=True))
    assert sorted(ids(mixed)) == sorted(ids(plain))
    assert ids(mixed) != ids(plain)
    assert ids(mixed) == ids(select(RECORDS, SelectionOptions(lowest=5, random=5, seed=3, shuffle=True)))


def test_nothing_to_review_is_refused() -> None:
    with pytest.raises(ValidationError, match="nothing to review"):
        SelectionOptions(lowest=0, random=0)
    with pytest.raises(ValidationError):
        SelectionOptions(lowest=-1)


def test_a_new_ordering_is_one_entry_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from dalle_data.review.orderings import ORDERINGS, Ordering, value_key

    longest = Ordering("longest-prompt", "--longest-prompt", "longest prompt", "longest prompts",
                       "Review the N kept images with the longest prompts.", why="long",
                       key=lambda kept, values: value_key({r.id: -len(r.prompt) for r in kept}))
    monkeypatch.setitem(ORDERINGS, longest.name, longest)
    records = [rec(n).replace(prompt="x" * n) for n in range(1, 6)]
    opts = SelectionOptions(lowest=2, order="longest-prompt")
    assert ids(select(records, opts)) == ["id005", "id004"]
    assert opts.title == "longest prompt" and opts.describe() == "the 2 longest prompts"
    assert opts.ordering.flag == "--longest-prompt"


def test_every_ordering_flag_is_an_option_of_review() -> None:
    import typer

    from dalle_data.cli import app
    from dalle_data.review.orderings import ORDERINGS

    review = typer.main.get_command(app).commands["review"]  # type: ignore[attr-defined]
    flags = {opt for param in review.params for opt in param.opts}
    assert {o.flag for o in ORDERINGS.values()} <= flags
