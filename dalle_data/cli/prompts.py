"""``dalle-data prompts``: expand classes into prompts, as editable JSONL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from dalle_data.cli.common import cli_errors, split_list
from dalle_data.errors import SpecError

EPILOG = """\
Examples:

  dalle-data prompts --classes dalmatian -n 20

  dalle-data prompts --classes cat,dog --mode style --mode adversarial -n 50 -o prompts.jsonl

  dalle-data prompts --classes dalmatian --templates my_pack.yaml -n 10
"""


@cli_errors
def prompts(
    classes: Optional[list[str]] = typer.Option(None, "--classes", "-c", metavar="NAME", help="Class name; repeat or comma-separate."),
    mode: Optional[list[str]] = typer.Option(None, "--mode", metavar="MODE", help="vanilla | style | adversarial; repeatable. [default: vanilla]"),
    n: int = typer.Option(10, "-n", "--num", help="Prompts per class and mode.", min=1),
    templates: Optional[str] = typer.Option(None, "--templates", metavar="PACK.yaml", help="YAML template pack instead of the built-in one."),
    seed: int = typer.Option(0, "--seed", help="Expansion seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", help="Write JSONL here instead of stdout."),
) -> None:
    """Print the expanded prompts as JSONL (edit them, then `generate --prompts FILE`)."""
    from dalle_data.config import parse_modes
    from dalle_data.naming import clean_class_names
    from dalle_data.prompts import expand_prompts, load_pack, write_prompts_jsonl

    names = clean_class_names(split_list(classes))
    try:
        modes = list(parse_modes(split_list(mode) or ["vanilla"]))
    except ValueError as err:
        raise SpecError(str(err)) from None
    items = expand_prompts(load_pack(templates), names, modes, n, seed)
    if out is None:
        write_prompts_jsonl(items, sys.stdout)
        return
    tmp = out.with_name(f".tmp-{out.name}")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            write_prompts_jsonl(items, fh)
        tmp.replace(out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise SpecError(f"cannot write {out}: {err.strerror or err}") from None
    typer.echo(f"wrote {len(items)} prompts to {out}", err=True)
