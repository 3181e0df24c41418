"""``dalle-data loop``: train, evaluate, focus, generate, retrain; ``rounds`` rounds of a budget of images.

Step 0 trains the learner (``probe``'s: a small CNN, or a linear probe on
the scorer's embeddings) on the real training images alone, measures it on
the test set (top-1, worst group) and predicts the validation set; its
errors there become the focus of round 1 (``probe.focus.find_focus``, as
``dalle-data focus`` makes it). Round ``r`` generates its share of the
budget by that focus, the learner is trained again on the real images and
every round's kept images so far, measured, and its validation errors focus
round ``r + 1``. The test set is only ever measured, never read for a focus.
With ``compare="uniform"`` the same rounds (same sizes, same seeds) are made
without a focus and measured the same way: the curve to beat. With
``select="uncertain"`` the learner of each focused step is also saved as
ONNX, and the next round over-generates ``candidates`` per image and keeps
those that learner is least sure of (``generate --select``).

OUT holds::

    loop.json              the loop's settings and every step's figures (rewritten whole after each step)
    focused/focus-R.yaml   the focus round R was made from (the errors of the learner after round R-1)
    focused/round-R/       round R's images: a dalle-data run (resumable, with its card and report)
    focused/learner-R.onnx --select uncertain: the learner after round R, which picks round R+1's images
    uniform/round-R/       --compare uniform: the same rounds without a focus
    report.html            accuracy and worst-group accuracy against images generated

Killed anywhere, the same command resumes: a step whose figures are in
``loop.json`` is done; a round's run resumes as any run does; training is
seeded and deterministic on the CPU, so the figures of a resumed loop are an
uninterrupted loop's. A loop directory made with other settings is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dalle_data.config import build_spec
from dalle_data.errors import SpecError
from dalle_data.execution.driver import Interrupted
from dalle_data.faults import point
from dalle_data.focus import load_focus_file
from dalle_data.job import load_models, run_generate
from dalle_data.probe import check_options, prediction_lines
from dalle_data.probe.focus import Prediction, find_focus, focus_inputs, tag_slots
from dalle_data.probe.learners import make_learner, save_onnx
from dalle_data.probe.measure import confused_pairs, evaluate
from dalle_data.probe.sets import Loaded, from_imagefolder, from_output, load_readable, read_groups
from dalle_data.progress import make_progress
from dalle_data.report.html import loop_page
from dalle_data.rundir import open_run
from dalle_data.rundir.directory import atomic_write_text
from dalle_data.rundir.layout import LOCK_FILE
from dalle_data.rundir.lock import RunLock
from dalle_data.scoring import load_scorer, resolve_scorer_name
from dalle_data.scoring.learner import INSTALL

SCHEMA = "dalle-data/loop/1"
ARMS = ("focused", "uniform")
MAX_ROUNDS = 20
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoopSettings:
    """What a loop is: a loop directory remembers these and refuses others."""

    real_train: str
    val: str
    test: str
    budget: int
    rounds: int
    spec: dict[str, Any]  # the generate values every round shares (model, classes, modes, seed, ...)
    learner: str = "cnn"
    epochs: int | None = None
    image_size: int | None = None
    learner_seed: int = 0
    groups: str = "auto"  # the validation images' slot values: auto (tagged by the scorer), none, or a file
    scorer: str = "auto"  # the CLIP of --groups auto and the linear learner (as given: a name, or auto)
    select: str | None = None  # "uncertain": each focused round keeps the candidates the last learner needs most
    candidates: int = 4  # with select: candidates that pass the filter per kept image

    def key(self) -> str:
        values = asdict(self)
        if self.select is None:  # added after loops were first saved: a loop without them keeps its key
            values.pop("select"), values.pop("candidates")
        return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Sets:
    """The real images, loaded once, with the learner's features of each (and of each round's images)."""

    classes: list[str]
    real: Loaded
    val: Loaded
    test: Loaded
    learner: Any
    val_tags: list[dict[str, str]] | None
    focus_inputs: tuple[Any, dict[str, list[str]], str | None]  # the rounds' pack, slots and contrast mode
    features: dict[str, Any] = field(default_factory=dict)


def per_round(budget: int, rounds: int, classes: int) -> list[int]:
    """Images per class of each round: the budget's per-class share, dealt as evenly as it goes."""
    per_class = budget // classes
    if not 1 <= rounds <= MAX_ROUNDS:
        raise SpecError(f"--rounds {rounds}: give from 1 to {MAX_ROUNDS}")
    if per_class < rounds:
        raise SpecError(f"--budget {budget}: {rounds} round(s) of {classes} classes need at least "
                        f"{rounds * classes} images (one per class and round)")
    return [per_class // rounds + (r < per_class % rounds) for r in range(rounds)]


def check_settings(settings: LoopSettings) -> None:
    """Every input, as a one-line error, before anything is written."""
    check_options(settings.learner, 1)
    if settings.select not in (None, "uncertain"):
        raise SpecError(f"--select {settings.select}: the only selection is 'uncertain' (the loop's own learner)")
    if settings.select is not None:
        if settings.learner != "cnn":
            raise SpecError("--select uncertain asks the loop's learner, saved as ONNX after each step: that is the "
                            "CNN (--learner cnn, the default)")
        if not 2 <= settings.candidates <= 64:
            raise SpecError(f"--candidates {settings.candidates}: give from 2 to 64")
        try:
            import onnx  # noqa: F401 - each step's learner is written with it
            import onnxruntime  # noqa: F401 - and read by the next round with it
        except ImportError:
            raise SpecError(f"--select uncertain saves and reads each step's learner as ONNX: {INSTALL}") from None
    if settings.learner != "cnn" and (settings.image_size is not None or settings.epochs is not None):
        raise SpecError("--image-size and --epochs shape the CNN: add --learner cnn (the default)")
    if settings.budget < 1:
        raise SpecError(f"--budget {settings.budget}: give the number of synthetic images to make in all")
    for flag, path in (("--real-train", settings.real_train), ("--val", settings.val), ("--test", settings.test)):
        if not Path(path).is_dir():
            raise SpecError(f"{flag} {path}: no such directory (an ImageFolder: <class>/<image>)")
    if os.path.realpath(settings.val) == os.path.realpath(settings.test):
        raise SpecError("--val and --test are the same folder: the focus would be read on the test set; "
                        "give a validation set of its own (dalle-data demo-real VAL --set balanced-test --seed 4)")
    if os.path.realpath(settings.real_train) in (os.path.realpath(settings.test), os.path.realpath(settings.val)):
        raise SpecError("--real-train is the --test or --val folder: the learner would train on the images it is "
                        "measured or focused on; give three sets of their own")
    if settings.groups not in ("auto", "none") and not Path(settings.groups).is_file():
        raise SpecError(f"--groups {settings.groups}: no such file (give a JSONL file, auto or none)")


def round_spec(settings: LoopSettings, out: Path, arm: str, r: int, per_class: int,
               focus: dict[str, Any] | None) -> Any:
    """Round ``r``'s generate spec: the shared values, its share of the budget, its seed and focus."""
    values = {**settings.spec, "out": str(out / arm / f"round-{r}"), "per_class": per_class,
              "seed": int(settings.spec.get("seed") or 0) + r - 1, "focus": focus}
    if arm == "focused" and settings.select is not None:  # the learner after round r - 1 picks round r's images
        values.update(select=settings.select, learner=str(learner_file(out, arm, r - 1)),
                      candidates=settings.candidates)
    return build_spec(values, source=f"loop round {r}")


def learner_file(out: Path, arm: str, r: int) -> Path:
    """Where ``--select`` keeps the learner trained after round ``r`` (the one round ``r + 1`` asks)."""
    return Path(out) / arm / f"learner-{r}.onnx"


class Loop:
    """One loop directory: its state (``loop.json``), its rounds, and the steps still to do."""

    def __init__(self, out: Path, settings: LoopSettings, say: Callable[[str], None], quiet: bool = True) -> None:
        self.out, self.settings, self.say, self.quiet = Path(out), settings, say, quiet
        self.path = self.out / "loop.json"
        self.models: tuple[Any, Any] | None = None
        self.state = self._load()

    def _load(self) -> dict[str, Any]:
        if self.out.exists() and not self.out.is_dir():
            raise SpecError(f"--out {self.out}: is a file; give a folder for the loop")
        if not self.path.is_file():
            if self.out.exists() and any(p.name != LOCK_FILE for p in self.out.iterdir()):
                raise SpecError(f"--out {self.out}: exists and is not a dalle-data loop (no loop.json); "
                                "give a new folder")
            return {"schema": SCHEMA, "settings": asdict(self.settings), "key": self.settings.key(), "arms": {}}
        try:
            state = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise SpecError(f"{self.path}: cannot read it ({err}); it is the loop's state") from None
        if not isinstance(state, dict) or state.get("schema") != SCHEMA:
            raise SpecError(f"{self.path}: not a dalle-data loop's state ({SCHEMA})")
        if state.get("key") != self.settings.key():
            was = state.get("settings", {})
            now = asdict(self.settings)
            differ = sorted(k for k in now if json.dumps(now[k], default=str, sort_keys=True)
                            != json.dumps(was.get(k), default=str, sort_keys=True))
            raise SpecError(f"--out {self.out}: holds a loop with other settings ({', '.join(differ) or 'its key'} "
                            "differ); rerun it as it was, or give a new --out")
        return state

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.state, indent=2, ensure_ascii=False) + "\n")

    def steps(self, arm: str) -> list[dict[str, Any]]:
        return self.state["arms"].setdefault(arm, [])


def run_loop(out: Path, settings: LoopSettings, *, compare: str | None = None, scorer_name: str = "auto",
             device: str = "cpu", quiet: bool = False, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run, resume or find finished the loop in ``out``; returns its state (``loop.json``)."""
    check_settings(settings)
    if compare not in (None, "uniform"):
        raise SpecError(f"--compare {compare}: the only comparison is 'uniform'")
    say = progress or (lambda line: None)
    out = Path(out)
    first = round_spec(settings, out, "focused", 1, 1, None)
    classes = list(first.classes)
    sizes = per_round(settings.budget, settings.rounds, len(classes))
    for size in sorted(set(sizes)):  # every round's spec checked up front, not when its turn comes
        round_spec(settings, out, "focused", 1, size, None)
    if settings.budget % len(classes):
        log.warning("--budget %d: %d classes share %d images (%d each); the rest is not made", settings.budget,
                    len(classes), settings.budget - settings.budget % len(classes), settings.budget // len(classes))
    Loop(out, settings, say, quiet)  # a folder that is not this loop is refused before anything is written
    out.mkdir(parents=True, exist_ok=True)
    with RunLock(out, "dalle-data loop"):
        loop = Loop(out, settings, say, quiet)
        loop.save()  # at once: a loop killed before its first step is still this loop
        arms = ARMS[: 2 if compare else 1]
        if not all(len(loop.steps(a)) == settings.rounds + 1 for a in arms):
            sets = _load_sets(settings, first, classes, scorer_name, device)
            for arm in arms:
                _run_arm(loop, sets, arm, sizes)
        loop.state["done"] = all(len(loop.steps(a)) == settings.rounds + 1 for a in loop.state["arms"])
        loop.save()
        atomic_write_text(out / "report.html", loop_page(loop.state))
    return loop.state


def _load_sets(settings: LoopSettings, spec: Any, classes: list[str], scorer_name: str, device: str) -> Sets:
    real = from_imagefolder(Path(settings.real_train), classes, "--real-train", with_groups=False)
    val = from_imagefolder(Path(settings.val), classes, "--val", with_groups=False)
    test = from_imagefolder(Path(settings.test), classes, "--test")
    loaded = {"real": load_readable(real, f"--real-train {settings.real_train}"),
              "val": load_readable(val, f"--val {settings.val}"), "test": load_readable(test, f"--test {settings.test}")}
    if len(set(loaded["real"].labels)) < 2:
        raise SpecError(f"--real-train {settings.real_train}: a classifier needs images of at least two classes")
    scorer = None
    if settings.learner == "linear" or settings.groups == "auto":
        scorer = load_scorer(resolve_scorer_name(scorer_name, spec.model, spec.backend), device=device)
    learner = make_learner(settings.learner, scorer=scorer, image_size=settings.image_size, epochs=settings.epochs,
                           device=device, test_images=loaded["test"].images)
    inputs = focus_inputs(spec)
    slots = inputs[1]
    tags: list[dict[str, str]] | None = None
    if settings.groups == "auto" and slots:
        tags = tag_slots(scorer, loaded["val"], slots)
    elif settings.groups not in ("auto", "none"):
        tags = read_groups(Path(settings.groups), val, Path(settings.groups).absolute().parent, strict=False)
        by_path = dict(zip(val.paths, tags))
        tags = [by_path.get(p, {}) for p in loaded["val"].paths]
    sets = Sets(classes, loaded["real"], loaded["val"], loaded["test"], learner, tags, inputs)
    for name in ("real", "val", "test"):
        sets.features[name] = learner.features(getattr(sets, name).images)
    return sets


def _run_arm(loop: Loop, sets: Sets, arm: str, sizes: list[int]) -> None:
    """The steps of one arm still to do: round ``r``'s images (made, or resumed), then the learner trained on
    the real images and rounds 1..r, measured, and (focused) its validation errors written as the next focus."""
    settings, out = loop.settings, loop.out
    steps = loop.steps(arm)
    if arm == "uniform" and not steps and loop.steps("focused"):
        steps.append({**loop.steps("focused")[0]})  # step 0 (real images only) is the same learner
        loop.save()
    for r in range(len(steps), settings.rounds + 1):
        if r > 0:
            focus = _read_focus(out / arm / f"focus-{r}.yaml") if arm == "focused" else None
            spec = round_spec(settings, out, arm, r, sizes[r - 1], focus)
            loop.say(f"{arm} round {r}/{settings.rounds}: {sizes[r - 1]} per class "
                     f"({sizes[r - 1] * len(sets.classes)} images) into {spec.out}")
            if loop.models is None:  # loaded once, for every round that still has images to make
                loop.models = load_models(spec) if spec.executor == "local" else (None, None)
            generator, scorer = loop.models
            try:
                summary = run_generate(spec, quiet=loop.quiet, progress=make_progress(loop.quiet),
                                       generator=generator, scorer=scorer)
            except Interrupted:
                raise Interrupted(f"stopped in {arm} round {r}; the images made are kept: rerun the same "
                                  "dalle-data loop command to resume") from None
            if not summary.get("complete"):
                log.warning("%s round %d is short of its quota; the loop goes on with the images it kept", arm, r)
        step = _train_step(sets, arm, r, out, settings.learner_seed)
        probs_val, predict = step.pop("_probs_val"), step.pop("_predict")
        if arm == "focused" and r < settings.rounds:
            _write_focus(out / arm / f"focus-{r + 1}.yaml", sets, probs_val, r)
            if settings.select is not None:
                save_onnx(predict, learner_file(out, arm, r), sets.classes,
                          f"dalle-data loop: the learner after round {r}, seed {settings.learner_seed}")
        point("loop_trained")
        steps.append(step)
        loop.save()
        loop.say(f"{arm} after round {r}: {step['synthetic_images']} synthetic images, top-1 {step['top1']:.1%}"
                 + (f", worst group {step['worst_group']:.1%} ({step['worst']['group']})"
                    if step.get("worst_group") is not None else ""))


def _round_images(sets: Sets, arm: str, k: int, out: Path) -> tuple[list[str], Any]:
    """Round ``k``'s kept images (labels, features), read once per process."""
    key = f"{arm}/{k}"
    if key not in sets.features:
        run = out / arm / f"round-{k}"
        if not any(r.status == "kept" and r.role == "positive" for r in open_run(run).records()):
            sets.features[key] = ([], None)  # the filter kept nothing (warned as a short round)
        else:
            images = load_readable(from_output(run), f"{arm} round {k} ({run})")
            sets.features[key] = (images.labels, sets.learner.features(images.images))
    return sets.features[key]


def _train_step(sets: Sets, arm: str, r: int, out: Path, seed: int) -> dict[str, Any]:
    import torch

    index = {c: i for i, c in enumerate(sets.classes)}
    xs = [sets.features["real"]]
    ys = [index[c] for c in sets.real.labels]
    for k in range(1, r + 1):
        labels, x = _round_images(sets, arm, k, out)
        rows = [i for i, c in enumerate(labels) if c in index]
        if rows and x is not None:
            xs.append(x[rows])
            ys += [index[labels[i]] for i in rows]
    predict = sets.learner.fit(torch.cat(xs), torch.tensor(ys), len(sets.classes), seed)
    probs = predict(sets.features["test"])
    figures = evaluate(probs.argmax(-1), [index[c] for c in sets.test.labels], sets.classes, sets.test.groups)
    return {"round": r, "synthetic_images": len(ys) - len(sets.real.labels), "real_images": len(sets.real.labels),
            "top1": figures["top1"], "worst_group": figures["worst_group"], "worst": figures["worst"],
            "per_class": figures["per_class"],
            "confused_pairs": confused_pairs(figures["confusion"], sets.classes),
            "_probs_val": predict(sets.features["val"]), "_predict": predict}


def _write_focus(target: Path, sets: Sets, probs: Any, r: int) -> None:
    import yaml

    lines = prediction_lines(sets.val, probs, sets.classes)
    preds = [Prediction(os.path.abspath(x["path"]), x["label"], x["pred"], x["probs"]) for x in lines]
    pack, slots, contrast = sets.focus_inputs
    wrong = sum(p.pred != p.label for p in preds)
    plan, _ = find_focus(preds, sets.val_tags, sets.classes, pack, slots, contrast,
                         made_from=f"dalle-data loop: the learner after round {r} on --val "
                                   f"({len(preds)} images, {wrong} wrong)")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, "# dalle-data loop: the focus of the next round (docs/focus.md)\n"
                      + yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=120))


def _read_focus(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise SpecError(f"{path}: the focus of this round is missing; the loop directory was changed by hand "
                        "(give a new --out)")
    return load_focus_file(path)
