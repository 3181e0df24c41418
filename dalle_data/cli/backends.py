"""``dalle-data backends``: what each generator backend can do, its options, defaults and price model."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from dalle_data.cli.common import cli_errors, epilog

EPILOG = epilog([
    "dalle-data backends",
    "dalle-data backends --backend openai",
    "dalle-data backends --json",
])


def describe_backends(name: str | None = None) -> list[dict[str, Any]]:
    """The registry (``dalle_data.backends``) as plain data: one entry per backend."""
    from dalle_data.backends import BACKENDS
    from dalle_data.errors import SpecError
    from dalle_data.modes import MODES

    if name is not None and name not in BACKENDS:
        raise SpecError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    out = []
    for b in BACKENDS.values():
        if name is not None and b.name != name:
            continue
        options = [{"name": key, "type": _type_name(info.annotation), "default": info.default,
                    "description": info.description or ""} for key, info in b.options.model_fields.items()]
        out.append({
            "name": b.name, "description": b.description, "default_model": b.default_model, "models": b.models,
            "presets": dict(b.presets),
            "modes": [m for m in MODES if b.can(m)], "capabilities": sorted(b.capabilities),
            "default_scorer": b.default_scorer, "model_scorers": dict(b.model_scorers),
            "reproducible": b.reproducible, "price_model": b.price, "price_basis": _first_line(b.price),
            "flags": sorted(b.fields), "options": options, "distribution": BACKENDS.distribution(b.name),
        })
    return out


def _first_line(where: str) -> str:
    """The first line of the docstring of the function ``module:function``."""
    from dalle_data.backends import function_at

    return (function_at(where).__doc__ or where).strip().splitlines()[0]


def _type_name(annotation: Any) -> str:
    """``Literal['a', 'b'] | None`` → ``a | b | none``; ``float`` → ``float``."""
    import typing

    if isinstance(annotation, type):
        return "text" if annotation is str else annotation.__name__
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(str(a) for a in args)
    return " | ".join("none" if a is type(None) else _type_name(a) for a in args) or str(annotation)


@cli_errors
def backends(
    backend: Optional[str] = typer.Option(None, "--backend", metavar="BACKEND", help="Show this backend only."),
    json_output: bool = typer.Option(False, "--json", help="Print the registry as JSON."),
) -> None:
    """List the generator backends: modes, default model and scorer, options (--option KEY=VALUE), price model."""
    rows = describe_backends(backend)
    if json_output:
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False, default=str))
        return
    for row in rows:
        typer.echo(f"{row['name']}: {row['description']}")
        if row["distribution"] != "dalle-data":
            typer.echo(f"  from: {row['distribution']} (a plug-in)")
        typer.echo(f"  modes: {', '.join(row['modes'])}")
        typer.echo(f"  --model: {row['models']}; default {row['default_model']}; same seed, same image: "
                   f"{'yes' if row['reproducible'] else 'no (the API takes no seed)'}")
        for preset, what in row["presets"].items():
            typer.echo(f"    {preset}: {what}")
        scorers = "".join(f", {m} → {s}" for m, s in row["model_scorers"].items())
        typer.echo(f"  --scorer auto: {row['default_scorer']}{scorers}")
        typer.echo(f"  price: {row['price_basis']}")
        if row["flags"]:
            typer.echo(f"  its flags: {', '.join('--' + f.replace('_', '-') for f in row['flags'])}")
        for opt in row["options"]:
            typer.echo(f"  --option {opt['name']}=...  ({opt['type']}, default {opt['default']}): "
                       f"{opt['description']}")
