"""``dalle-data prompts``: expand classes into prompts, as editable JSONL."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from dalle_data.cli.common import cli_errors, split_list
from dalle_data.errors import SpecError

if TYPE_CHECKING:
    from dalle_data.prompts import PromptItem

EPILOG = """\
Examples:

  dalle-data prompts --classes dalmatian -n 20

  dalle-data prompts --classes cat,dog --mode style --mode adversarial -n 50 -o prompts.jsonl

  dalle-data prompts --classes dalmatian --templates my_pack.yaml -n 10

  dalle-data prompts --classes dalmatian --llm gpt-5-mini -n 50 -o p.jsonl   # an LLM writes the scenes

  dalle-data prompts --classes "nurse,dalmatian" --llm llama3.1 --llm-base-url http://localhost:11434/v1 -n 30

With --llm, -n is the number of distinct scene prompts per class ("A dalmatian lying on the kitchen floor");
answers are cached under $DALLE_DATA_HOME (default ~/.cache/dalle-data), so a rerun makes no request.
The key comes from OPENAI_API_KEY only; a local server needs none.
"""


@cli_errors
def prompts(
    classes: Optional[list[str]] = typer.Option(None, "--classes", "-c", metavar="NAME", help="Class name; repeat or comma-separate."),
    mode: Optional[list[str]] = typer.Option(None, "--mode", metavar="MODE", help="vanilla | style | adversarial; repeatable. [default: vanilla]"),
    n: int = typer.Option(10, "-n", "--num", help="Prompts per class and mode.", min=1),
    templates: Optional[str] = typer.Option(None, "--templates", metavar="PACK.yaml", help="YAML template pack instead of the built-in one."),
    seed: int = typer.Option(0, "--seed", help="Expansion seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", help="Write JSONL here instead of stdout."),
    llm: Optional[str] = typer.Option(None, "--llm", metavar="MODEL", help="Have this chat model write the vanilla scene prompts (other modes still come from templates)."),
    llm_base_url: Optional[str] = typer.Option(None, "--llm-base-url", metavar="URL", help="OpenAI-compatible chat server for --llm. [default: $OPENAI_BASE_URL or https://api.openai.com/v1]"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ask the LLM afresh instead of reusing its cached answers."),
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
    if llm is not None:
        items = _with_llm(llm, llm_base_url, names, modes, n, seed, templates, not no_cache)
    else:
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


def _with_llm(
    model: str, base_url: Optional[str], names: list[str], modes: list[str], n: int, seed: int,
    templates: Optional[str], cache: bool,
) -> list[PromptItem]:
    """Vanilla prompts from the LLM, the other modes from the template pack."""
    from dalle_data.llm import write_llm_prompts
    from dalle_data.llm.client import APIError, check_base_url
    from dalle_data.prompts import expand_prompts, load_pack

    if base_url is not None:
        try:
            base_url = check_base_url(base_url, "--llm-base-url")
        except APIError as err:
            raise SpecError(str(err)) from None
    if "vanilla" not in modes:
        raise SpecError("--llm writes vanilla scene prompts; add --mode vanilla")
    others = [m for m in modes if m != "vanilla"]
    items = write_llm_prompts(model, names, n, base_url=base_url, seed=seed, cache=cache)
    if others:
        items += expand_prompts(load_pack(templates), names, others, n, seed)
    return items
