"""``dalle-data loop``: train, evaluate, focus, generate, retrain, for a budget of images in rounds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from dalle_data.cli.common import cli_errors, console, epilog, split_list

EPILOG = epilog(
    [
        'dalle-data demo-real loop-few --set biased-train --per-class 8 --classes "red circle,blue star"',
        'dalle-data demo-real loop-val --set balanced-test --per-class 8 --seed 4 --classes "red circle,blue star"',
        'dalle-data demo-real loop-test --set balanced-test --per-class 40 --classes "red circle,blue star"',
        'dalle-data loop --real-train loop-few --val loop-val --test loop-test --model shapes-demo '
        '--classes "red circle,blue star" --budget 16 --rounds 2 --out loop-out --compare uniform',
    ],
    'Each round generates its share of --budget by a focus made from the learner\'s errors on --val (never on '
    '--test, which is only measured), then trains the learner again on the real images and every round so far. '
    'Killed anywhere, the same command resumes. OUT/loop.json has every figure, OUT/report.html plots them; '
    'each round is a dalle-data run in OUT/focused/round-R (with --compare uniform, also OUT/uniform/round-R).',
)


@cli_errors
def loop(
    real_train: Path = typer.Option(..., "--real-train", metavar="DIR", help="Real labeled training images (ImageFolder: <class>/<image>)."),
    val: Path = typer.Option(..., "--val", metavar="DIR", help="Real labeled validation images: the focus is read from the learner's errors here."),
    test: Path = typer.Option(..., "--test", metavar="DIR", help="Real labeled test images: measured after every round (groups from its metadata.jsonl), never used for a focus."),
    budget: int = typer.Option(..., "--budget", metavar="N", help="Synthetic images to make in all (kept images; dealt over the classes and rounds)."),
    rounds: int = typer.Option(3, "--rounds", metavar="K", help="Rounds of budget/K images each."),
    out: Path = typer.Option(..., "--out", metavar="OUT", help="The loop's folder: its state, each round's run, the report."),
    config: Optional[Path] = typer.Option(None, "--config", metavar="SPEC.yaml", help="A generate spec every round starts from (model, classes, modes, filter...)."),
    model: Optional[str] = typer.Option(None, "--model", metavar="MODEL", help="The generator (as generate's --model)."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", metavar="NAMES", help="The classes (repeatable or comma-separated); the real folders are matched to them."),
    mode: Optional[list[str]] = typer.Option(None, "--mode", metavar="MODES", help="Generation modes, as generate's --mode (default vanilla)."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="S", help="Seed of round 1's images (round R uses S + R - 1) and of the learner."),
    compare: Optional[str] = typer.Option(None, "--compare", metavar="uniform", help="Also make the same rounds without a focus, and measure them: the curve to beat."),
    learner: str = typer.Option("cnn", "--learner", metavar="LEARNER", help="cnn: a small CNN from scratch on the pixels; linear: a linear probe on the scorer's embeddings."),
    epochs: Optional[int] = typer.Option(None, "--epochs", metavar="N", help="cnn: passes over each training set (default 60; at least 300 updates)."),
    image_size: Optional[int] = typer.Option(None, "--image-size", metavar="PX", help="cnn: the side images are resized to (default: from the test images)."),
    select: Optional[str] = typer.Option(None, "--select", metavar="uncertain", help="Each focused round over-generates and keeps the candidates the learner of the step before is least sure of (its CNN saved as OUT/focused/learner-R.onnx; pip install dalle-data[learner])."),
    candidates: Optional[int] = typer.Option(None, "--candidates", metavar="K", help="--select: candidates that pass the filter per kept image. [default: 4]"),
    groups: str = typer.Option("auto", "--groups", metavar="FILE|auto|none", help="The validation images' slot values (their environment, say): auto (tagged by the scorer), a JSONL file, or none."),
    scorer: str = typer.Option("auto", "--scorer", envvar="DALLE_DATA_SCORER", metavar="SCORER", help="CLIP that filters the rounds' images, tags --groups auto and embeds for the linear learner (auto: the model's)."),
    device: str = typer.Option("auto", "--device", envvar="DALLE_DATA_DEVICE", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the final table."),
    json_output: bool = typer.Option(False, "--json", help="Print the loop's state (every figure) as JSON."),
) -> None:
    """Spend a budget of images where a classifier fails: rounds of train, evaluate, focus, generate."""
    import logging
    import os

    from dalle_data.cli.generate import collect_values
    from dalle_data.device import resolve_device
    from dalle_data.errors import SpecError
    from dalle_data.loop import LoopSettings, run_loop

    values = collect_values(config, {"model": model, "classes": split_list(classes) or None,
                                     "modes": split_list(mode) or None, "seed": seed,
                                     "scorer": None if scorer == "auto" else scorer,
                                     "device": None if device == "auto" else device})
    if not values.get("classes"):
        raise SpecError("no classes given; pass --classes NAME (repeatable or comma-separated) or --config SPEC.yaml")
    ignored = [key for key in ("out", "per_class", "focus", "select", "learner")
               if values.pop(key, None) is not None]
    for key in ("candidates", "learner_labels", "learner_size", "learner_mean", "learner_std"):
        values.pop(key, None)  # the loop's --select and its own learner decide these
    if candidates is not None and select is None:
        raise SpecError("--candidates shapes --select: add --select uncertain")
    if ignored:  # a run's own spec.yaml has them: each round sets its own
        logging.getLogger("dalle_data.loop").warning("--config %s: %s ignored (the loop sets each round's)", config,
                                                     ", ".join(ignored))
    try:
        learner_seed = int(values.get("seed") or 0)
    except (TypeError, ValueError):
        raise SpecError(f"--config {config}: seed {values.get('seed')!r} is not a whole number") from None
    if groups not in ("auto", "none") and not Path(groups).is_file():
        raise SpecError(f"--groups {groups}: no such file (give a JSONL file, auto or none)")
    settings = LoopSettings(
        real_train=os.path.abspath(real_train), val=os.path.abspath(val), test=os.path.abspath(test), budget=budget,
        rounds=rounds, spec=values, learner=learner, epochs=epochs, image_size=image_size, learner_seed=learner_seed,
        groups=groups if groups in ("auto", "none") else os.path.abspath(groups), scorer=scorer, select=select,
        candidates=4 if candidates is None else candidates)
    say = None if quiet or json_output else (lambda line: console(stderr=True).print(line, soft_wrap=True))
    state = run_loop(out, settings, compare=compare, scorer_name=scorer, device=resolve_device(device),
                     quiet=quiet or json_output, progress=say)
    if json_output:
        typer.echo(json.dumps(state, indent=2, ensure_ascii=False))
        return
    print_loop(state, out)


def print_loop(state: dict, out: Path) -> None:
    from rich.table import Table

    table = Table(title="the learner after each round (on --test)", title_justify="left")
    for col in ("arm", "round", "synthetic", "top-1", "worst group", "lowest group"):
        table.add_column(col, justify="left" if col in ("arm", "lowest group") else "right")
    for arm, steps in state["arms"].items():
        for s in steps:
            worst = s.get("worst") or {}
            table.add_row(arm, str(s["round"]), str(s["synthetic_images"]), f"{s['top1']:.1%}",
                          "-" if s.get("worst_group") is None else f"{s['worst_group']:.1%}", worst.get("group", "-"))
    shown = console()
    shown.print(table)
    shown.print(f"Loop:        {out}/loop.json (every figure), {out}/report.html (the plot)", soft_wrap=True)
    shown.print(f"Images:      {out}/focused/round-*/ (one dalle-data run per round)", soft_wrap=True)
