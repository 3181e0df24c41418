"""Learner-aware selection: `probe --save-learner`, an ONNX learner, and `generate --select uncertain:PATH`."""

from __future__ import annotations

import io
import json
import warnings
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import FAST

CLASSES = "cat,dog"


def invoke(*args: object):
    from dalle_data.cli import app

    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def export(module, shape, path: Path, meta: dict[str, str] | None = None, outputs: int = 1) -> Path:
    """``module`` as an ONNX file (TorchScript exporter, dynamic batch), with ``meta`` as its metadata."""
    import onnx
    import torch

    buf = io.BytesIO()
    names = [f"out{i}" for i in range(outputs)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(*shape),), buf, dynamo=False, input_names=["x"],
                          output_names=names, dynamic_axes={"x": {0: "n"}, **{n: {0: "n"} for n in names}})
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in (meta or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path.write_bytes(proto.SerializeToString())
    return path


def colour_net(classes: int = 2, seed: int = 0):
    """A classifier of the mean colour: different images, different (and spread) probabilities."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.fc = torch.nn.Linear(3, classes)
            with torch.no_grad():
                self.fc.weight.mul_(8.0)

        def forward(self, x):
            return self.fc(x.mean((2, 3)))

    return Net()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import torch

    root = tmp_path_factory.mktemp("learners")
    meta = {"labels": json.dumps(["dog", "cat", "bird"]), "image_size": "16", "mean": "[0.5, 0.5, 0.5]",
            "std": "[0.25, 0.25, 0.25]"}

    class Two(torch.nn.Module):
        def forward(self, x):
            m = x.mean((2, 3))
            return m, m

    class Flat(torch.nn.Module):
        def forward(self, x):
            return x[:, :2]

    return {
        "good": export(colour_net(3), (1, 3, 16, 16), root / "good.onnx", meta),
        "bare": export(colour_net(2, seed=1), (1, 3, 16, 16), root / "bare.onnx"),
        "two-outputs": export(Two(), (1, 3, 16, 16), root / "two.onnx", meta),
        "flat-input": export(Flat(), (1, 5), root / "flat.onnx", meta),
        "wrong-count": export(colour_net(5), (1, 3, 16, 16), root / "five.onnx", meta),
        "garbage": _write(root / "garbage.onnx", b"not an onnx model at all"),
        "labels": _write(root / "labels.txt", b"cat\ndog\n"),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- the ONNX learner ---------------------------------------------------------------------------------------

def test_a_learner_reads_its_classes_and_preprocessing_from_metadata_and_matches_torch(models) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from dalle_data.scoring.learner import OnnxLearner

    learner = OnnxLearner.load(models["good"])
    assert learner.labels == ["dog", "cat", "bird"] and learner.side == (16, 16)
    assert learner.mean == (0.5, 0.5, 0.5) and learner.std == (0.25, 0.25, 0.25)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (24, 20, 3), dtype=np.uint8)) for _ in range(5)]
    probs = learner.probs(images)
    assert probs.shape == (5, 3) and np.allclose(probs.sum(1), 1.0)
    net = colour_net(3)
    x = torch.stack([torch.from_numpy(np.asarray(im.resize((16, 16), Image.Resampling.BILINEAR), np.float32) / 255)
                     .permute(2, 0, 1) for im in images])
    want = torch.softmax(net((x - 0.5) / 0.25), -1).detach().numpy()
    assert np.allclose(probs, want, atol=1e-5), "logits are softmaxed; preprocessing is the metadata's"
    assert np.array_equal(learner.probs(images[2:3])[0], probs[2]), "an image's answer does not depend on its batch"
    need, p = learner.uncertainty(probs[0], "cat", None)
    assert p == pytest.approx(probs[0][1]) and need == pytest.approx(1 - probs[0][1])
    need, p = learner.uncertainty(probs[0], "hard_negative", "bird")
    assert p is None and need == pytest.approx(probs[0][2]), "a hard negative: how far it fools the learner"


def test_a_learner_without_metadata_takes_labels_size_and_normalization_from_options(models) -> None:
    from dalle_data.errors import SpecError
    from dalle_data.scoring.learner import LearnerOptions, OnnxLearner

    with pytest.raises(SpecError, match="names no classes; give --learner-labels FILE"):
        OnnxLearner.load(models["bare"])
    learner = OnnxLearner.load(models["bare"], LearnerOptions(labels_file=str(models["labels"]),
                                                               mean=(0.1, 0.2, 0.3)))
    assert learner.labels == ["cat", "dog"] and learner.mean == (0.1, 0.2, 0.3)
    assert learner.std == (0.229, 0.224, 0.225), "ImageNet's std when nothing says otherwise"
    with pytest.raises(SpecError, match="--learner-size 24, but the model takes 16x16"):
        OnnxLearner.load(models["bare"], LearnerOptions(labels_file=str(models["labels"]), size=24))
    a = OnnxLearner.load(models["bare"], LearnerOptions(labels_file=str(models["labels"])))
    b = OnnxLearner.load(models["bare"], LearnerOptions(labels_file=str(models["labels"]), mean=(0.1, 0.2, 0.3)))
    assert a.digest == b.digest and a.identity() != b.identity(), "the preprocessing is part of what it answers"


@pytest.mark.parametrize("name, message", [
    ("two-outputs", "the model has 2 outputs; give a classifier with one"),
    ("flat-input", "its input has shape N×5; an image classifier here takes N×3×H×W"),
    ("wrong-count", "it gives 5 scores per image but its classes are 3"),
    ("garbage", "not an ONNX model onnxruntime can run"),
])
def test_a_model_that_is_not_an_image_classifier_is_one_line(models, name: str, message: str) -> None:
    from dalle_data.errors import SpecError
    from dalle_data.scoring.learner import OnnxLearner

    with pytest.raises(SpecError, match=message) as err:
        OnnxLearner.load(models[name])
    assert "\n" not in str(err.value)


# --- generate --select ----------------------------------------------------------------------------------------

SELECT = [*FAST, "--classes", CLASSES, "--per-class", "4", "--candidates", "3", "--shard-size", "6", "--filter", "none",
          "--keep-rejected", "--quiet"]


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def selected(models, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("select") / "out"
    result = invoke("generate", *SELECT, "--select", f"uncertain:{models['good']}", "--batch-size", "4",
                    "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


def test_select_keeps_per_shard_the_candidates_the_learner_is_least_sure_of(selected: Path, models) -> None:
    import pyarrow.parquet as pq
    from PIL import Image

    from dalle_data.scoring.learner import OnnxLearner

    rows = manifest(selected)
    kept = [r for r in rows if r["status"] == "kept"]
    dropped = [r for r in rows if r["reject_reason"] == "not-selected"]
    assert {c: sum(r["label"] == c for r in kept) for c in CLASSES.split(",")} == {"cat": 4, "dog": 4}
    assert len(dropped) >= len(kept), "about K - 1 candidates set aside per kept image"
    groups: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: {"kept": [], "not": []})
    for r in kept + dropped:
        assert r["learner_prob"] is not None
        groups[(r["shard"], r["label"])]["kept" if r["status"] == "kept" else "not"].append(r["learner_prob"])
    compared = 0
    for g in groups.values():
        if g["kept"] and g["not"]:
            assert max(g["kept"]) <= min(g["not"]), g  # lower p(label): the learner needs it more
            compared += 1
    assert compared, "some shard had both kept and set-aside candidates of a class"
    learner = OnnxLearner.load(models["good"])
    for part in (selected / "parquet" / "train").glob("*.parquet"):
        for row in pq.read_table(part).to_pylist():
            image = Image.open(io.BytesIO(row["image"]["bytes"]))
            p = learner.probs([image])[0][learner.index[row["label_name"]]]
            assert row["learner_prob"] == pytest.approx(p, abs=1e-6), "the record carries the learner's answer"
    summary = json.loads((selected / "summary.json").read_text())
    sel = summary["select"]
    assert sel["learner"] == "good.onnx" and sel["candidates_per_image"] == 3 and sel["kept"] == 8
    assert sel["not_selected"] == len(dropped) and sel["learner_prob_kept"] < sel["learner_prob_not_selected"]


def test_select_is_the_same_dataset_whatever_the_batch_size(selected: Path, models, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("generate", *SELECT, "--select", f"uncertain:{models['good']}", "--batch-size", "1",
                    "--out", out)
    assert result.exit_code == 0, result.stderr
    # ids, verdicts and the learner's answers (the PNG bytes of a CPU model may drift a level or two with the
    # batch: tests/backends/test_contract.py bounds that; the selection must not follow such drift)
    strip = lambda rows: [(r["id"], r["status"], r["reject_reason"], round(r["learner_prob"] or 0, 3)) for r in rows]  # noqa: E731
    assert strip(manifest(out)) == strip(manifest(selected))


def test_another_learner_is_another_run(selected: Path, models, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "out"
    shutil.copytree(selected, out)
    result = invoke("generate", *SELECT, "--select", f"uncertain:{models['bare']}", "--learner-labels",
                    models["labels"], "--out", out)
    assert result.exit_code == 2 and "--overwrite" in result.stderr, "a run selected by one learner is not resumed by another"


def test_a_learner_given_with_select_wins_over_a_saved_specs_and_a_moved_file_resumes(selected: Path, models,
                                                                                     tmp_path: Path) -> None:
    import shutil

    from dalle_data.config import build_spec, load_config

    saved = load_config(selected / "spec.yaml")
    assert saved["learner"] == str(models["good"])
    moved = shutil.copy(models["good"], tmp_path / "moved.onnx")
    spec = build_spec({**saved, "select": f"uncertain:{moved}"})
    assert spec.learner == str(moved), "the flag's path, not the saved one"
    out = tmp_path / "out"
    shutil.copytree(selected, out)
    again = invoke("generate", "--resume", out, "--select", f"uncertain:{moved}", "--json")
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["already_finished"], "the same bytes: the same run, found finished"


@pytest.mark.parametrize("args, message", [
    (["--candidates", "3"], "--candidates shapes learner-aware selection: add --select uncertain:PATH"),
    (["--select", "uncertain"], "--select uncertain needs the learner: --select uncertain:PATH"),
    (["--select", "closest:x.onnx"], "--select: Input should be 'uncertain'"),
    (["--select", "uncertain:{missing}"], "cannot read it"),
    (["--select", "uncertain:{garbage}"], "not an ONNX model onnxruntime can run"),
    (["--select", "uncertain:{bare}"], "give --learner-labels FILE"),
    (["--select", "uncertain:{good}", "--candidates", "1"], "--candidates: Input should be greater than or equal to 2"),
    (["--select", "uncertain:{good}", "--learner-mean", "1,2"], "--learner-mean 1,2: give three numbers"),
    (["--select", "uncertain:{two-outputs}"], "2 outputs"),
])
def test_bad_select_input_is_one_line_and_touches_nothing(models, tmp_path: Path, args: list[str],
                                                          message: str) -> None:
    names = {**{k: str(v) for k, v in models.items()}, "missing": str(tmp_path / "nope.onnx")}
    args = [a.format(**names) for a in args]
    out = tmp_path / "out"
    result = invoke("generate", *FAST, "--classes", CLASSES, "--per-class", "2", *args, "--out", out)
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_a_learner_that_does_not_know_a_class_of_the_run_is_refused(models, tmp_path: Path) -> None:
    result = invoke("generate", *FAST, "--classes", "cat,zebra", "--per-class", "2", "--select",
                    f"uncertain:{models['good']}", "--out", tmp_path / "out")
    assert result.exit_code == 2 and "the learner does not know class 'zebra'" in result.stderr


def test_dry_run_says_what_select_will_do(models, tmp_path: Path) -> None:
    result = invoke("generate", *FAST, "--classes", CLASSES, "--per-class", "2", "--select",
                    f"uncertain:{models['good']}", "--dry-run", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert "select: keeps 1 in 4 of the candidates the filter passes" in result.stdout
    assert "at least 16 made" in result.stdout
    assert not (tmp_path / "out").exists()


# --- probe --save-learner -------------------------------------------------------------------------------------

def test_probe_saves_its_cnn_as_an_onnx_learner_that_answers_as_the_cnn(tmp_path: Path, monkeypatch) -> None:
    import numpy as np
    import torch

    from dalle_data.probe.learners import CnnLearner, save_onnx
    from dalle_data.scoring.learner import OnnxLearner
    from tests.probe.test_probe import CLASSES as PLANTED, fake_output, real_folder

    monkeypatch.setenv("DALLE_DATA_CNN_MIN_STEPS", "20")
    out = fake_output(tmp_path / "out", 6, rejected=False)
    test, real = real_folder(tmp_path / "test", 4), real_folder(tmp_path / "real", 3, 20_000)
    target = tmp_path / "learners" / "probe.onnx"
    result = invoke("probe", "--train", out, "--test", test, "--real-train", real, "--scorer", "tiny",
                    "--learner", "cnn", "--epochs", "1", "--save-learner", target, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["saved_learner"] == {"path": str(target), "setting": "real + synthetic", "seed": 0}
    learner = OnnxLearner.load(target)
    assert learner.labels == PLANTED and learner.side == (32, 32) and learner.output == "probabilities"
    # the file answers as the network it was exported from
    cnn = CnnLearner(32, epochs=1)
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in sorted(test.rglob("*.png"))]
    x = cnn.features(images)
    predict = cnn.fit(x, torch.tensor([i % 2 for i in range(len(images))]), 2, seed=0)
    saved = save_onnx(predict, tmp_path / "again.onnx", PLANTED, "test")
    want = predict(x).numpy()
    got = OnnxLearner.load(saved).probs(images)
    assert np.allclose(got, want, atol=1e-4), np.abs(got - want).max()


@pytest.mark.parametrize("args, message", [
    (["--learner", "linear"], "--save-learner saves the CNN: add --learner cnn"),
    (["--learner", "cnn", "--save-learner-to-folder"], "is a folder"),
    (["--learner", "cnn", "--save-learner-as-txt"], "name the file *.onnx"),
])
def test_bad_save_learner_is_one_line_before_training(tmp_path: Path, args: list[str], message: str) -> None:
    from tests.probe.test_probe import fake_output, real_folder

    out = fake_output(tmp_path / "out", 2, rejected=False)
    test = real_folder(tmp_path / "test", 2)
    target = tmp_path / "l.onnx"
    if "--save-learner-to-folder" in args:
        target = tmp_path
    elif "--save-learner-as-txt" in args:
        target = tmp_path / "l.txt"
    args = [a for a in args if not a.startswith("--save-learner-")]
    result = invoke("probe", "--train", out, "--test", test, "--scorer", "tiny", *args, "--save-learner", target)
    assert result.exit_code == 2 and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "l.onnx").exists()


# --- killed and resumed -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def select_reference(models, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], dict]:
    from tests.resume.helpers import run_cli, snapshot

    extra = ["--select", f"uncertain:{models['bare']}", "--learner-labels", str(models["labels"]),
             "--candidates", "2", "--max-attempts", "30"]
    reference = tmp_path_factory.mktemp("select-ref") / "out"
    assert run_cli(reference, *extra).returncode == 0
    assert any(r["reject_reason"] == "not-selected" for r in manifest(reference))
    return extra, snapshot(reference)


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["shard_marker:3", "generate:5"])  # between shards; inside a shard's batches
def test_a_selecting_run_killed_anywhere_resumes_to_the_uninterrupted_dataset(select_reference, tmp_path: Path,
                                                                              fault: str) -> None:
    import signal

    from tests.resume.helpers import leftovers, run_cli, snapshot

    extra, want = select_reference
    out = tmp_path / "out"
    killed = run_cli(out, *extra, env={"DALLE_DATA_FAULT": fault})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    resumed = run_cli(out, *extra)
    assert resumed.returncode == 0, resumed.stderr
    assert snapshot(out) == want and leftovers(out) == []


# --- the ledger's rule --------------------------------------------------------------------------------------------

def _slot(target: int, budget: int):
    from dalle_data.execution.plan import SlotPlan

    return SlotPlan(cls="cat", mode="vanilla", label="cat", label_id=0, class_dir="cat", hard_negative=False,
                    target=target, budget=budget, prompts=(), run_seed=0)


def _task(slot, start: int, needs: list[float], passed: list[bool] | None = None):
    from dalle_data.execution.plan import Unit
    from dalle_data.prompts import PromptItem
    from tests.writers.helpers import make_record

    items = []
    for k, need in enumerate(needs):
        ok = passed is None or passed[k]
        record = make_record(start + k, status="kept" if ok else "rejected", reject_reason=None if ok else "zero-shot")
        items.append((record, Unit(slot.key, start + k, PromptItem("cat", "vanilla", "a cat", "t"), start + k), need))
    return items


def test_the_ledger_keeps_one_in_k_by_need_and_holds_that_rate_over_small_pieces_of_a_slot() -> None:
    from dalle_data.execution.ledger import Ledger

    slot = _slot(target=4, budget=80)
    ledger = Ledger([slot], candidates=4)
    first = ledger.finalize_selected(_task(slot, 0, [0.1, 0.9, 0.3, 0.8, 0.2, 0.7, 0.0, 0.4]))
    assert [r.status for r in first].count("kept") == 2
    assert {r.id for r in first if r.status == "kept"} == {"rec0001", "rec0003"}, "the two the learner needs most"
    assert all(r.reject_reason == "not-selected" for r in first if r.status != "kept")
    # a piece of 3 (one rejected by the filter): 10 passed so far -> ceil(10 / 4) = 3 kept in all, one more
    second = ledger.finalize_selected(_task(slot, 8, [0.5, 0.6, 0.99], passed=[True, True, False]))
    assert [r.id for r in second if r.status == "kept"] == ["rec0009"]
    assert [r.reject_reason for r in second] == ["not-selected", None, "zero-shot"]
    # ties go in plan order
    third = ledger.finalize_selected(_task(slot, 11, [0.5, 0.5, 0.5, 0.5]))
    assert [r.id for r in third if r.status == "kept"] == ["rec0011"]
    assert ledger.slots[slot.key].kept == 4 and ledger.slots[slot.key].passed == 14


def test_the_slots_last_attempts_keep_every_candidate_that_passed() -> None:
    from dalle_data.execution.ledger import Ledger

    slot = _slot(target=4, budget=8)  # --per-class 4 --max-attempts 8 --candidates 4: budget for 2 per image
    ledger = Ledger([slot], candidates=4)
    records = ledger.finalize_selected(_task(slot, 0, [0.1 * k for k in range(8)]))
    assert [r.status for r in records].count("kept") == 4, "not short while candidates that passed were set aside"
    assert {r.id for r in records if r.status == "kept"} == {"rec0004", "rec0005", "rec0006", "rec0007"}
    assert ledger.slots[slot.key].done
