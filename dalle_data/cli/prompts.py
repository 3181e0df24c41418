"""``dalle-data prompts``: expand classes into prompts, as editable JSONL."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from dalle_data.cli.common import cli_errors, epilog, split_list
from dalle_data.errors import SpecError

if TYPE_CHECKING:
    from dalle_data.prompts import PromptItem

EPILOG = epilog(
    [
        'dalle-data prompts --classes dalmatian -n 20',
        'dalle-data prompts --classes cat,dog --mode style --mode adversarial -n 50 -o prompts.jsonl',
        'dalle-data prompts --classes dalmatian --templates my_pack.yaml -n 10',
        'dalle-data prompts --classes dalmatian --llm gpt-5-mini -n 50 -o p.jsonl   # an LLM writes the scenes',
        'dalle-data prompts --classes "nurse,dalmatian" --llm llama3.1 --llm-base-url http://localhost:11434/v1 -n 30',
        'dalle-data prompts --classes cat --llm gpt-5-mini --timeout 30 --max-retries 2   # fail fast',
    ],
    'With --llm, -n is the number of distinct scene prompts per class ("A dalmatian lying on the kitchen floor"); answers are cached under $DALLE_DATA_HOME (default ~/.cache/dalle-data), so a rerun makes no request. The key comes from OPENAI_API_KEY only; a local server needs none. Ctrl-C stops at once (exit 130); classes already written stay cached.',
)


@dataclass(frozen=True)
class LLMOptions:
    """How ``--llm`` reaches its server: the flags of ``prompts`` that only matter with ``--llm``."""

    base_url: Optional[str]
    timeout: float
    max_retries: int
    cache: bool


@cli_errors
def prompts(
    classes: Optional[list[str]] = typer.Option(None, "--classes", "-c", metavar="NAME", help="Class name; repeat or comma-separate."),
    mode: Optional[list[str]] = typer.Option(None, "--mode", metavar="MODE", help="vanilla | style | adversarial; repeatable. [default: vanilla]"),
    n: int = typer.Option(10, "--per-class", "-n", "--num", metavar="N", help="Prompts per class (and mode); -n means per class in every command.", min=1),
    templates: Optional[str] = typer.Option(None, "--templates", metavar="PACK.yaml", help="YAML template pack instead of the built-in one."),
    seed: int = typer.Option(0, "--seed", help="Expansion seed."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", metavar="FILE", help="Write JSONL here instead of stdout."),
    llm: Optional[str] = typer.Option(None, "--llm", metavar="MODEL", help="Have this chat model write the vanilla scene prompts (other modes still come from templates)."),
    llm_base_url: Optional[str] = typer.Option(None, "--llm-base-url", metavar="URL", help="OpenAI-compatible chat server for --llm. [default: $OPENAI_BASE_URL or https://api.openai.com/v1]"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Ask the LLM afresh instead of reusing its cached answers."),
    timeout: float = typer.Option(120.0, "--timeout", metavar="SECONDS", min=0.1, help="--llm: seconds one request may take in all (connect, send, answer) before it is retried."),
    max_retries: int = typer.Option(5, "--max-retries", metavar="N", min=0, help="--llm: retries of a 429, 5xx, timeout or garbled answer (exponential backoff, Retry-After honoured)."),
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
        options = LLMOptions(llm_base_url, timeout, max_retries, cache=not no_cache)
        items = _with_llm(llm, options, names, modes, n, seed, templates)
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
    model: str, options: LLMOptions, names: list[str], modes: list[str], n: int, seed: int,
    templates: Optional[str],
) -> list[PromptItem]:
    """Vanilla prompts from the LLM, the other modes from the template pack.

    Ctrl-C and SIGTERM cancel the requests in flight (``RequestsCancelled``: one line, exit 130).
    """
    from dalle_data.llm import write_llm_prompts
    from dalle_data.llm.cancel import cancel_on_signals
    from dalle_data.llm.client import APIError, check_base_url
    from dalle_data.prompts import expand_prompts, load_pack

    base_url = options.base_url
    if base_url is not None:
        try:
            base_url = check_base_url(base_url, "--llm-base-url")
        except APIError as err:
            raise SpecError(str(err)) from None
    if "vanilla" not in modes:
        raise SpecError("--llm writes vanilla scene prompts; add --mode vanilla")
    others = [m for m in modes if m != "vanilla"]
    with cancel_on_signals():
        items = write_llm_prompts(model, names, n, base_url=base_url, seed=seed, cache=options.cache,
                                  timeout=options.timeout, max_retries=options.max_retries)
    if others:
        items += expand_prompts(load_pack(templates), names, others, n, seed)
    return items
