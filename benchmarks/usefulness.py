"""Does the shapes-demo data help a classifier on "real" images? The biased few-shot world.

A small CNN (``dalle-data probe --learner cnn``: trained from scratch, seeded)
is trained on each training set below and tested on a balanced test set of
the shapes world (every class in every background and style, 40 per class:
320 renders). The real training set is biased and few-shot: 8 renders per
class, every one of a class on one background of its own (``demo-real --set
biased-train --bias 1.0``), the frisbee-on-a-beach problem. Printed for each
set, over ``--seeds`` seeds: mean and worst-group accuracy ± sd, and wall
time.

* real only (biased few-shot, 64 images);
* real + 64, 192, 576 shapes-demo images (``make demo``-style: vanilla 0.75,
  style 0.25, the shapes template pack; class-balanced subsets drawn per seed);
* real + 576 shapes-demo images, none in the class's real background;
* 576 shapes-demo images alone;
* 576 real renders, unbiased (the ceiling: is the learner competent?).

Targets (issue 23): the learner is competent (>= 95% on 576 balanced real
renders); 576 synthetic images reach >= 90% of the accuracy of 576 real ones;
biased real + 576 synthetic reaches >= 50% worst-group accuracy.

Diagnostics, to find out why the synthetic images fall short: the bundled
judge's class fidelity on the synthetic images by the background their prompt
asked for, and the share of each class's images that are near-duplicates.

    .venv/bin/python benchmarks/usefulness.py [--seeds 3] [--per-class 72] [--json]
    .venv/bin/python benchmarks/usefulness.py --quick --model DIR --generate-args "--guidance-scale 2"

``--quick`` trains only the two settings that say most about the synthetic
images (real + 576 synthetic, and 576 synthetic alone), to compare generator
settings; ``--model`` takes a model folder (a copy of models/shapes-demo with
other sampling defaults in its dalle_data_model.json, say).

``--focus ROUNDS`` (issue 24: spend the images where the learner fails)
compares, at the same budget of 576 synthetic images, the uniform run with
focused ones: per seed, the learner trained on what it has so far predicts a
*validation* set (balanced renders of another seed, never the test set; its
groups are the world's backgrounds, as ``--groups FILE`` gives them),
``dalle_data.probe.focus.find_focus`` turns its errors into a focus, and
``generate --focus`` makes the round's share of the budget; ``3`` is the loop
of three rounds of 192, ``1`` one round of 576 from the real-only learner.

    .venv/bin/python benchmarks/usefulness.py --focus 1,3

``--loop ROUNDS`` runs the product's own ``dalle-data loop`` (``--budget 576
--rounds ROUNDS --compare uniform``) once per seed on the same biased world
(the real sets written as ``demo-real`` writes them; the validation set is
balanced renders of seed 4, the test set those of seed 2) and prints each
arm's figures after every round, mean ± sd over the seeds, and whether the
loop reaches uniform's final top-1 with at most half of the images.

    .venv/bin/python benchmarks/usefulness.py --loop 3 --seeds 3

``--select K`` adds learner-aware selection to the loop's focused rounds
(``loop --select uncertain --candidates K``: each round over-generates K
candidates per kept image and keeps those the learner of the step before is
least sure of); the uniform arm stays plain.

    .venv/bin/python benchmarks/usefulness.py --loop 3 --seeds 3 --select 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "dalle_data"]


def generate(out: Path, per_class: int, extra: list[str], model: str = "shapes-demo") -> Path:
    from dalle_data.demo.world import CLASSES

    if model != "shapes-demo":  # a folder: its CLIP and pack are named, as shapes-demo's preset names them
        extra = ["--scorer", "shapes-demo", "--templates", str(REPO / "templates" / "shapes.yaml"), *extra]
    subprocess.run([*CLI, "generate", "--model", model, "--classes", ",".join(CLASSES), "--per-class",
                    str(per_class), "--mode", "vanilla=0.75,style=0.25", "--format", "imagefolder", "--out", str(out),
                    "--quiet", *extra], check=True, cwd=REPO)
    return out


def synthetic_set(out: Path) -> tuple[Any, list[str]]:
    """The kept images of a run, with the background each prompt asked for (None: the bare class)."""
    from dalle_data.demo.world import BACKGROUNDS
    from dalle_data.probe.sets import from_output, load_readable
    from dalle_data.rundir import open_run

    loaded = load_readable(from_output(out), str(out))
    prompts = {r.id: r.prompt for r in open_run(out).records() if r.status == "kept" and r.role == "positive"}
    asked = []
    for path in loaded.paths:
        prompt = prompts.get(Path(path).stem, "")
        asked.append(next((b for b, phrase in BACKGROUNDS.items() if phrase in prompt), "none"))
    return loaded, asked


def focus_from(predict: Any, x_val: Any, val: list[Any], target: Path, learner: Any) -> Path:
    """The focus ``dalle-data focus`` would write from these predictions on the validation renders, whose
    groups (the environment each shows) the world knows."""
    import yaml

    from dalle_data.demo.world import BACKGROUNDS, CLASSES
    from dalle_data.probe.focus import Prediction, find_focus, slot_values
    from dalle_data.prompts import load_pack

    probs = predict(x_val)
    preds = [Prediction(f"val/{k}.png", r.label, CLASSES[int(p.argmax())], {c: float(v) for c, v in zip(CLASSES, p)})
             for k, (r, p) in enumerate(zip(val, probs))]
    pack = load_pack(REPO / "templates" / "shapes.yaml")
    groups = [{"environment": BACKGROUNDS[r.background]} for r in val]
    plan, _ = find_focus(preds, groups, list(CLASSES), pack, slot_values(pack, ["vanilla", "style"]), "vanilla")
    target.write_text(yaml.safe_dump(plan, sort_keys=False, allow_unicode=True))
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="--loop: seeds first-seed .. first-seed + seeds - 1")
    parser.add_argument("--per-class", type=int, default=72, help="synthetic images generated per class")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quick", action="store_true", help="only real + 576 synthetic and 576 synthetic alone")
    parser.add_argument("--model", default="shapes-demo", help="shapes-demo or a model folder")
    parser.add_argument("--generate-args", default="", help="more generate flags, e.g. '--guidance-scale 2'")
    parser.add_argument("--focus", default="", metavar="ROUNDS",
                        help="compare uniform with focused rounds at the same budget, e.g. 1,3 (only those settings)")
    parser.add_argument("--select", type=int, default=0, metavar="K",
                        help="with --loop: the focused rounds keep 1 in K candidates, those the learner before is "
                             "least sure of (loop --select uncertain --candidates K)")
    parser.add_argument("--loop", type=int, default=0, metavar="ROUNDS",
                        help="run dalle-data loop (budget 576, this many rounds, --compare uniform) once per seed")
    args = parser.parse_args()
    if args.loop:
        return loop_benchmark(args)
    focus_rounds = [int(r) for r in args.focus.split(",") if r.strip()]

    import torch

    from dalle_data.demo.train import Judge
    from dalle_data.demo.world import CLASSES, balanced_renders, biased_renders, default_context_map, seeded_renders
    from dalle_data.generators.registry import shapes_demo_dir
    from dalle_data.probe import balanced_subset
    from dalle_data.probe.learners import CnnLearner
    from dalle_data.probe.measure import aggregate, evaluate

    index = {c: i for i, c in enumerate(CLASSES)}
    figures: dict[str, Any] = {"seeds": args.seeds, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        out = generate(Path(tmp) / "synthetic", args.per_class, args.generate_args.split(), args.model)
        figures["generate_s"] = round(time.monotonic() - started, 1)
        loaded, asked = synthetic_set(out)
    learner = CnnLearner(32, epochs=args.epochs)
    context_map = default_context_map("background", CLASSES, 3)
    real_few = biased_renders(3, 8, CLASSES, bias=1.0, context="background", context_map=context_map)
    real_many = seeded_renders(5, 576 // len(CLASSES) * len(CLASSES))
    test = balanced_renders(2, 40)
    groups = [r.groups() for r in test]

    def tensor(images: list[Any]) -> Any:
        return learner.features(images)

    x_test, y_test = tensor([r.image for r in test]), torch.tensor([index[r.label] for r in test])
    x_few, y_few = tensor([r.image for r in real_few]), torch.tensor([index[r.label] for r in real_few])
    x_many, y_many = tensor([r.image for r in real_many]), torch.tensor([index[r.label] for r in real_many])
    x_syn, y_syn = tensor(loaded.images), torch.tensor([index[c] for c in loaded.labels])
    val = balanced_renders(4, 40)  # the focus reads the learner's errors here, never on the test set
    x_val = tensor([r.image for r in val])
    rows_all = list(range(len(loaded.labels)))
    off_context = [i for i in rows_all if asked[i] != context_map[loaded.labels[i]]]

    def settings() -> list[tuple[str, Any]]:
        def mix(n: int | None, pool: list[int] = rows_all, real: bool = True) -> Any:
            def make(seed: int) -> tuple[Any, Any]:
                rows = pool if n is None else balanced_subset([loaded.labels[i] for i in pool], pool, n, seed)
                xs, ys = [x_syn[rows]], [y_syn[rows]]
                if real:
                    xs.insert(0, x_few)
                    ys.insert(0, y_few)
                return torch.cat(xs), torch.cat(ys)
            return make

        n_all = len(rows_all)
        return [
            ("real only (8 per class, biased)", lambda seed: (x_few, y_few)),
            ("real + 64 synthetic", mix(64)),
            ("real + 192 synthetic", mix(192)),
            (f"real + {min(576, n_all)} synthetic", mix(min(576, n_all))),
            (f"real + {min(576, len(off_context))} synthetic, none in the class's real background",
             mix(min(576, len(off_context)), off_context)),
            (f"{min(576, n_all)} synthetic alone", mix(min(576, n_all), real=False)),
            (f"{len(real_many)} real, unbiased (ceiling)", lambda seed: (x_many, y_many)),
        ]

    chosen = settings()
    if args.quick:
        chosen = [chosen[3], chosen[5]]
    if focus_rounds:
        chosen = [chosen[0], chosen[3]]
    results = {}
    real_only: dict[int, Any] = {}  # seed -> the real-only learner (the focus's first round reads its errors)

    def report(name: str, runs: list[Any], times: list[float], images: int) -> None:
        row = aggregate(runs, list(range(args.seeds)), CLASSES)
        results[name] = {"images": images, "top1": row["top1"], "top1_sd": row["top1_sd"],
                         "worst_group": row["worst_group"], "worst_group_sd": row["worst_group_sd"],
                         "worst": row["worst"], "train_s_best": round(min(times), 1),
                         "train_s_median": round(statistics.median(times), 1)}
        if not args.json:
            r = results[name]
            print(f"{name:<72} {r['images']:>4} img  top-1 {r['top1']:.1%} ± {r['top1_sd']:.1%}  worst group "
                  f"{r['worst_group']:.1%} ± {r['worst_group_sd']:.1%}  train {r['train_s_median']}s/seed", flush=True)

    for k, (name, make) in enumerate(chosen):
        runs, times = [], []
        for seed in range(args.seeds):
            x, y = make(seed)
            t0 = time.monotonic()
            predict = learner.fit(x, y, len(CLASSES), seed)
            times.append(time.monotonic() - t0)
            runs.append(evaluate(predict(x_test).argmax(-1), y_test, CLASSES, groups))
            if k == 0:
                real_only[seed] = predict
        report(name, runs, times, len(y))
    for rounds in focus_rounds:
        budget = min(576, len(rows_all)) // len(CLASSES)  # per class, as the uniform run
        runs, times, curve = [], [], []
        for seed in range(args.seeds):
            x, y, predict, spent = x_few, y_few, real_only[seed], []
            for r in range(rounds):
                per_class = budget // rounds + (r < budget % rounds)
                with tempfile.TemporaryDirectory() as tmp:
                    focus_file = focus_from(predict, x_val, val, Path(tmp) / "focus.yaml", learner)
                    run = generate(Path(tmp) / "round", per_class, [*args.generate_args.split(), "--focus",
                                   str(focus_file), "--seed", str(1000 * (seed + 1) + r)], args.model)
                    made, _ = synthetic_set(run)
                x = torch.cat([x, tensor(made.images)])
                y = torch.cat([y, torch.tensor([index[c] for c in made.labels])])
                t0 = time.monotonic()
                predict = learner.fit(x, y, len(CLASSES), seed)
                times.append(time.monotonic() - t0)
                spent.append((len(y) - len(y_few), evaluate(predict(x_test).argmax(-1), y_test, CLASSES, groups)))
            runs.append(spent[-1][1])
            curve.append([(n, round(m["top1"], 4), round(m["worst_group"], 4)) for n, m in spent])
        name = (f"real + {len(y) - len(y_few)} synthetic, focused: "
                + ("one round from the real-only learner's errors" if rounds == 1 else f"{rounds} rounds (a loop)"))
        report(name, runs, times, len(y))
        results[name]["curve_per_seed"] = curve  # (synthetic images so far, top-1, worst group) after each round
        if not args.json and rounds > 1:
            for r in range(rounds):
                at = [c[r] for c in curve]
                print(f"    after round {r + 1}: {statistics.mean(n for n, _, _ in at):.0f} synthetic, top-1 "
                      f"{statistics.mean(t for _, t, _ in at):.1%}, worst group {statistics.mean(w for _, _, w in at):.1%}")
    figures["results"] = results
    if focus_rounds:
        print(json.dumps(figures, indent=2) if args.json else "")
        return

    # Why: the judge's class fidelity on the synthetic images, by the background their prompt asked for.
    judge = Judge.load(shapes_demo_dir() / "judge.safetensors")
    predicted = judge.predict(loaded.images)
    fidelity: dict[str, list[int]] = {}
    for p, label, where in zip(predicted, loaded.labels, asked):
        hits = fidelity.setdefault(where, [0, 0])
        hits[0] += p == label
        hits[1] += 1
    figures["judge_fidelity_by_asked_background"] = {k: round(h / n, 3) for k, (h, n) in sorted(fidelity.items())}
    figures["judge_fidelity"] = round(sum(p == t for p, t in zip(predicted, loaded.labels)) / len(predicted), 3)
    real_judge = judge.predict([r.image for r in test])
    figures["judge_on_test"] = round(sum(p == r.label for p, r in zip(real_judge, test)) / len(test), 3)

    names = list(results)
    if args.quick:
        print(json.dumps(figures, indent=2) if args.json else
              f"judge fidelity {figures['judge_fidelity']:.1%}; by background: {figures['judge_fidelity_by_asked_background']}")
        return
    ceiling, synth, mixed = results[names[-1]], results[names[-2]], results[names[3]]
    figures["targets"] = {
        "learner competent (>= 95% on real, unbiased)": [ceiling["top1"], ceiling["top1"] >= 0.95],
        "synthetic-to-real value (>= 90%)": [round(synth["top1"] / ceiling["top1"], 3),
                                             synth["top1"] / ceiling["top1"] >= 0.9],
        "biased real + 576 synthetic, worst group >= 50%": [mixed["worst_group"], mixed["worst_group"] >= 0.5],
    }
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"generate {args.per_class} per class: {figures['generate_s']}s; judge fidelity on the synthetic images "
          f"{figures['judge_fidelity']:.1%} (on the test renders {figures['judge_on_test']:.1%}); by the background "
          "asked for: " + ", ".join(f"{k} {v:.0%}" for k, v in figures["judge_fidelity_by_asked_background"].items()))
    for target, (value, met) in figures["targets"].items():
        print(f"target {target}: {value:.1%} {'met' if met else 'MISSED'}")


def loop_benchmark(args: Any) -> None:
    """``dalle-data loop`` per seed, both arms; each arm's figures after every round over the seeds."""
    from dalle_data.demo.world import CLASSES, write_held_out

    budget = args.per_class * len(CLASSES)
    per_seed: list[dict[str, Any]] = []
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        world = Path(tmp)
        write_held_out(world / "few", per_class=8, seed=3, kind="biased-train", bias=1.0)
        write_held_out(world / "val", per_class=40, seed=4, kind="balanced-test")
        write_held_out(world / "test", per_class=40, seed=2, kind="balanced-test")
        # The rounds' spec, as generate() makes the uniform sets: a model folder names shapes-demo's CLIP and pack.
        spec = {"model": args.model, "modes": ["vanilla=0.75", "style=0.25"]}
        if args.model != "shapes-demo":
            spec |= {"scorer": "shapes-demo", "templates": str(REPO / "templates" / "shapes.yaml")}
        (world / "spec.yaml").write_text(json.dumps(spec))  # JSON is YAML
        if args.generate_args:
            print("--generate-args is not passed to the loop's rounds (put it in the spec)", file=sys.stderr)
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            extra = ["--epochs", str(args.epochs)] if args.epochs else []
            if args.select:
                extra += ["--select", "uncertain", "--candidates", str(args.select)]
            cmd = [*CLI, "loop", "--real-train", str(world / "few"), "--val", str(world / "val"), "--test",
                   str(world / "test"), "--config", str(world / "spec.yaml"), "--classes", ",".join(CLASSES),
                   "--budget", str(budget), "--rounds", str(args.loop), "--seed", str(seed),
                   "--compare", "uniform", "--out", str(world / f"loop-{seed}"), "--json", *extra]
            started = time.monotonic()
            done = subprocess.run(cmd, check=True, cwd=REPO, capture_output=True, text=True)
            walls.append(time.monotonic() - started)
            per_seed.append(json.loads(done.stdout)["arms"])
            print(f"seed {seed}: {walls[-1]:.0f}s " + json.dumps({arm: [{k: s.get(k) for k in ("round", "synthetic_images",
                  "top1", "worst_group")} for s in steps] for arm, steps in per_seed[-1].items()}), file=sys.stderr, flush=True)
    figures: dict[str, Any] = {"seeds": args.seeds, "budget": budget, "rounds": args.loop, "select": args.select or None,
                               "wall_s": [round(w) for w in walls]}
    for arm in ("focused", "uniform"):
        rows = []
        for r in range(args.loop + 1):
            steps = [arms[arm][r] for arms in per_seed]
            top1 = [s["top1"] for s in steps]
            worst = [s["worst_group"] or 0.0 for s in steps]
            rows.append({"round": r, "synthetic_images": round(statistics.mean(s["synthetic_images"] for s in steps)),
                         "top1": round(statistics.mean(top1), 4), "top1_sd": round(statistics.stdev(top1), 4) if len(top1) > 1 else 0.0,
                         "worst_group": round(statistics.mean(worst), 4),
                         "worst_group_sd": round(statistics.stdev(worst), 4) if len(worst) > 1 else 0.0})
        figures[arm] = rows
    final_uniform = figures["uniform"][-1]
    reached = next((row for row in figures["focused"] if row["top1"] >= final_uniform["top1"]), None)
    figures["loop_reaches_uniform_top1_with"] = reached["synthetic_images"] if reached else None
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    for arm in ("focused", "uniform"):
        for row in figures[arm]:
            print(f"{arm:<8} after round {row['round']}: {row['synthetic_images']:>4} synthetic  top-1 "
                  f"{row['top1']:.1%} ± {row['top1_sd']:.1%}  worst group {row['worst_group']:.1%} ± "
                  f"{row['worst_group_sd']:.1%}")
    print(f"the loop reaches uniform's final top-1 ({final_uniform['top1']:.1%}) with "
          + (f"{reached['synthetic_images']} images" if reached else "no round") + f"; wall per seed {figures['wall_s']}s")


if __name__ == "__main__":
    main()
