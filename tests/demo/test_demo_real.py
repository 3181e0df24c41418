"""`dalle-data demo-real`: held-out renders of the shapes world as a "real" ImageFolder for `probe`."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dalle_data.demo.world import CLASSES, SIZE, dataset
from dalle_data.naming import safe_dir_name
from tests.conftest import FAST


def _one_line_error(result, *needles: str) -> None:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def _tree(root: Path) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in sorted(root.iterdir()) if d.is_dir()}


def test_writes_an_imagefolder_of_the_held_out_test_renders(cli, tmp_path: Path) -> None:
    out = tmp_path / "real"
    result = cli("demo-real", out, "--per-class", "3")
    assert result.exit_code == 0, result.stderr
    tree = _tree(out)
    assert set(tree) == {safe_dir_name(c) for c in CLASSES}
    assert all(files == ["00000.png", "00001.png", "00002.png"] for files in tree.values())
    # The default is the world's "test" split, the renders benchmarks/shapes.py calls real: image i of
    # class k is render i * 8 + k (classes take turns), never one of the training split's.
    renders = dataset("test", 3 * len(CLASSES))
    for k, cls in enumerate(CLASSES):
        for i in range(3):
            with Image.open(out / safe_dir_name(cls) / f"{i:05d}.png") as im:
                assert im.size == (SIZE, SIZE) and im.mode == "RGB"
                assert np.array_equal(np.asarray(im), np.asarray(renders[i * len(CLASSES) + k].image))
    train = [np.asarray(r.image) for r in dataset("train", 3 * len(CLASSES))]
    written = [np.asarray(Image.open(p)) for p in out.glob("*/*.png")]
    assert not any(np.array_equal(a, b) for a in written for b in train)
    # Says where it wrote and what to run next.
    assert str(out) in result.stdout and "24 held-out renders" in result.stdout
    assert f"dalle-data probe --train demo-out --test {shlex.quote(str(out))}" in result.stdout
    assert not [p for p in tmp_path.iterdir() if p.name != "real"], "no temporary folder left beside OUT"


def test_classes_seed_and_determinism(cli, tmp_path: Path) -> None:
    args = ["--per-class", "2", "--classes", "red circle", "--classes", "blue star,green circle", "--seed", "7"]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert cli("demo-real", a, *args).exit_code == 0
    assert cli("demo-real", b, *args).exit_code == 0
    assert cli("demo-real", c, *args[:-1], "8").exit_code == 0
    assert set(_tree(a)) == {"red_circle", "blue_star", "green_circle"}
    same = [(a / f).read_bytes() == (b / f).read_bytes() for f in ("red_circle/00000.png", "blue_star/00001.png")]
    assert all(same), "the same options write the same images"
    other_seed = (c / "red_circle/00000.png").read_bytes()
    assert (a / "red_circle/00000.png").read_bytes() != other_seed, "another seed, other renders"


def test_rerunning_into_its_own_output_replaces_it(cli, tmp_path: Path) -> None:
    out = tmp_path / "real"
    assert cli("demo-real", out, "--per-class", "3").exit_code == 0
    result = cli("demo-real", out, "--per-class", "1", "--classes", "yellow star")
    assert result.exit_code == 0, result.stderr
    assert _tree(out) == {"yellow_star": ["00000.png"]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["real"]


def test_an_empty_existing_out_is_used(cli, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    assert cli("demo-real", tmp_path / "real", "--per-class", "1").exit_code == 0
    assert len(_tree(tmp_path / "real")) == len(CLASSES)


def test_refuses_a_non_empty_out_that_it_did_not_write(cli, tmp_path: Path) -> None:
    out = tmp_path / "photos"
    (out / "red_circle").mkdir(parents=True)
    (out / "red_circle" / "mine.png").write_bytes(b"precious")
    _one_line_error(cli("demo-real", out, "--per-class", "1"), str(out), "not empty")
    assert (out / "red_circle" / "mine.png").read_bytes() == b"precious"
    assert sorted(p.name for p in out.iterdir()) == ["red_circle"]
    # Its own output with something else added is not its own any more.
    own = tmp_path / "own"
    assert cli("demo-real", own, "--per-class", "1").exit_code == 0
    (own / "notes.txt").write_text("mine")
    _one_line_error(cli("demo-real", own, "--per-class", "1"), str(own), "not empty")
    assert (own / "notes.txt").read_text() == "mine"
    (tmp_path / "file").write_text("x")
    _one_line_error(cli("demo-real", tmp_path / "file"), "not a directory")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--classes", "purple circle"], ["purple circle", "not a class of the shapes world", "red circle"]),
        (["--seed", "0"], ["--seed 0", "training"]),
        (["--per-class", "0"], ["--per-class", "at least 1"]),
    ],
)
def test_bad_options_are_one_line_errors(cli, tmp_path: Path, args: list[str], needles: list[str]) -> None:
    _one_line_error(cli("demo-real", tmp_path / "real", *args), *needles)
    assert not (tmp_path / "real").exists()


def test_help_examples_run_as_written(cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("demo-real", "--help")
    assert result.exit_code == 0 and "Examples:" in result.stdout
    examples = re.findall(r"^\s*(dalle-data demo-real .*)$", result.stdout, flags=re.M)
    assert len(examples) >= 2
    monkeypatch.chdir(tmp_path)
    for line in examples:
        run = cli(*shlex.split(line)[1:])
        assert run.exit_code == 0, (line, run.stderr)
    assert "dalle-data probe --train demo-out --test real-shapes" in result.stdout


@pytest.fixture()
def one_torch_thread():
    """As in tests/image_modes/conftest.py: a second intra-op thread only waits on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_probe_runs_on_a_shapes_run_against_demo_real(cli, tmp_path: Path, one_torch_thread) -> None:
    """The README's probe example, with nothing but CLI commands (tiny models: fast, accuracy meaningless)."""
    classes = "red circle,blue star"
    run = tmp_path / "run"
    result = cli("generate", *FAST, "--classes", classes, "--per-class", "3", "--filter", "none",
                 "--format", "imagefolder", "--out", run, "--json")
    assert result.exit_code == 0, result.stderr
    real = tmp_path / "real"
    assert cli("demo-real", real, "--per-class", "4", "--classes", classes).exit_code == 0
    result = cli("probe", "--train", run, "--test", real, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["classes"] == ["red circle", "blue star"] and report["test_images"] == 8
    assert report["results"]["synthetic"]["train_images"] == 6
    assert set(report["results"]["zero-shot"]["per_class"]) == {"red circle", "blue star"}


# -- groups, the balanced test set and the biased few-shot training set (issue 23) -----------------


def _metadata(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]


def test_every_set_writes_each_images_groups_beside_it(cli, tmp_path: Path) -> None:
    from collections import Counter

    from dalle_data.demo.world import BACKGROUNDS, STYLES

    out = tmp_path / "held"
    assert cli("demo-real", out, "--per-class", "3").exit_code == 0
    rows = _metadata(out)
    assert sorted(r["file_name"] for r in rows) == sorted(f"{d}/{f}" for d, fs in _tree(out).items() for f in fs)
    renders = dataset("test", 3 * len(CLASSES))  # the held-out set itself is unchanged: its groups are the renders'
    by_name = {r["file_name"]: r for r in rows}
    for k, cls in enumerate(CLASSES):
        for i in range(3):
            row, render = by_name[f"{safe_dir_name(cls)}/{i:05d}.png"], renders[i * len(CLASSES) + k]
            assert row == {"file_name": row["file_name"], "label": cls, "background": render.background,
                           "style": STYLES[int(render.outlined)]}
    grid = tmp_path / "grid"
    assert cli("demo-real", grid, "--set", "balanced-test", "--per-class", "16").exit_code == 0
    cells = Counter((r["label"], r["background"], r["style"]) for r in _metadata(grid))
    assert set(cells.values()) == {2} and len(cells) == len(CLASSES) * len(BACKGROUNDS) * len(STYLES)
    for r in _metadata(grid)[:12]:  # the groups are what the picture shows
        with Image.open(grid / r["file_name"]) as im:
            dark = np.asarray(im.convert("L")).mean() < 100
        assert dark == (r["background"] == "night"), r


def test_biased_train_puts_a_fraction_of_each_class_in_its_own_context(cli, tmp_path: Path) -> None:
    from collections import Counter

    out = tmp_path / "few"
    result = cli("demo-real", out, "--set", "biased-train", "--per-class", "8", "--bias", "0.75")
    assert result.exit_code == 0, result.stderr
    marker = json.loads((out / "demo-real.json").read_text())
    own = marker["context_map"]
    assert marker["set"] == "biased-train" and marker["seed"] == 3 and set(own) == set(CLASSES)
    assert Counter(own.values()) == {b: 2 for b in ("plain", "striped", "dotted", "night")}, "a seeded deal"
    rows = _metadata(out)
    for cls in CLASSES:
        mine = [r for r in rows if r["label"] == cls]
        assert len(mine) == 8 and sum(r["background"] == own[cls] for r in mine) == 6
    assert all(f"{c}={v}" in result.stdout for c, v in own.items())
    # Configurable: by style, with a map given; deterministic bytes.
    args = ["--set", "biased-train", "--per-class", "4", "--classes", "red circle,blue star", "--context", "style",
            "--context-map", "red circle=line drawing, blue star=filled"]
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("demo-real", a, *args).exit_code == 0 and cli("demo-real", b, *args).exit_code == 0
    assert {(r["label"], r["style"]) for r in _metadata(a)} == {("red circle", "line drawing"), ("blue star", "filled")}
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in ("metadata.jsonl", "red_circle/00003.png"))
    # An earlier output with its metadata is still replaced.
    assert cli("demo-real", a, "--per-class", "1").exit_code == 0


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--set", "biased-train", "--bias", "1.5"], "--bias 1.5: give a fraction from 0 to 1"),
        (["--bias", "0.5"], "add --set biased-train"),
        (["--set", "mixed"], "--set mixed: choose one of held-out, balanced-test, biased-train"),
        (["--set", "biased-train", "--context", "colour"], "--context colour: choose one of background, style"),
        (["--set", "biased-train", "--context-map", "red circle"], "write CLASS=VALUE"),
        (["--set", "biased-train", "--classes", "red circle", "--context-map", "red circle=beach"],
         "'beach' is not a background"),
        (["--set", "biased-train", "--classes", "red circle,blue star", "--context-map", "red circle=night"],
         "names no background for blue star"),
        (["--set", "biased-train", "--classes", "red circle", "--context-map", "red circle=night,blue star=plain"],
         "blue star is not one of the classes rendered"),
        (["--set", "balanced-test", "--per-class", "12"], "a balanced test set needs a multiple of 8"),
    ],
)
def test_bad_set_options_are_one_line_errors_and_write_nothing(cli, tmp_path: Path, args, needle) -> None:
    _one_line_error(cli("demo-real", tmp_path / "x", *args), needle)
    assert not list(tmp_path.iterdir())
