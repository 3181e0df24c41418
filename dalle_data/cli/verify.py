"""``dalle-data verify``: check a finished run against its records; ``--repair`` mends it."""

from __future__ import annotations


import typer

from dalle_data.cli.common import cli_errors, epilog

EPILOG = epilog(
    [
        "dalle-data verify out                 # every image decodes, every copy has the recorded hash",
        "dalle-data verify out --repair        # rebuild from the other format; regenerate what is lost",
        "dalle-data verify out --json          # for CI: {ok, checked, problems, repaired}",
    ],
    "Exit status: 0 when the run holds up (after --repair: when it was mended), 4 when problems remain. "
    "Repair takes the run's lock; images lost from every format are regenerated with the run's own "
    "model, seeds and batches (the same bytes on the same hardware).",
)


@cli_errors
def verify(
    out: str = typer.Argument(..., metavar="OUT", help="Output directory (or fsspec URL) of a finished run."),
    repair: bool = typer.Option(False, "--repair", help="Rewrite what can be rebuilt, regenerate what cannot."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a finished run against its records (every row, image, hash, index); repair it."""
    from dalle_data.summary import EXIT_DAMAGED
    from dalle_data.job import regenerate_shards
    from dalle_data.verify import as_json_text, describe
    from dalle_data.verify import repair as mend
    from dalle_data.verify import verify as check

    from dalle_data.errors import SpecError
    from dalle_data.remote import check_storage_url, is_url, local_run

    check_storage_url(out, "OUT")
    if is_url(out) and repair:
        raise SpecError(f"--repair works on a local run: copy {out} here, repair it, and upload it again")
    folder, _ = local_run(out, pull_all=True)
    report = mend(folder, regenerate_shards) if repair else check(folder)
    report.out = out  # type: ignore[assignment]  # name the run as the user did
    if json_output:
        typer.echo(as_json_text(report))
    else:
        for line in describe(report):
            typer.echo(line)
        if not report.ok and not repair:
            typer.echo(f"Repair it: dalle-data verify {out} --repair", err=True)
    if not report.ok:
        raise typer.Exit(EXIT_DAMAGED)
