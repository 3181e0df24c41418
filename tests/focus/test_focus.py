"""`dalle-data focus` and `generate --focus`: from a classifier's mistakes to where the next images go."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

CLASSES = ("red circle", "blue square")
SCHEMA = "dalle-data/focus/1"


def invoke(*args: object):
    from dalle_data.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A shapes-demo run's files, 16 labeled validation renders per class (4 per background) and a
    classifier that took every red circle at night for a blue square (all else right)."""
    from dalle_data.demo.world import BACKGROUNDS, balanced_renders
    from tests.run_files import write_run_files

    root = tmp_path_factory.mktemp("focus")
    run = root / "run"
    write_run_files(run, classes=list(CLASSES), per_class=8, model="shapes-demo")
    val = root / "val"
    lines, groups = [], []
    for k, r in enumerate(balanced_renders(5, 48, CLASSES)):
        (val / r.label).mkdir(parents=True, exist_ok=True)
        name = f"{r.label}/{k}.png"
        r.image.save(val / name)
        wrong = r.label == "red circle" and r.background == "night"
        lines.append({"path": name, "label": r.label, "pred": "blue square" if wrong else r.label})
        groups.append({"file_name": name, "environment": BACKGROUNDS[r.background]})
    preds = val / "preds.jsonl"
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines))
    (val / "groups.jsonl").write_text("".join(json.dumps(g) + "\n" for g in groups))
    return {"run": run, "val": val, "preds": preds, "groups": val / "groups.jsonl"}


# --- the record -------------------------------------------------------------------------------------------

def test_spread_deals_by_weight_interleaved_and_deterministically() -> None:
    from dalle_data.focus import spread

    picks = spread(["a", "b", "c", "d"], [3.0, 1.0, 0.0, 2.0], 60)
    assert Counter(picks) == {"a": 30, "b": 10, "d": 20}, "in proportion, never a weight-0 item"
    assert picks == spread(["a", "b", "c", "d"], [3.0, 1.0, 0.0, 2.0], 60)
    assert Counter(picks[:6]) == {"a": 3, "b": 1, "d": 2}, "any prefix follows the weights"
    assert spread(["a"], [0.0], 5) == []


def test_class_quotas_deal_the_whole_budget_by_share() -> None:
    from dalle_data.focus import class_quotas

    focus = {"classes": {"a": {"share": 2.0}, "c": {"share": 0.0}}}
    assert class_quotas(10, ["a", "b", "c"], focus) == {"a": 20, "b": 10, "c": 0}
    assert sum(class_quotas(7, ["a", "b", "c"], {"classes": {"a": {"share": 1.3}}}).values()) == 21
    assert class_quotas(5, ["a", "b"], None) == {"a": 5, "b": 5}


@pytest.mark.parametrize(("focus", "needle"), [
    ({"schema": "other/1", "classes": {"red circle": {}}}, "schema"),
    ({"schema": SCHEMA, "classes": {"dalmatian": {"share": 2}}}, "'dalmatian' is not a class of the run"),
    ({"schema": SCHEMA, "classes": {"red circle": {"share": -1}}}, "give a number from 0 to"),
    ({"schema": SCHEMA, "classes": {"red circle": {"share": 1e308}}}, "give a number from 0 to 1e+06"),
    ({"schema": SCHEMA, "classes": {"red circle": {"weights": {"environment": {"at night": "lots"}}}}}, "from 0 to"),
    ({"schema": SCHEMA, "classes": {"red circle": {"weights": ["at night"]}}}, "weights: a mapping of slot name"),
    ({"schema": SCHEMA, "classes": {"red circle": {"contrasts": 5}}}, "contrasts: a list of"),
    ({"schema": SCHEMA, "classes": {"red circle": {"shares": 2}}}, "unknown key 'shares'"),
    ({"schema": SCHEMA, "classes": {"red circle": {"contrasts": [{"share": 0.95, "prompts": ["x"]}]}}}, "at most 0.9"),
    ({"schema": SCHEMA, "classes": {"red circle": {"contrasts": [{"share": 0.2, "prompts": []}]}}}, "prompts"),
    ({"schema": SCHEMA, "classes": {"red circle": {"weights": {"colour": {"red": 2}}}}}, "no slot 'colour'"),
    ({"schema": SCHEMA, "classes": {"red circle": {"weights": {"environment": {"at dusk": 2}}}}},
     "'at dusk' is not a value of the slot"),
])
def test_a_bad_focus_file_is_one_line_and_nothing_is_written(tmp_path: Path, focus: dict, needle: str) -> None:
    path = tmp_path / "focus.yaml"
    path.write_text(yaml.safe_dump(focus))
    for extra in ([], ["--dry-run"]):
        result = invoke("generate", "--classes", ",".join(CLASSES), "--model", "shapes-demo", "--per-class", "4",
                        "--focus", path, "--out", tmp_path / "out", *extra)
        assert result.exit_code == 2, result.stdout
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert not (tmp_path / "out").exists()


# --- generate --focus ---------------------------------------------------------------------------------

FOCUS = {"schema": SCHEMA, "why": "night fools it", "classes": {
    "red circle": {"share": 3, "weights": {"environment": {"at night": 4, "on a plain background": 0}},
                   "contrasts": [{"mistaken_for": "blue square", "share": 0.25,
                                  "prompts": ["a red circle at night, large and round"]}], "why": "8 of 8 wrong"}}}


def _spec(focus: object, **more: object):
    from dalle_data.config import build_spec

    return build_spec({"classes": list(CLASSES), "model": "shapes-demo", "per_class": 10, "out": "x",
                       "focus": focus, **more})


def test_the_plan_spends_quotas_and_prompts_by_the_focus(tmp_path: Path) -> None:
    from dalle_data.planning import plan

    slots = {s.cls: s for s in plan(_spec(FOCUS)).slots()}
    assert (slots["red circle"].target, slots["blue square"].target) == (15, 5), "20 images dealt 3 : 1"
    prompts = slots["red circle"].prompts[: slots["red circle"].budget]
    contrast = [p for p in prompts if p.source == "focus:contrast:blue square"]
    assert len(contrast) == pytest.approx(0.25 * len(prompts), abs=1) and contrast[0].prompt == "a red circle at night, large and round"
    env = Counter(next(v for v in ("at night", "plain", "striped", "dotted") if v in p.prompt)
                  for p in prompts if p not in contrast)
    assert "plain" not in env and env["at night"] == pytest.approx(4 * env["striped"], rel=0.1)
    assert env["striped"] == pytest.approx(env["dotted"], abs=1)
    uniform = {s.cls: s for s in plan(_spec(None)).slots()}
    assert slots["blue square"].prompts == uniform["blue square"].prompts[: len(slots["blue square"].prompts)], (
        "a class the focus leaves alone keeps its own prompt stream")


def test_the_focus_is_part_of_the_spec_hash_and_a_file_reads_as_its_content(tmp_path: Path) -> None:
    path = tmp_path / "focus.yaml"
    path.write_text(yaml.safe_dump(FOCUS))
    a, b = _spec(str(path)), _spec(FOCUS)
    assert a.spec_hash() == b.spec_hash() != _spec(None).spec_hash()
    edited = json.loads(json.dumps(FOCUS))
    edited["classes"]["red circle"]["share"] = 2
    assert _spec(edited).spec_hash() != a.spec_hash()
    assert "focus" not in _spec(None).content_dict(), "an unfocused run keeps the hash it had before --focus existed"


def test_a_focused_run_is_deterministic_and_says_so_in_dry_run_summary_and_card(tmp_path: Path) -> None:
    path = tmp_path / "focus.yaml"
    path.write_text(yaml.safe_dump(FOCUS))
    base = ["generate", "--classes", ",".join(CLASSES), "--model", "shapes-demo", "--per-class", "3", "--focus", path,
            "--format", "imagefolder", "--allow-short"]
    dry = invoke(*base, "--out", tmp_path / "a", "--dry-run")
    assert dry.exit_code == 0 and "focus: red circle: 5 images (share 3)" in dry.stdout, dry.stdout
    assert "contrast prompt(s) against 'blue square' (25%) because 8 of 8 wrong" in dry.stdout
    for name in ("a", "b"):
        result = invoke(*base, "--out", tmp_path / name)
        assert result.exit_code in (0, 3), result.stderr
    assert "focus: red circle" in result.stdout
    manifests = [[json.loads(x) for x in (tmp_path / n / "manifest.jsonl").read_text().splitlines()] for n in "ab"]
    assert [(r["id"], r["prompt"], r["sha256"]) for r in manifests[0]] == [
        (r["id"], r["prompt"], r["sha256"]) for r in manifests[1]], "the same spec and focus, the same ids and bytes"
    assert Counter(r["label"] for r in manifests[0] if r["status"] == "kept") == {"red circle": 5, "blue square": 1}
    card = (tmp_path / "a" / "README.md").read_text()
    assert "### Focused" in card and "8 of 8 wrong" in card and "night fools it" in card
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert summary["focus"][0].startswith("red circle: 5 images")
    saved = yaml.safe_load((tmp_path / "a" / "spec.yaml").read_text())
    assert saved["focus"]["classes"]["red circle"]["share"] == 3, "the spec holds the focus itself"
    again = invoke("generate", "--resume", tmp_path / "a")
    assert again.exit_code == 0 and "nothing to do" in again.stdout


# --- dalle-data focus -------------------------------------------------------------------------------------

def test_focus_chases_the_group_and_pair_where_the_errors_are(world, tmp_path: Path) -> None:
    out = tmp_path / "focus.yaml"
    result = invoke("focus", world["run"], "--predictions", world["preds"], "--groups", world["groups"], "-o", out)
    assert result.exit_code == 0, result.stderr
    assert "12 of 96 validation images wrong" in result.stdout and str(out) in result.stdout
    focus = yaml.safe_load(out.read_text())
    red = focus["classes"]["red circle"]
    assert focus["schema"] == SCHEMA and red["share"] > focus["classes"]["blue square"]["share"]
    weights = red["weights"]["environment"]
    assert weights["at night"] == max(weights.values()) and weights["on a plain background"] == 0.1
    assert "weights" not in focus["classes"]["blue square"], "a class without errors is not chased"
    contrast = red["contrasts"][0]
    assert contrast["mistaken_for"] == "blue square" and contrast["errors"] == 12
    assert contrast["prompts"] and all("red circle at night" in p for p in contrast["prompts"])
    # generate reads what focus wrote, as written
    from dalle_data.config import build_spec

    spec = build_spec({"classes": list(CLASSES), "model": "shapes-demo", "per_class": 4, "out": "x", "focus": str(out)})
    assert spec.focus["classes"]["red circle"]["contrasts"][0]["share"] == contrast["share"]
    assert not (world["run"] / "focus.yaml").exists(), "-o writes elsewhere, OUT untouched"


def test_focus_tags_groups_with_the_scorer_by_default_and_reads_csv_with_probs(world, tmp_path: Path) -> None:
    lines = [json.loads(x) for x in world["preds"].read_text().splitlines()]
    csv = world["val"] / "preds.csv"
    rows = ["path,label,pred,probs"]
    for x in lines:
        p = 0.1 if x["pred"] != x["label"] else 0.9
        other = next(c for c in CLASSES if c != x["label"])
        rows.append(f'{x["path"]},{x["label"]},{x["pred"]},"{json.dumps({x["label"]: p, other: round(1 - p, 2)}).replace(chr(34), chr(34) * 2)}"')
    csv.write_text("\n".join(rows) + "\n")
    import shutil

    run = shutil.copytree(world["run"], tmp_path / "run")  # the focus goes into OUT by default
    result = invoke("focus", run, "--predictions", csv, "--json")
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout)
    assert found["focus"] == str(run / "focus.yaml") and (run / "focus.yaml").is_file() and found["groups_from"] == "auto"
    red = [g for g in found["groups"] if g["class"] == "red circle"]
    assert max(red, key=lambda g: g["weight"])["value"] == "at night", "the scorer names the night background"
    assert found["classes"]["blue square"]["mass"] == pytest.approx(0.1), "probs give a soft error mass"


@pytest.mark.parametrize(("line", "needle"), [
    ('{"path": "red circle/0.png", "label": "dalmatian", "pred": "red circle"}', "'dalmatian' is not a class"),
    ('{"path": "nowhere.png", "label": "red circle", "pred": "red circle"}', "no such image"),  # (auto reads it)
    ('{"path": "red circle/0.png", "label": "red circle"', ":2: not a JSON object"),
    ('{"path": "red circle/0.png", "label": "red circle", "pred": "red circle", '
     '"probs": {"red circle": 0.5, "blue square": 0.2}}', "add up to 0.700"),
    ('{"path": "red circle/0.png", "label": "red circle"}', "needs pred"),
])
def test_bad_predictions_are_one_line_errors_and_nothing_is_written(world, line: str, needle: str) -> None:
    good = world["preds"].read_text().splitlines()[0]
    bad = world["val"] / "bad.jsonl"
    bad.write_text(good + "\n" + line + "\n")
    result = invoke("focus", world["run"], "--predictions", bad, "--groups", "auto" if "image" in needle else "none")
    assert result.exit_code == 2 and needle in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (world["run"] / "focus.yaml").exists()


def test_focus_refuses_an_empty_file_a_missing_run_and_two_sources(world, tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    for args, needle in (
        (["--predictions", empty], "the file is empty"),
        (["--predictions", world["preds"], "--from-probe", world["run"]], "one of them"),
        (["--from-probe", world["run"]], "no saved probe predictions"),
        (["--predictions", world["preds"], "--groups", tmp_path / "nope.jsonl"], "no such file"),
    ):
        result = invoke("focus", world["run"], *args)
        assert result.exit_code == 2 and needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = invoke("focus", tmp_path / "no-run", "--predictions", world["preds"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert not (world["run"] / "focus.yaml").exists()


def test_probe_saves_its_predictions_and_focus_reads_them(tmp_path: Path) -> None:
    from tests.probe.test_probe import fake_output, real_folder

    out = fake_output(tmp_path / "out", 6)
    test = real_folder(tmp_path / "test", 5)
    assert invoke("probe", "--train", out, "--test", test, "--scorer", "tiny", "--json").exit_code == 0
    saved = [json.loads(x) for x in (out / "report" / "probe-predictions.jsonl").read_text().splitlines()]
    assert {x["setting"] for x in saved} == {"synthetic"} and len(saved) == 10
    assert all(abs(sum(x["probs"].values()) - 1) < 0.01 and x["pred"] in x["probs"] for x in saved)
    result = invoke("focus", out, "--from-probe", out, "--groups", "none")
    assert result.exit_code == 0, result.stderr
    assert (out / "focus.yaml").is_file()
    bad = invoke("focus", out, "--from-probe", out, "--setting", "real")
    assert bad.exit_code == 2 and "probe saved synthetic" in bad.stderr


def test_pairs_get_contrasts_without_groups_and_a_groups_file_reads_from_its_own_folder(world, tmp_path: Path) -> None:
    out = tmp_path / "none.yaml"
    assert invoke("focus", world["run"], "--predictions", world["preds"], "--groups", "none", "-o", out).exit_code == 0
    red = yaml.safe_load(out.read_text())["classes"]["red circle"]
    assert "weights" not in red and red["contrasts"][0]["mistaken_for"] == "blue square"
    assert len(red["contrasts"][0]["prompts"]) > 1 and all("red circle" in p for p in red["contrasts"][0]["prompts"]), (
        "without groups the slots take their values in turn")
    # A groups file elsewhere: file_name is relative to its own folder, path may be absolute; a line naming an
    # image without a prediction is skipped.
    lines = [json.loads(x) for x in world["groups"].read_text().splitlines()]
    elsewhere = tmp_path / "meta" / "groups.jsonl"
    elsewhere.parent.mkdir()
    rows = [{"path": str(world["val"] / x.pop("file_name")), **x} for x in lines]
    rows.append({"path": str(world["val"] / "never-predicted.png"), "environment": "at night"})
    elsewhere.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "file.yaml"
    result = invoke("focus", world["run"], "--predictions", world["preds"], "--groups", elsewhere, "-o", out)
    assert result.exit_code == 0, result.stderr
    weights = yaml.safe_load(out.read_text())["classes"]["red circle"]["weights"]["environment"]
    assert weights["at night"] == max(weights.values())


def test_predictions_need_their_images_only_when_the_scorer_reads_them(world, tmp_path: Path) -> None:
    moved = tmp_path / "preds.jsonl"  # the same lines, away from the images
    moved.write_text(world["preds"].read_text())
    assert invoke("focus", world["run"], "--predictions", moved, "--groups", "none", "-o", tmp_path / "f.yaml").exit_code == 0
    result = invoke("focus", world["run"], "--predictions", moved, "-o", tmp_path / "g.yaml")
    assert result.exit_code == 2 and "no such image" in result.stderr and not (tmp_path / "g.yaml").exists()


def test_a_repaired_summary_keeps_the_focus_and_overwrite_keeps_the_focus_file(tmp_path: Path) -> None:
    from dalle_data.rundir import open_run
    from dalle_data.summary import rebuild
    from dalle_data.writers import outputs_of

    out = tmp_path / "run"
    (tmp_path / "focus.yaml").write_text(yaml.safe_dump(FOCUS))
    base = ["generate", "--classes", ",".join(CLASSES), "--model", "shapes-demo", "--per-class", "2",
            "--focus", tmp_path / "focus.yaml", "--allow-short", "--out", out]
    assert invoke(*base).exit_code in (0, 3)
    run = open_run(out)
    assert rebuild(run, run.records(), outputs_of(run.spec))["focus"][0].startswith("red circle: 3 images")
    (out / "focus.yaml").write_text(yaml.safe_dump(FOCUS))  # a user's edited focus, kept in OUT
    assert invoke(*base, "--overwrite").exit_code in (0, 3)
    assert yaml.safe_load((out / "focus.yaml").read_text()) == FOCUS, "--overwrite removes only the run's own files"
