"""``dalle-data focus``: from a classifier's mistakes on labeled validation images to a focus for ``generate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from dalle_data.cli.common import cli_errors, console, epilog, open_a_run
from dalle_data.errors import SpecError

EPILOG = epilog(
    [
        'dalle-data focus demo-out --predictions preds.jsonl',
        'dalle-data focus demo-out --from-probe demo-out --setting real',
        'dalle-data focus demo-out --predictions preds.csv --groups val-groups.jsonl -o focus.yaml',
        'dalle-data generate --config demo-out/spec.yaml --focus demo-out/focus.yaml --out demo-focused',
    ],
    'A predictions file has one line per labeled validation image: path (relative to the file), label, pred, and '
    'optionally probs ({class: p}); JSONL, or CSV with those columns (probs as JSON). Groups (the template slot '
    'values an image shows, such as its environment) come from --groups FILE (JSONL: file_name relative to the file, or path, and '
    'slot fields), or are tagged by the run\'s scorer (--groups auto, the default); --groups none chases classes '
    'and pairs only. The focus file is documented in docs/focus.md; edit it freely before generate reads it.',
)


@cli_errors
def focus(
    out: Path = typer.Argument(..., metavar="OUT", help="The run the focus is for: its classes, template pack and scorer."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", metavar="FILE", help="Your classifier's predictions on labeled validation images (JSONL or CSV)."),
    from_probe: Optional[Path] = typer.Option(None, "--from-probe", metavar="OUT", help="Use the predictions `dalle-data probe` saved in OUT (its own learner) instead."),
    setting: Optional[str] = typer.Option(None, "--setting", metavar="NAME", help="--from-probe: which trained setting's predictions (default: real + synthetic, else synthetic)."),
    groups: str = typer.Option("auto", "--groups", metavar="FILE|auto|none", help="Each validation image's slot values: a JSONL file, auto (tagged by the scorer), or none."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", help="Where to write the focus. [default: OUT/focus.yaml]"),
    scorer: str = typer.Option("auto", "--scorer", envvar="DALLE_DATA_SCORER", metavar="SCORER", help="CLIP that tags the images for --groups auto (auto: the run's)."),
    device: str = typer.Option("auto", "--device", envvar="DALLE_DATA_DEVICE", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    json_output: bool = typer.Option(False, "--json", help="Print what was found, and where the focus went, as JSON."),
) -> None:
    """Find where a classifier's errors concentrate (classes, confused pairs, groups) and write a focus for generate."""
    from dalle_data.probe.focus import find_focus, focus_inputs, read_predictions

    if (predictions is None) == (from_probe is None):
        raise SpecError("give --predictions FILE (your classifier's) or --from-probe OUT (probe's learner), one of them")
    if setting is not None and from_probe is None:
        raise SpecError("--setting picks among the settings --from-probe OUT saved; add --from-probe")
    if groups not in ("auto", "none") and not Path(groups).is_file():
        raise SpecError(f"--groups {groups}: no such file (give a JSONL file, auto or none)")
    run = open_a_run(out)
    classes = list(run.spec.classes)
    if predictions is not None:
        source, preds = predictions, read_predictions(predictions, classes, images=groups == "auto")
    else:
        assert from_probe is not None
        source, text = _probe_predictions(from_probe, setting)
        preds = read_predictions(source, classes, text, images=groups == "auto")
    pack, slots, contrast_mode = focus_inputs(run.spec)
    tags = _groups(groups, preds, source, run, slots, scorer, device)
    target = output if output is not None else run.layout.focus
    what = f"--from-probe {from_probe} ({setting or 'default setting'})" if from_probe else f"--predictions {predictions}"
    made_from = f"{what}: {len(preds)} validation images, {sum(p.pred != p.label for p in preds)} wrong"
    plan, found = find_focus(preds, tags, classes, pack, slots, contrast_mode, made_from=made_from,
                             run=run.spec_hash)
    _write(target, plan, run, out)
    if json_output:
        typer.echo(json.dumps({"focus": str(target), "groups_from": groups if groups in ("auto", "none") else "file",
                               **found}, indent=2, ensure_ascii=False))
        return
    _print(found, len(preds), target, out)


def _probe_predictions(out: Path, setting: str | None) -> tuple[Path, str]:
    """OUT's saved probe predictions and the lines of one setting of them."""
    from dalle_data.rundir.layout import Layout

    saved = Layout(out).probe_predictions
    if not saved.is_file():
        raise SpecError(f"--from-probe {out}: no saved probe predictions; run `dalle-data probe --train {out} "
                        "--test VAL_DIR` first")
    try:
        rows = [json.loads(line) if line.strip() else None for line in saved.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SpecError(f"--from-probe {out}: cannot read {saved} ({err}); run probe again") from None
    if not all(isinstance(r, dict) or r is None for r in rows):
        raise SpecError(f"--from-probe {out}: {saved} is not probe's (a line is not a JSON object); run probe again")
    names = list(dict.fromkeys(r.get("setting") for r in rows if r is not None))
    chosen = setting or next((s for s in ("real + synthetic", "synthetic") if s in names), names[0] if names else "")
    if chosen not in names:
        raise SpecError(f"--setting {chosen}: {out}'s probe saved {', '.join(map(str, names))}")
    # The other settings' lines stay as blank lines, so that an error names the saved file's own line.
    return saved, "".join((json.dumps(r) if r is not None and r.get("setting") == chosen else "") + "\n" for r in rows)


def _groups(groups: str, preds: list[Any], source: Path, run: Any, slots: dict[str, list[str]],
            scorer: str, device: str) -> list[dict[str, str]] | None:
    """Each prediction's slot values: from a file, tagged by the scorer, or none."""
    if groups == "none" or not slots:
        return None
    from dalle_data.probe.sets import LabeledImages, load_readable, read_groups

    images = LabeledImages([p.path for p in preds], [p.label for p in preds], [None] * len(preds))
    if groups != "auto":
        return read_groups(Path(groups), images, Path(groups).absolute().parent, strict=False)
    from dalle_data.device import resolve_device
    from dalle_data.probe.focus import tag_slots
    from dalle_data.scoring import load_scorer, resolve_scorer_name

    loaded = load_readable(images, f"--predictions {source}")
    the_scorer = load_scorer(resolve_scorer_name(scorer, run.spec.model, run.spec.backend), device=resolve_device(device))
    tagged = dict(zip(loaded.paths, tag_slots(the_scorer, loaded, slots)))
    return [tagged.get(p.path, {}) for p in preds]


def _write(target: Path, plan: dict[str, Any], run: Any, out: Path) -> None:
    """The focus as commented YAML, written whole (under the run's lock when it goes into OUT)."""
    import contextlib

    import yaml

    from dalle_data.rundir.directory import atomic_write_text
    from dalle_data.rundir.lock import RunLock

    header = ("# dalle-data focus: where the next images go (docs/focus.md). Edit it freely, then:\n"
              f"#   dalle-data generate --config {out}/spec.yaml --focus {target} --out NEW_OUT\n"
              "# share: a class's part of the images (1 = as many as the others); weights: how often a slot value is\n"
              "# used (a value not named weighs 1, 0 never); contrasts: prompts for a confused pair, with their share.\n")
    text = header + yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=120)
    inside = run.layout.out.resolve() in target.resolve().parents
    lock = RunLock(run.out, "dalle-data focus (writing its focus)") if inside else contextlib.nullcontext()
    try:
        with lock:
            atomic_write_text(target, text)
    except OSError as err:
        raise SpecError(f"-o {target}: cannot write it ({err.strerror or err})") from None


SHOWN = 8  # groups and pairs printed (the heaviest); the file has them all


def _print(found: dict[str, Any], n: int, target: Path, out: Path) -> None:
    from rich.table import Table

    wrong = sum(r["wrong"] for r in found["classes"].values())
    table = Table(title=f"where the errors are: {wrong} of {n} validation images wrong", title_justify="left")
    for col in ("class", "images", "wrong", "mostly taken for", "share asked"):
        table.add_column(col, justify="left" if col in ("class", "mostly taken for") else "right")
    for cls, r in found["classes"].items():
        most = f"{r['mostly_as'][0]} ({r['mostly_as'][1]})" if r["mostly_as"] else "-"
        table.add_row(cls, str(r["images"]), str(r["wrong"]), most, f"{r['share']:g}")
    out_console = console()
    out_console.print(table)
    chased = sorted(found["groups"], key=lambda g: (-g["weight"], g["class"], g["value"]))
    if chased:
        out_console.print("groups (weights: more images where the errors are):", soft_wrap=True)
        for g in chased[:SHOWN]:
            out_console.print(f"  {g['class']} {g['value']}: {g['wrong']} of {g['images']} wrong -> weight "
                              f"{g['weight']:g}", soft_wrap=True)
        if len(chased) > SHOWN:
            out_console.print(f"  and {len(chased) - SHOWN} more in the file", soft_wrap=True)
    pairs = sorted(found["pairs"], key=lambda p: (-p["errors"], p["class"], p["mistaken_for"]))
    if pairs:
        out_console.print("confused pairs (contrast prompts: the class where it was taken for the other):", soft_wrap=True)
    for p in pairs[:SHOWN]:
        where = "; ".join(f"{k}: {', '.join(v)}" for k, v in p["where"].items())
        out_console.print(f"  {p['class']} taken for {p['mistaken_for']} {p['errors']} times"
                          + (f" ({where})" if where else "")
                          + f" -> {p['prompts']} prompts, {p['share']:.0%} of its images", soft_wrap=True)
    if len(pairs) > SHOWN:
        out_console.print(f"  and {len(pairs) - SHOWN} more in the file", soft_wrap=True)
    out_console.print(f"Focus:       {target}", soft_wrap=True)
    out_console.print(f"Next:        dalle-data generate --config {out}/spec.yaml --focus {target} --out NEW_OUT",
                      soft_wrap=True)
