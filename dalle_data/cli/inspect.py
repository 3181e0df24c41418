"""``dalle-data report`` (the card, the visual report, CI gates) and ``dalle-data dedup``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from dalle_data.analysis.duplicates import DEFAULT_THRESHOLD
from dalle_data.cli.common import cli_errors, epilog

REPORT_EPILOG = epilog(
    [
        "dalle-data report out                          # writes out/README.md and out/report/index.html",
        "dalle-data report out --json                   # the figures, for scripts",
        "dalle-data report out --fail-if 'acceptance<0.2' --fail-if 'images<10'   # CI: exit 5 naming a failed gate",
    ],
    "generate writes the report when a run ends; review --apply and dedup refresh it. Gates: short, warnings, "
    "acceptance<X, vendi<X, diversity<X, duplicates>X (a share of the images), images<N. Exit status: 0, or 5 "
    "when a gate fails (one line on stderr says which and why).",
)

DEDUP_EPILOG = epilog(
    [
        "dalle-data dedup out --dry-run                 # how many images would be set aside",
        "dalle-data dedup out                           # keep one image per near-duplicate group",
        "dalle-data dedup out --undo                    # bring every set-aside image back",
    ],
    f"Near-duplicates: images of one label with the same bytes, or whose scorer image embeddings have a cosine "
    f"of at least --threshold (default {DEFAULT_THRESHOLD}; lower it to catch looser look-alikes). The image kept "
    "is the one the scorer is surest of. Set-aside images move to OUT/rejected/ (reason duplicate), never deleted.",
)


@cli_errors
def report(
    out: Path = typer.Argument(..., metavar="OUT", help="Output directory of a finished run."),
    json_output: bool = typer.Option(False, "--json", help="Print the figures as JSON (also written to OUT/report/report.json)."),
    fail_if: list[str] = typer.Option([], "--fail-if", metavar="GATE", help="Exit 5 when GATE holds (repeatable): short, warnings, acceptance<X, vendi<X, diversity<X, duplicates>X, images<N, lookalike."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, "--threshold", min=0.01, max=1.0, help="Cosine at or above which two images of a label are near-duplicates."),
) -> None:
    """Write the dataset card and the visual report of a run; gate CI on its figures."""
    from dalle_data.report import build_report
    from dalle_data.report.gates import failed_gate, parse_gates
    from dalle_data.summary import EXIT_GATE

    gates = parse_gates(fail_if)  # a bad gate fails before any work
    figures = build_report(out, threshold=threshold)
    layout_html = out / "report" / "index.html"
    if json_output:
        typer.echo(json.dumps(figures, indent=2, ensure_ascii=False))
    else:
        classes = figures["classes"]
        typer.echo(f"{figures['images']} images in {len(classes)} labels; "
                   f"{len(figures['duplicates']['groups'])} near-duplicate group(s) "
                   f"({figures['duplicates']['set_aside']} image(s) to set aside); {len(figures['warnings'])} warning(s)")
        for row in figures["diversity"]:
            typer.echo(f"  {row['label']}: {row['images']} images, Vendi {row['vendi']:.1f}, "
                       f"mean distance {row['mean_distance']:.3f}, {row['prompts']} prompts")
        for warning in figures["warnings"]:
            typer.echo(f"warning: {warning}", err=True)
        typer.echo(f"Report: {layout_html}")
        typer.echo(f"Card:   {out / 'README.md'}   (datasets.load_dataset('{out}') reads it)")
    why = failed_gate(figures, gates)
    if why:
        typer.echo(f"error: {why}", err=True)
        raise typer.Exit(EXIT_GATE)


@cli_errors
def dedup(
    out: Path = typer.Argument(..., metavar="OUT", help="Output directory of a finished run."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, "--threshold", min=0.01, max=1.0, help="Cosine at or above which two images of a label are near-duplicates."),
    undo: bool = typer.Option(False, "--undo", help="Bring back every image dedup set aside."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would change, change nothing."),
    json_output: bool = typer.Option(False, "--json", help="Print the outcome as JSON."),
) -> None:
    """Keep one image of each group of near-duplicates; set the others aside (reversible)."""
    from dalle_data.dedup import dedup as run_dedup

    result = run_dedup(out, threshold=threshold, undo=undo, dry_run=dry_run)
    if json_output:
        typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
        return
    verb = "Would" if dry_run else "Did"
    if undo:
        typer.echo(f"{verb} bring back {result['restored']} image(s) set aside by dedup in {out}.")
    else:
        typer.echo(f"{result['groups']} near-duplicate group(s) at cosine ≥ {threshold}: {result['set_aside']} "
                   f"image(s) set aside ({result['changed']} change(s) {'to make' if dry_run else 'made'}).")
        if result["without_embeddings"]:
            typer.echo(f"warning: {result['without_embeddings']} image(s) have no embedding; only exact copies "
                       "of them were found", err=True)
    typer.echo("Kept now: " + ", ".join(f"{label} {n}" for label, n in result["kept"].items()))
    if not dry_run and not result["complete"]:
        typer.echo(f"warning: {out} is now short of a quota (see summary.json); `dalle-data dedup {out} --undo` "
                   "brings the images back", err=True)
