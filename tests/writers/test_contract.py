"""The writer contract, run over every registered format (as img2dataset's tests/test_writer.py does).

A format registered here for the test only (``jsonl_format``: one module, one ``register``) runs the same
contract, and flows through ``generate`` (tiny model) and ``verify``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from dalle_data import files
from dalle_data.config import build_spec
from dalle_data.rundir.layout import TEMP_PATTERN
from dalle_data.writers import FORMATS, register
from dalle_data.writers.base import WriterContext, destination
from dalle_data.writers.formats import unregister
from tests.conftest import FAST
from tests.writers.helpers import make_ctx, make_record
from tests.writers.jsonl_format import JSONL


@pytest.fixture()
def with_jsonl() -> Iterator[None]:
    register(JSONL)
    yield
    unregister(JSONL.name)


NAMES = [*FORMATS, JSONL.name]


@pytest.fixture(params=NAMES)
def fmt(request: pytest.FixtureRequest, with_jsonl: None):
    return FORMATS[request.param]


def records() -> list:
    kept = [make_record(n, label_id=n % 2, shard="r001-s0000") for n in range(3)]
    kept += [make_record(n, label_id=n % 2, shard="r001-s0001") for n in range(3, 5)]
    rejected = [make_record(9, status="rejected", shard="r001-s0001", reject_reason="review")]
    return kept + rejected


def files_under(ctx: WriterContext, fmt) -> dict[str, bytes]:
    return {p.relative_to(ctx.out_dir).as_posix(): p.read_bytes()
            for d in fmt.dirs(ctx.layout).values() if d.is_dir() for p in sorted(d.rglob("*")) if p.is_file()}


def write_all(ctx: WriterContext, fmt, recs: list) -> None:
    writer = fmt.writer(ctx)
    for shard in dict.fromkeys(r.shard for r in recs):
        writer.write(shard, [r for r in recs if r.shard == shard])
    writer.close([r.replace(image=None) for r in recs])


def test_shards_written_read_back_the_same_ids_labels_and_bytes(tmp_path: Path, fmt) -> None:
    ctx, recs = make_ctx(tmp_path), records()
    write_all(ctx, fmt, recs)
    assert fmt.exists(ctx.layout)
    for where in ("dataset", "rejected"):
        placed = [r for r in recs if destination(r, ctx) == where]
        images = fmt.read_images(ctx.layout, placed, where)
        assert images is not None and len(images) == len(placed)
        for record, (path, data) in zip(placed, images):
            assert record.id in path
            assert (data if data is not None else Path(path).read_bytes()) == record.image
    found = fmt.check(ctx, recs, {r.shard for r in recs}, lambda r, data: data == r.image)
    assert found.problems == [] and set(found.images) == {r.id for r in recs if destination(r, ctx)}
    assert all(found.images[r.id] == r.image for r in recs if destination(r, ctx))


def test_a_rewritten_shard_gives_the_same_files(tmp_path: Path, fmt) -> None:
    ctx, recs = make_ctx(tmp_path), records()
    write_all(ctx, fmt, recs)
    before = files_under(ctx, fmt)
    writer = fmt.writer(ctx)
    writer.write("r001-s0001", [r for r in recs if r.shard == "r001-s0001"])
    writer.close([r.replace(image=None) for r in recs])
    assert files_under(ctx, fmt) == before and before


def test_close_with_records_only_keeps_every_shard(tmp_path: Path, fmt) -> None:
    ctx, recs = make_ctx(tmp_path), records()
    write_all(ctx, fmt, recs)
    fmt.writer(ctx).close([r.replace(image=None) for r in recs])  # a second close, metadata only
    found = fmt.check(ctx, recs, {r.shard for r in recs}, lambda r, data: data == r.image)
    assert found.problems == []


def test_a_killed_write_leaves_no_partial_file_under_a_final_name(tmp_path: Path, fmt, monkeypatch) -> None:
    ctx, recs = make_ctx(tmp_path), records()

    class Killed(BaseException):
        """The process dies between writing a file and renaming it (a temporary file may stay behind)."""

    def killed(src: object, dst: object) -> None:
        raise Killed

    monkeypatch.setattr(files.os, "replace", killed)
    with pytest.raises(Killed):
        fmt.writer(ctx).write("r001-s0000", [r for r in recs if r.shard == "r001-s0000"])
    left = [name for name in files_under(ctx, fmt) if not Path(name).match(TEMP_PATTERN)]
    assert left == []


def test_a_registered_format_is_one_module_and_one_registration(tmp_path: Path, with_jsonl: None, cli) -> None:
    out = tmp_path / "out"
    spec = build_spec({"classes": ["cat"], "per_class": 1, "formats": ["jsonl"], "out": out})
    assert spec.formats == ("jsonl",)
    result = cli("generate", *FAST, "--classes", "cat,dog", "--per-class", "2", "--filter", "none", "--format", "jsonl", "--format", "parquet", "--out", out, "--quiet", "--json")
    assert result.exit_code == 0, result.stdout
    summary = json.loads(result.stdout)
    assert set(summary["outputs"]) == {"jsonl", "parquet"}
    parts = sorted((out / "jsonl" / "train").glob("part-*.jsonl"))
    assert sum(len(p.read_text().splitlines()) for p in parts) == summary["kept"] == 4
    report = json.loads(cli("verify", out, "--json").stdout)
    assert report["ok"] is True and report["checked"]["jsonl rows"] == 4 and report["checked"]["parquet rows"] == 4
    victim = parts[0]
    victim.unlink()
    damaged = json.loads(cli("verify", out, "--json").stdout)
    assert not damaged["ok"] and any(str(victim) in p["problem"] for p in damaged["problems"])
    repaired = json.loads(cli("verify", out, "--repair", "--json").stdout)
    assert repaired["ok"] is True and repaired["repaired"]["jsonl parts rewritten"] == 1 and victim.is_file()
