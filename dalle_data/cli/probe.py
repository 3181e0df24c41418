"""``dalle-data probe``: does the synthetic data help a classifier on real data?"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from dalle_data.cli.common import cli_errors, epilog
from dalle_data.errors import SpecError

EPILOG = epilog(
    [
        'dalle-data probe --train out --test real_val/',
        'dalle-data probe --train out --test real_val/ --real-train real_train/ --ablate filter --json',
        'dalle-data probe --train out --test real_val/ --scorer ViT-B-32/laion2b_s34b_b79k',
    ],
)


@cli_errors
def probe(
    train: Path = typer.Option(..., "--train", metavar="OUT", help="A dalle-data output to train the probe on."),
    test: Path = typer.Option(..., "--test", metavar="DIR", help="Real labeled images: an ImageFolder (<class>/<image>)."),
    real_train: Optional[Path] = typer.Option(None, "--real-train", metavar="DIR", help="Real training images (ImageFolder): adds a real baseline and a real+synthetic mix."),
    ablate: Optional[str] = typer.Option(None, "--ablate", metavar="WHAT", help="filter: also train on all generated images (kept + rejected; needs --keep-rejected)."),
    scorer: str = typer.Option("auto", "--scorer", envvar="DALLE_DATA_SCORER", metavar="SCORER", help="CLIP that embeds the images (auto: the one that matches the run's model)."),
    device: str = typer.Option("auto", "--device", envvar="DALLE_DATA_DEVICE", metavar="DEVICE", help="auto, cpu, cuda, cuda:N or mps."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train a linear probe on CLIP embeddings of a generated dataset; report accuracy on real images."""
    if ablate not in (None, "filter"):
        raise SpecError(f"--ablate {ablate}: the only ablation is 'filter'")
    from dalle_data.device import resolve_device
    from dalle_data.probe import run_probe
    from dalle_data.scoring import load_scorer, resolve_scorer_name

    from dalle_data.errors import OutputDirError
    from dalle_data.review.apply import recover
    from dalle_data.rundir import open_run

    try:
        recover(train)  # a cut-off review --apply is finished first (commands do this, the reader does not)
        run = open_run(train)
    except OutputDirError as err:
        raise SpecError(f"--train {train}: {err}") from None
    the_scorer = load_scorer(resolve_scorer_name(scorer, run.spec.model, run.spec.backend), device=resolve_device(device))
    report = run_probe(train, test, scorer=the_scorer, classes=list(run.spec.classes), real_train=real_train,
                       ablate_filter=ablate == "filter")
    _keep(run, report)
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    else:
        print_report(report)


def _keep(run: Any, report: dict[str, Any]) -> None:
    """The probe's results beside the run (``OUT/report/probe.json``), then the card and report refreshed."""
    import logging

    from dalle_data.report import refresh_report
    from dalle_data.rundir.directory import atomic_write_text
    from dalle_data.rundir.lock import RunLock, RunLocked

    try:
        with RunLock(run.out, "dalle-data probe (saving its results)"):
            run.layout.report_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(run.layout.probe_json, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            refresh_report(run.out, locked=True)
    except (RunLocked, OSError) as err:
        logging.getLogger(__name__).warning("the probe's results were not saved in %s: %s", run.out, err)


def print_report(report: dict[str, Any]) -> None:
    from rich.table import Table

    from dalle_data.cli.common import console

    table = Table(title=f"linear probe on {report['scorer']}: top-1 on {report['test_images']} real images",
                  title_justify="left")
    table.add_column("trained on")
    table.add_column("images", justify="right")
    table.add_column("top-1", justify="right")
    for name in report["classes"]:
        table.add_column(name, justify="right")
    for setting, row in report["results"].items():
        per_class = [f"{row['per_class'].get(c, float('nan')):.0%}" for c in report["classes"]]
        table.add_row(setting, str(row["train_images"]), f"{row['top1']:.1%}", *per_class)
    out = console()
    out.print(table)
    skipped = {k: v for k, v in report.get("skipped", {}).items() if v}
    if skipped:
        out.print("skipped unreadable files: " + ", ".join(f"{k} {v}" for k, v in skipped.items()), soft_wrap=True)
