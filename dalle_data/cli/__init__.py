"""The ``dalle-data`` command line: one module per command, thin (parse, call, print).

Heavy libraries (torch, diffusers, open_clip) are imported only inside
commands that need them, so ``dalle-data --help`` answers at once. That is
also why each command imports its work (``dalle_data.job``, ``verify``,
``review`` ...) inside the command function: the one reason for every
function-level import in this package (ARCHITECTURE.md).
"""

from __future__ import annotations

import typer

from dalle_data import __version__
from dalle_data.advice import review_command
from dalle_data.cli import backends as _backends
from dalle_data.cli import demo as _demo
from dalle_data.cli import focus as _focus
from dalle_data.cli import generate as _generate
from dalle_data.cli import inspect as _inspect
from dalle_data.cli import loop as _loop
from dalle_data.cli import merge as _merge
from dalle_data.cli import probe as _probe
from dalle_data.cli import prompts as _prompts
from dalle_data.cli import review as _review
from dalle_data.cli import verify as _verify

app = typer.Typer(
    name="dalle-data",
    help=(
        "Turn class names into labeled, CLIP-filtered synthetic image datasets.\n\n"
        "Examples:\n\n\b\n"
        "  dalle-data generate --classes dalmatian --per-class 500\n"
        "  dalle-data generate --classes \"red circle,blue star\" --per-class 8 --model shapes-demo --out shapes-out\n"
        f"  {review_command('shapes-out', 16)}\n"
        "  dalle-data verify shapes-out\n"
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


app.command("generate", epilog=_generate.EPILOG, short_help="Make a labeled, CLIP-filtered image dataset.")(_generate.generate)
app.command("prompts", epilog=_prompts.EPILOG, short_help="Expand classes into prompts (JSONL) to read and edit.")(_prompts.prompts)
app.command("probe", epilog=_probe.EPILOG, short_help="Does the data help? A linear probe on real images.")(_probe.probe)
app.command("focus", epilog=_focus.EPILOG, short_help="Where a classifier fails: a focus for the next images.")(_focus.focus)
app.command("loop", epilog=_loop.EPILOG, short_help="Rounds of train, focus, generate: images where it fails.")(_loop.loop)
app.command("review", epilog=_review.EPILOG, short_help="Look at the weakest images; apply the decisions.")(_review.review)
app.command("report", epilog=_inspect.REPORT_EPILOG, short_help="Dataset card and visual report; CI gates.")(_inspect.report)
app.command("dedup", epilog=_inspect.DEDUP_EPILOG, short_help="Set near-duplicate images aside (reversible).")(_inspect.dedup)
app.command("merge", epilog=_merge.EPILOG, short_help="Join the parts of a sharded run into one dataset.")(_merge.merge)
app.command("verify", epilog=_verify.EPILOG, short_help="Check a finished run against its records; repair it.")(_verify.verify)
app.command("backends", epilog=_backends.EPILOG, short_help="The generator backends: modes, options, prices.")(_backends.backends)
app.command("demo-real", epilog=_demo.EPILOG, short_help="Render a real test set of the shapes world (for probe).")(_demo.demo_real)


def main() -> None:
    try:
        app()
    except BrokenPipeError:
        from dalle_data.cli.common import quiet_broken_pipe

        quiet_broken_pipe()
        raise SystemExit(0) from None
