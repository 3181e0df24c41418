"""``dalle-data probe``: does the synthetic data help a classifier on real data?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from dalle_data.cli.common import cli_errors, console, epilog, open_a_run
from dalle_data.errors import SpecError

EPILOG = epilog(
    [
        'dalle-data probe --train out --test real_val/',
        'dalle-data probe --train out --test real_val/ --real-train real_train/ --ablate filter --json',
        'dalle-data probe --train out --test real_val/ --scorer ViT-B-32/laion2b_s34b_b79k',
        'dalle-data probe --train demo-out --real-train real-few --test real-test --learner cnn',
        'dalle-data probe --train out --test real_val/ --groups auto',
    ],
    'Groups (for per-group and worst-group accuracy) come from the test folder\'s metadata.jsonl when it has one '
    '(dalle-data demo-real writes it), from --groups FILE (JSONL: file_name and group fields per line), or from '
    '--groups auto (the scorer tags each test image with the run\'s template-pack slot values). '
    'The report is kept in OUT/report/probe.json; its schema is in docs/probe.md.',
)


@cli_errors
def probe(
    train: Path = typer.Option(..., "--train", metavar="OUT", help="A dalle-data output to train the probe on."),
    test: Path = typer.Option(..., "--test", metavar="DIR", help="Real labeled images: an ImageFolder (<class>/<image>)."),
    real_train: Optional[Path] = typer.Option(None, "--real-train", metavar="DIR", help="Real training images (ImageFolder): adds a real baseline and a real+synthetic mix."),
    ablate: Optional[str] = typer.Option(None, "--ablate", metavar="WHAT", help="filter: also train on all generated images (kept + rejected; needs --keep-rejected)."),
    learner: str = typer.Option("linear", "--learner", metavar="LEARNER", help="linear: a linear probe on the scorer's embeddings (fast anywhere); cnn: a small CNN trained from scratch on the pixels."),
    seeds: int = typer.Option(1, "--seeds", metavar="K", help="Train every setting with K seeds; figures are mean ± sd."),
    sizes: Optional[str] = typer.Option(None, "--sizes", metavar="N,N,...", help="Also train on real + N synthetic images for each N (a class-balanced subset per seed): a data-scaling curve."),
    groups: Optional[str] = typer.Option(None, "--groups", metavar="FILE|auto", help="Test images' groups: a JSONL file (file_name or path, and group fields), or auto. Default: the test folder's metadata.jsonl."),
    image_size: Optional[int] = typer.Option(None, "--image-size", metavar="PX", help="cnn: the side images are resized to, 32 to 256 (default: the test images' median side, to a power of two, at most 128)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", metavar="N", help="cnn: passes over each training set (default 60; at least 300 updates)."),
    scorer: str = typer.Option("auto", "--scorer", envvar="DALLE_DATA_SCORER", metavar="SCORER", help="CLIP that embeds the images (auto: the one that matches the run's model)."),
    device: str = typer.Option("auto", "--device", envvar="DALLE_DATA_DEVICE", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    save_learner: Optional[Path] = typer.Option(None, "--save-learner", metavar="FILE.onnx", help="cnn: save the classifier trained on real + synthetic (synthetic alone without --real-train), seed 0, as ONNX: the learner `generate --select uncertain:FILE.onnx` asks (pip install dalle-data[learner])."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train a classifier on a generated dataset (and real images); report accuracy, per class and per group, on real images."""
    if ablate not in (None, "filter"):
        raise SpecError(f"--ablate {ablate}: the only ablation is 'filter'")
    from dalle_data.device import resolve_device
    from dalle_data.probe import check_options, pack_fields, parse_sizes, run_probe
    from dalle_data.scoring import load_scorer, resolve_scorer_name

    run = open_a_run(train, "--train")
    check_options(learner, seeds)
    if learner != "cnn" and (image_size is not None or epochs is not None):
        raise SpecError("--image-size and --epochs shape the CNN: add --learner cnn")
    if save_learner is not None:
        from dalle_data.probe import check_save_learner

        check_save_learner(learner, save_learner)
    if groups is not None and groups != "auto" and not Path(groups).is_file():
        raise SpecError(f"--groups {groups}: no such file (give a JSONL file, or auto)")
    the_sizes = parse_sizes(sizes)
    resolved = resolve_device(device)
    the_scorer = load_scorer(resolve_scorer_name(scorer, run.spec.model, run.spec.backend), device=resolved)
    fields = pack_fields(run.spec) if groups == "auto" else None
    predictions: dict[str, list[dict[str, Any]]] = {}
    say = None if json_output else (lambda line: console(stderr=True).print(line, soft_wrap=True))
    report = run_probe(train, test, scorer=the_scorer, classes=list(run.spec.classes), real_train=real_train,
                       ablate_filter=ablate == "filter", learner=learner, seeds=seeds, sizes=the_sizes,
                       groups=groups, tag_fields=fields, image_size=image_size, epochs=epochs, device=resolved,
                       progress=say, predictions=predictions, save_learner=save_learner)
    _keep(run, report, predictions)
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report)


def _keep(run: Any, report: dict[str, Any], predictions: dict[str, list[dict[str, Any]]]) -> None:
    """The probe's results beside the run (``OUT/report/probe.json``, its predictions in
    ``probe-predictions.jsonl``), then the card and report refreshed."""
    import logging
    import os

    from dalle_data.report import refresh_report
    from dalle_data.rundir.directory import atomic_write_text
    from dalle_data.rundir.lock import RunLock, RunLocked

    try:
        with RunLock(run.out, "dalle-data probe (saving its results)"):
            run.layout.report_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run.layout.probe_json, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            atomic_write_text(run.layout.probe_predictions, "".join(
                json.dumps({"setting": setting, **line, "path": os.path.abspath(line["path"])}, ensure_ascii=False)
                + "\n" for setting, lines in predictions.items() for line in lines))
            refresh_report(run.out, locked=True)
    except (RunLocked, OSError) as err:
        logging.getLogger(__name__).warning("the probe's results were not saved in %s: %s", run.out, err)


def print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    from dalle_data.cli.common import console

    seeds = report.get("seeds", 1)
    grouped = bool(report.get("group_fields"))
    title = (f"{report.get('learner_detail', 'linear probe on ' + report['scorer'])}: top-1 on "
             f"{report['test_images']} real images" + (f", mean ± sd over {seeds} seeds" if seeds > 1 else ""))
    table = Table(title=title, title_justify="left")
    table.add_column("trained on")
    table.add_column("images", justify="right")
    table.add_column("top-1", justify="right")
    if grouped:
        table.add_column("worst group", justify="right")
    for name in report["classes"]:
        table.add_column(name, justify="right")
    for setting, row in report["results"].items():
        per_class = [_pct(row["per_class"].get(c)) for c in report["classes"]]
        cells = [setting, str(row["train_images"]), _pct(row["top1"], row.get("top1_sd"))]
        if grouped:
            cells.append(_pct(row.get("worst_group"), row.get("worst_group_sd")))
        table.add_row(*cells, *per_class)
    out = console()
    out.print(table)
    if grouped:
        fields = ", ".join(report["group_fields"])
        out.print(f"groups: {fields} (from {report.get('groups_source')}); the lowest group per setting"
                  + (" (by its mean over the seeds)" if seeds > 1 else "") + ":", soft_wrap=True)
        for setting, row in report["results"].items():
            worst = row.get("worst")
            if worst:
                out.print(f"  {setting}: {worst['group']} ({worst['field']}) {worst['accuracy']:.0%}", soft_wrap=True)
    for slot, agree in report.get("tagging_agreement", {}).items():
        out.print(f"--groups auto: {slot} agrees with the test set's {agree['field']} on {agree['agreement']:.0%} "
                  f"of {agree['images']} images", soft_wrap=True)
    best = [s for s in report["results"] if s != "zero-shot"]
    if best:
        pairs = report["results"][best[-1]].get("confused_pairs", [])
        if pairs:
            out.print(f"most confused ({best[-1]}): " + ", ".join(
                f"{p['true']} → {p['predicted']} {p['count']}" for p in pairs), soft_wrap=True)
    saved = report.get("saved_learner")
    if saved:
        out.print(f"learner saved: {saved['path']} (trained on {saved['setting']}, seed {saved['seed']}); next: "
                  f"dalle-data generate ... --select uncertain:{saved['path']}", soft_wrap=True, markup=False)
    skipped = {k: v for k, v in report.get("skipped", {}).items() if v}
    if skipped:
        out.print("skipped unreadable files: " + ", ".join(f"{k} {v}" for k, v in skipped.items()), soft_wrap=True)


def _pct(value: float | None, sd: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" + (f" ± {sd:.1%}" if sd else "")
