"""``dalle-data demo-real``: renders of the shapes world as "real" labeled images for ``probe``."""

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
        'dalle-data demo-real real-test --set balanced-test --per-class 40',
        'dalle-data demo-real real-few --set biased-train --per-class 8 --bias 1.0',
        'dalle-data probe --train demo-out --real-train real-few --test real-test --learner cnn --seeds 3',
        'dalle-data demo-real real-two --classes "red circle,blue star" --seed 3',
    ],
    'demo-out is a shapes-demo run, such as the one `make demo` writes. Every set writes OUT/metadata.jsonl: '
    'each image\'s class, background and style, the groups probe measures worst-group accuracy over.',
)


@cli_errors
def demo_real(
    out: Path = typer.Argument(..., metavar="OUT", help="Folder to write OUT/<class folder>/<i>.png into (new, empty, or an earlier demo-real output, which is replaced)."),
    per_class: int = typer.Option(40, "--per-class", metavar="N", help="Renders per class."),
    kind: str = typer.Option("held-out", "--set", metavar="SET", help="held-out: drawn as the world draws; balanced-test: every class in every background and style equally; biased-train: a few-shot training set, --bias of each class on a context of its own."),
    seed: Optional[int] = typer.Option(None, "--seed", metavar="S", help="Seed of the renders (default 2 for the test sets, 3 for biased-train; 0, the model's training split, is refused)."),
    classes: Optional[list[str]] = typer.Option(None, "--classes", metavar="NAMES", help="Shapes-world classes (repeatable or comma-separated); default all 8."),
    bias: float = typer.Option(1.0, "--bias", metavar="FRACTION", help="biased-train: the fraction of each class's images in its own context (the rest spread over the others)."),
    context: str = typer.Option("background", "--context", metavar="WHAT", help="biased-train: what a class's images share, background or style (filled or line drawing)."),
    context_map: Optional[str] = typer.Option(None, "--context-map", metavar="MAP", help="biased-train: each class's context, e.g. 'red circle=night,blue star=plain' (default: a deal seeded by --seed)."),
) -> None:
    """Write renders of the shapes world as a real labeled ImageFolder (with groups), to test probe on."""
    from dalle_data.demo.world import parse_context_map, world_classes, write_held_out
    from dalle_data.errors import SpecError

    chosen = world_classes(split_list(classes))
    if kind != "biased-train" and (context_map is not None or bias != 1.0 or context != "background"):
        raise SpecError("--bias, --context and --context-map shape a training set: add --set biased-train")
    mapping = parse_context_map(context_map, chosen, context) if context_map is not None and context in ("background", "style") else None
    written = write_held_out(out, per_class=per_class, seed=seed, classes=chosen, kind=kind, bias=bias,
                             context=context, context_map=mapping)
    what = {"held-out": "held-out renders", "balanced-test": "balanced test renders (every class in every context)",
            "biased-train": "biased training renders"}[kind]
    typer.echo(f"wrote {written.images} {what} ({len(written.classes)} classes x {per_class}, "
               f"seed {written.seed}) to {out}, groups in {out}/metadata.jsonl")
    if written.context_map:
        typer.echo(f"each class's {context} ({bias:.0%} of its images): "
                   + ", ".join(f"{c}={v}" for c, v in written.context_map.items()))
        typer.echo(f"next: dalle-data probe --train demo-out --real-train {shlex.quote(str(out))} --test real-test"
                   "   (real-test: a --set balanced-test; demo-out: a shapes-demo run, as `make demo` writes)")
    else:
        typer.echo(f"next: dalle-data probe --train demo-out --test {shlex.quote(str(out))}"
                   "   (demo-out: a shapes-demo run, as `make demo` writes)")
