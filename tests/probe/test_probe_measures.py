"""`probe` measures what classifier teams measure (issue 23): learners, groups, seeds, sizes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.probe.test_probe import CLASSES, fake_output, pattern, real_folder


def _groups_file(test: Path, name: str = "metadata.jsonl") -> Path:
    """Each test image's tint (light for even indices): a group field the pattern does not depend on."""
    rows = [{"file_name": f"{cls}/{i}.png", "label": cls, "tint": "light" if i % 2 == 0 else "dark"}
            for cls in CLASSES for i in range(10)]
    (test / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return test / name


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    tmp = tmp_path_factory.mktemp("probe-measures")
    test = real_folder(tmp / "test", 10)
    _groups_file(test)
    return fake_output(tmp / "out", 12, swap_rejected=True), test, real_folder(tmp / "train", 6, 20_000)


# -- the learners -----------------------------------------------------------------------------------


def _xy(learner, n: int, offset: int):
    import torch

    images = [pattern(c, offset + 1000 * k + i) for k, c in enumerate(CLASSES) for i in range(n)]
    return learner.features(images), torch.tensor([k for k in range(len(CLASSES)) for _ in range(n)])


def test_the_cnn_learner_beats_chance_on_a_separable_set_and_is_deterministic_per_seed() -> None:
    from dalle_data.probe.learners import CnnConfig, CnnLearner

    learner = CnnLearner(32, config=CnnConfig(epochs=1, min_steps=60))
    x, y = _xy(learner, 12, 0)
    x_test, y_test = _xy(learner, 10, 50_000)
    a = learner.fit(x, y, 2, seed=0)(x_test).argmax(-1)
    assert float((a == y_test).float().mean()) >= 0.9, "well above chance (50%)"
    assert bool((learner.fit(x, y, 2, seed=0)(x_test).argmax(-1) == a).all()), "the same seed, the same classifier"
    one = learner.fit(x[::12], y[::12], 2, seed=1)  # one image per class still trains
    assert one(x_test).shape == (len(y_test), 2)


def test_the_cnn_takes_any_size_and_mode_and_picks_its_side_from_the_test_images() -> None:
    from dalle_data.probe.learners import CnnLearner, auto_side

    images = [Image.new("RGB", (32, 32)), Image.new("L", (48, 40)), Image.new("RGBA", (300, 200))]
    assert CnnLearner(32).features(images).shape == (3, 3, 32, 32)
    assert auto_side([Image.new("RGB", (500, 375))] * 3) == 128 and auto_side([Image.new("RGB", (40, 40))]) == 32
    assert auto_side([Image.new("RGB", (90, 90))] * 2) == 64
    import torch

    for side in (32, 64, 256):  # one pooling stage per doubling: any side from 32 to 256 ends in one vector
        assert CnnLearner(side).network(3)(torch.zeros(2, 3, side, side)).shape == (2, 3)


# -- what is measured -------------------------------------------------------------------------------


def test_groups_worst_group_confusions_and_seeds_aggregate_as_mean_and_sd() -> None:
    from dalle_data.probe.measure import aggregate, evaluate

    classes = ["a", "b"]
    truth = [0] * 10 + [1] * 10
    groups = [{"bg": "x" if i % 2 else "y"} for i in range(20)]
    pred = [0] * 10 + [1 if i % 2 else 0 for i in range(10)]  # class b on background y: all wrong
    one = evaluate(pred, truth, classes, groups)
    assert one["top1"] == 0.75 and one["per_class"] == {"a": 1.0, "b": 0.5}
    assert one["groups"] == {"bg": {"a / x": 1.0, "a / y": 1.0, "b / x": 1.0, "b / y": 0.0}}
    assert one["worst"] == {"field": "bg", "group": "b / y", "accuracy": 0.0, "images": 5}
    assert one["confusion"] == [[10, 0], [5, 5]]
    other = evaluate([0] * 10 + [1] * 10, truth, classes, groups)
    both = aggregate([one, other], [0, 1], classes)
    assert both["top1"] == 0.875 and both["top1_sd"] == round(float(np.std([0.75, 1.0], ddof=1)), 4)
    assert both["worst_group"] == 0.5 and both["worst"]["group"] == "b / y"
    assert both["confused_pairs"] == [{"true": "b", "predicted": "a", "count": 5, "rate": 0.25}]
    assert [s["top1"] for s in both["seeds"]] == [0.75, 1.0]
    tiny = evaluate([0, 1, 1], [0, 1, 0], classes, [{"bg": "x"}, {"bg": "x"}, {"bg": "z"}])
    assert tiny["worst"] is None, "groups of fewer than five images are reported, never the worst"
    small = aggregate([tiny, tiny], [0, 1], classes)
    assert "worst_group" not in small and "worst" not in small and small["groups"]["bg"]["a / x"] == 1.0
    plain = aggregate([evaluate([0, 1], [0, 1], classes, None)], [0], classes)
    assert "groups" not in plain and plain["top1"] == 1.0


def test_a_probe_report_saved_before_the_schema_still_renders() -> None:
    from dalle_data.report.card import probe_lines
    from dalle_data.report.html import probe_section

    old = {"classes": ["a", "b"], "test_images": 20, "scorer": "tiny", "skipped": {"train": 0, "test": 0},
           "results": {"synthetic": {"train_images": 24, "top1": 0.95, "per_class": {"a": 1.0, "b": 0.9}},
                       "zero-shot": {"train_images": 0, "top1": 0.5, "per_class": {"a": 1.0, "b": 0.0}}}}
    assert "| synthetic | 24 | 95.0% | – |" in probe_lines(old)
    page = probe_section(old)
    assert "<td>synthetic</td><td>24</td><td>95.0%</td><td>–</td>" in page and "<polyline" not in page


def test_balanced_subsets_spread_over_classes_and_never_ask_for_more_than_there_is() -> None:
    from dalle_data.probe import balanced_subset

    labels = ["a"] * 10 + ["b"] * 2
    rows = list(range(12))
    chosen = balanced_subset(labels, rows, 6, seed=0)
    assert len(chosen) == 6 and sum(labels[i] == "b" for i in chosen) == 2, "b gives all it has, a the rest"
    assert balanced_subset(labels, rows, 6, seed=0) == chosen and balanced_subset(labels, rows, 50, 0) == rows


def test_probe_reports_groups_seeds_and_a_scaling_curve(world, cli) -> None:
    out, test, real_train = world
    result = cli("probe", "--train", out, "--test", test, "--real-train", real_train, "--scorer", "tiny",
                 "--seeds", "2", "--sizes", "0,4,8", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["schema"] == "dalle-data/probe/2" and report["seeds"] == 2 and report["learner"] == "linear"
    assert report["groups_source"] == "metadata.jsonl" and report["group_fields"] == ["tint"]
    rows = report["results"]
    assert list(rows) == ["synthetic", "real", "real + synthetic", "real + 4 synthetic", "real + 8 synthetic",
                          "zero-shot"]
    assert rows["real + 4 synthetic"]["synthetic_images"] == 4 and rows["real + 4 synthetic"]["real_images"] == 12
    for row in rows.values():
        assert set(row["groups"]["tint"]) == {f"{c} / {t}" for c in CLASSES for t in ("light", "dark")}
        assert row["worst_group"] <= row["top1"] and "worst_group_sd" in row and "confused_pairs" in row
    assert [s["seed"] for s in rows["real"]["seeds"]] == [0, 1] and rows["real"]["top1_sd"] == 0.0
    assert [p["synthetic_images"] for p in report["curve"]] == [0, 4, 8, 24]
    saved = json.loads((out / "report" / "probe.json").read_text())
    assert saved == report
    page = (out / "report" / "index.html").read_text()
    assert 'id="probe"' in page and "<polyline" in page and "worst group" in page
    card = (out / "README.md").read_text()
    assert "| trained on | images | top-1 | worst group |" in card and "| real + 4 synthetic | 16 |" in card


def test_the_table_names_the_worst_groups_and_stays_whole_off_a_terminal(world, cli) -> None:
    out, test, real_train = world
    result = cli("probe", "--train", out, "--test", test, "--real-train", real_train, "--scorer", "tiny")
    assert result.exit_code == 0, result.stderr
    assert "worst group" in result.stdout and "groups: tint (from metadata.jsonl)" in result.stdout
    assert "…" not in result.stdout and "real + synthetic" in result.stdout


def test_the_cnn_learner_from_the_command_line(world, cli) -> None:
    out, test, _ = world
    result = cli("probe", "--train", out, "--test", test, "--scorer", "tiny", "--learner", "cnn", "--epochs", "1",
                 "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["learner"] == "cnn" and "32x32" in report["learner_detail"]
    assert report["results"]["synthetic"]["top1"] > 0.5


def test_groups_file_and_auto(world, cli, tmp_path: Path) -> None:
    out, test, _ = world
    other = tmp_path / "groups.jsonl"
    other.write_text("".join(json.dumps({"path": str(test / c / f"{i}.png"), "half": "low" if i < 5 else "high"})
                             + "\n" for c in CLASSES for i in range(10)))
    result = cli("probe", "--train", out, "--test", test, "--scorer", "tiny", "--groups", other, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["group_fields"] == ["half"] and report["groups_source"] == str(other)
    result = cli("probe", "--train", out, "--test", test, "--scorer", "tiny", "--groups", "auto", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["groups_source"] == "auto" and report["group_fields"]
    assert set(report["tagging_agreement"]) == set(report["group_fields"])
    assert all(a["field"] == "tint" and 0 <= a["agreement"] <= 1 for a in report["tagging_agreement"].values())


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--seeds", "0"], "--seeds 0: give from 1 to 20"),
        (["--learner", "forest"], "--learner forest: choose one of linear, cnn"),
        (["--sizes", "4,x"], "--sizes 4,x: give whole numbers"),
        (["--sizes", "4,\u00b2"], "give whole numbers"),
        (["--sizes", "5000"], "--sizes 5000: --train"),
        (["--sizes", "0,4"], "--sizes 0: zero synthetic images is the real baseline; add --real-train"),
        (["--epochs", "3"], "--image-size and --epochs shape the CNN: add --learner cnn"),
        (["--learner", "cnn", "--image-size", "16"], "--image-size 16: give a side from 32 to 256"),
        (["--groups", "missing.jsonl"], "--groups missing.jsonl: no such file"),
    ],
)
def test_bad_options_are_one_line_errors_and_write_nothing(world, cli, args, needle) -> None:
    out, test, _ = world
    saved = out / "report" / "probe.json"
    before = saved.read_bytes() if saved.exists() else None
    result = cli("probe", "--train", out, "--test", test, "--scorer", "tiny", *args)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert (saved.read_bytes() if saved.exists() else None) == before


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("not json", ":2: not a JSON object"),
        ('{"label": "stripes"}', ":2: a line needs file_name"),
        ('{"file_name": "stripes/99.png", "tint": "x"}', ":2: stripes/99.png is not an image of the test set"),
    ],
)
def test_a_bad_groups_file_names_its_file_and_line(world, cli, tmp_path: Path, line: str, needle: str) -> None:
    out, test, _ = world
    bad = tmp_path / "g.jsonl"
    bad.write_text(json.dumps({"file_name": "stripes/0.png", "tint": "x"}) + "\n" + line + "\n")
    saved = out / "report" / "probe.json"
    before = saved.read_bytes() if saved.exists() else None
    result = cli("probe", "--train", out, "--test", test, "--scorer", "tiny", "--groups", bad)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"{bad}{needle}" in result.stderr
    assert (saved.read_bytes() if saved.exists() else None) == before


def test_a_test_set_of_other_classes_is_refused(world, cli, tmp_path: Path) -> None:
    out, _, _ = world
    (tmp_path / "cats").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "cats" / "0.png")
    result = cli("probe", "--train", out, "--test", tmp_path, "--scorer", "tiny")
    assert result.exit_code == 2 and "no images in folders named after the run's classes" in result.stderr


def test_groups_auto_names_the_shapes_worlds_background_and_style() -> None:
    """The shapes-demo CLIP tags balanced test renders with the shapes pack's environments and modes."""
    from dalle_data.config import build_spec
    from dalle_data.demo.world import BACKGROUNDS, CLASSES, balanced_renders
    from dalle_data.probe import pack_fields, tag_groups, tagging_agreement
    from dalle_data.probe.sets import Loaded
    from dalle_data.scoring import load_scorer, resolve_scorer_name

    renders = balanced_renders(2, 8)  # one per class and context
    scorer = load_scorer(resolve_scorer_name("auto", "shapes-demo"))
    spec = build_spec({"classes": list(CLASSES), "model": "shapes-demo", "modes": ["vanilla", "style"], "per_class": 1, "out": "x"})
    fields = pack_fields(spec)  # what `probe --groups auto` tags with for a make-demo run
    test_set = Loaded([r.image for r in renders], [r.label for r in renders], [""] * len(renders), 0)
    agreement = tagging_agreement(tag_groups(scorer, test_set, fields), [r.groups() for r in renders])
    assert agreement["environment"]["field"] == "background" and agreement["environment"]["agreement"] >= 0.9
    assert agreement["environment"]["mapping"] == {v: k for k, v in BACKGROUNDS.items()}
    assert agreement["mode"]["field"] == "style" and agreement["mode"]["agreement"] >= 0.85
