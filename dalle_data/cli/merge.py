"""``dalle-data merge``: join the parts of a sharded run (``generate --shard i/n``) into one dataset."""

from __future__ import annotations

import json

import typer

from dalle_data.cli.common import cli_errors, epilog

EPILOG = epilog(
    [
        "dalle-data generate --config examples/ci/spec.yaml --out shards-out --shard 0/2",
        "dalle-data generate --config examples/ci/spec.yaml --out shards-out --shard 1/2",
        "dalle-data merge shards-out                      # one dataset, one label map",
        "dalle-data merge shards-out --json",
    ],
    "Parts write their images and shards into OUT side by side (part-prefixed names); merge writes the "
    "indexes only the whole run can (manifest, metadata, card, summary, _SUCCESS). It refuses while a part "
    "is unfinished or running and names the command that finishes each. Exit status as for generate: "
    "0 complete, 3 short (--allow-short: 0), 2 unfinished parts or another problem.",
)


@cli_errors
def merge(
    out: str = typer.Argument(..., metavar="OUT", help="Output directory (or fsspec URL) of a sharded run."),
    json_output: bool = typer.Option(False, "--json", help="Print the merged summary as JSON."),
    allow_short: bool = typer.Option(False, "--allow-short", help="Exit 0 even when a quota is not met."),
) -> None:
    """Join the finished parts of a sharded run into one dataset."""
    from dalle_data.merge import merge as join
    from dalle_data.summary import EXIT_SHORT

    from dalle_data.remote import check_storage_url, local_run

    check_storage_url(out, "OUT")
    folder, mirror = local_run(out)
    summary = join(folder)
    if mirror is not None:
        summary = {**summary, "out": out}
        from dalle_data.rundir import open_run

        mirror.push_run(open_run(folder).layout)
    else:
        from dalle_data.report import refresh_report

        refresh_report(folder)
    if json_output:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    else:
        from dalle_data.cli.report import print_summary

        print_summary(summary)
    if not summary["complete"] and not allow_short:
        typer.echo(f"error: the merged dataset is short (exit {EXIT_SHORT}); --allow-short accepts it", err=True)
        raise typer.Exit(EXIT_SHORT)
