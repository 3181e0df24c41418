"""``dalle-data demo-real``: held-out renders of the shapes world, the "real" test set for ``probe``."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Optional

import typer

from dalle_data.cli.common import cli_errors, epilog, split_list

EPILOG = epilog(
    [
        'dalle-data demo-real real-shapes',
        'dalle-data probe --train demo-out --test real-shapes',
        'dalle-data demo-real real-two --classes "red circle,blue star" --seed 3',
    ],
    'demo-out is a shapes-demo run, such as the one `make demo` writes.',
)


@cli_errors
def demo_real(
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write OUT/<class folder>/<i>.png into (new, empty, or an earlier demo-real output, which is replaced)."),
    per_class: int = typer.Option(40, "--per-class", metavar="N", help="Renders per class."),
    seed: int = typer.Option(2, "--seed", metavar="S", help="Seed of the held-out split (2: the test split the benchmarks use; 0, the training split, is refused)."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", metavar="NAMES", help="Shapes-world classes (repeatable or comma-separated); default all 8."),
) -> None:
    """Write held-out renders of the shapes world as a real labeled ImageFolder, to test probe on."""
    from dalle_data.demo.world import world_classes, write_held_out

    written = write_held_out(out, per_class=per_class, seed=seed, classes=world_classes(split_list(classes)))
    typer.echo(f"wrote {written.images} held-out renders ({len(written.classes)} classes x {per_class}, "
               f"seed {seed}) to {out}")
    typer.echo(f"next: dalle-data probe --train demo-out --test {shlex.quote(str(out))}"
               "   (demo-out: a shapes-demo run, as `make demo` writes)")
