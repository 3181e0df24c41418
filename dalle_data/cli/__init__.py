"""The ``dalle-data`` command line: one module per command, thin (parse, call, print).

Heavy libraries (torch, diffusers, open_clip) are imported only inside
commands that need them, so ``dalle-data --help`` answers at once.
"""

from __future__ import annotations

import typer

from dalle_data import __version__
from dalle_data.cli import generate as _generate
from dalle_data.cli import probe as _probe
from dalle_data.cli import prompts as _prompts
from dalle_data.cli import review as _review

app = typer.Typer(
    name="dalle-data",
    help=(
        "Turn class names into labeled, CLIP-filtered synthetic image datasets.\n\n"
        "Examples:\n\n"
        "  dalle-data generate --classes dalmatian --per-class 500\n\n"
        "  dalle-data generate --classes \"red circle,blue star\" --model shapes-demo --out demo-out\n\n"
        "  dalle-data prompts --classes dalmatian --mode style -n 20"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dalle-data {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Turn class names into labeled, CLIP-filtered synthetic image datasets."""


app.command("generate", epilog=_generate.EPILOG)(_generate.generate)
app.command("prompts", epilog=_prompts.EPILOG)(_prompts.prompts)
app.command("probe", epilog=_probe.EPILOG)(_probe.probe)
app.command("review", epilog=_review.EPILOG)(_review.review)


def main() -> None:
    app()
