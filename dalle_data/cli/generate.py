"""``dalle-data generate``: the main job."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import typer

from dalle_data.cli.common import cli_errors, epilog, split_list
from dalle_data.errors import SpecError

EPILOG = epilog(
    [
        "dalle-data generate --classes dalmatian --per-class 500",
        'dalle-data generate --classes "red circle,blue star" --per-class 8 --model shapes-demo --out shapes-out --format parquet --format imagefolder',
        "dalle-data generate --classes-file classes.txt --mode vanilla=0.7,adversarial=0.3 --per-class 100",
        "dalle-data generate --config spec.yaml --seed 7        # a saved spec, one flag overridden",
        "dalle-data generate --resume out                       # continue an interrupted run",
        "dalle-data generate --mode variation --from my_photos/ --per-source 10   # my_photos/<class>/<image>",
        "dalle-data generate --mode inpaint --from my_photos/ --mask border --per-class 100",
        "dalle-data generate --mode vanilla=0.6,variation=0.2,inpaint=0.2 --from my_photos/ --per-class 500",
        "dalle-data prompts --classes dalmatian -n 50 > p.jsonl  # edit, then:",
        "dalle-data generate --prompts p.jsonl --per-class 50",
        "dalle-data generate --classes dalmatian --per-class 100 --llm gpt-5-mini      # an LLM writes the scenes",
        "dalle-data generate --classes dalmatian --per-class 100 --backend openai --dry-run   # plan and cost, no calls",
        "dalle-data generate --classes dalmatian --per-class 100 --backend openai --model gpt-image-1.5 --max-concurrency 8",
        'dalle-data generate --classes dalmatian --per-class 100 --model sdxl --option "negative_prompt=blurry, text"',
        "dalle-data generate --mode variation,fuse --from my_photos/ --per-source 4 --model sdxl --option ip_adapter=default",
    ],
    "Exit status: 0 complete; 3 short (a quota unmet; --allow-short makes it 0); 2 bad input; 75 another process "
    "holds --out; 130 interrupted (rerun to resume). Hosted APIs read the key from OPENAI_API_KEY only (never a flag "
    "or a spec field) and the server from --base-url / --llm-base-url or OPENAI_BASE_URL (any OpenAI-compatible "
    "server: vLLM, Ollama, llama.cpp).",
)


def read_classes_file(path: Path) -> list[str]:
    """One class per line; blank lines and lines starting with # are skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Windows editors) is not part of a name
    except FileNotFoundError:
        raise SpecError(f"--classes-file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read --classes-file {path}: {err}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def collect_values(config: Optional[Path], flags: dict[str, Any]) -> dict[str, Any]:
    """Config-file values overridden by the flags that were given (``--option``s one key at a time)."""
    from dalle_data.config import load_config

    values: dict[str, Any] = load_config(config) if config else {}
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    if isinstance(values.get("options"), dict) and "options" in given:
        given["options"] = {**values["options"], **given["options"]}
    values.update(given)
    return values


def parse_options(items: Optional[list[str]]) -> dict[str, str] | None:
    """``--option KEY=VALUE`` items as a mapping (the backend's option model checks names and values)."""
    if not items:
        return None
    options: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--option expects KEY=VALUE (e.g. --option negative_prompt=blurry), got {item!r}")
        options[key.strip()] = value
    return options


def classes_from_prompts(values: dict[str, Any]) -> None:
    """With --prompts and no classes/modes given, take them from the file."""
    from dalle_data.prompts import read_prompts_jsonl

    items = read_prompts_jsonl(values["prompts"])
    values.setdefault("classes", list(dict.fromkeys(i.cls for i in items)))
    values.setdefault("modes", list(dict.fromkeys(i.mode for i in items)))


def classes_from_sources(values: dict[str, Any]) -> None:
    """With --from and no classes given, the classes are the source folders'."""
    from dalle_data.discovery import discover_sources
    from dalle_data.job import finish_source_apply

    finish_source_apply(values["from_dir"])
    values["classes"] = sorted({s.label for s in discover_sources(values["from_dir"])})


@dataclass(frozen=True)
class Flag:
    """One option of ``generate``: its parameter, type and Typer option, and the spec field it sets as it is
    when that is named otherwise (a parameter named as a spec field sets that field; the others, such as
    ``--size`` for both width and height, the command maps by hand)."""

    param: str
    annotation: Any
    option: Any
    field: str | None = None


# Every option of ``generate``, in --help order: declared here once (the command's signature is built from
# this table, and the spec fields set one to one are read from it).
FLAGS: tuple[Flag, ...] = (
    Flag("classes", Optional[list[str]], typer.Option(None, "--classes", "-c", metavar="NAME", help="Class name; repeat or comma-separate (a,b,c).")),
    Flag("classes_file", Optional[Path], typer.Option(None, "--classes-file", metavar="FILE", help="File with one class per line (# comments allowed).")),
    Flag("per_class", Optional[int], typer.Option(None, "--per-class", "-n", metavar="N", help="Kept images wanted per class (quota).")),
    Flag("mode", Optional[list[str]], typer.Option(None, "--mode", metavar="MODE", help="vanilla | style | adversarial | variation | fuse | inpaint; repeat, or give shares: vanilla=0.7,adversarial=0.3. [default: vanilla]")),
    Flag("model", Optional[str], typer.Option(None, "--model", metavar="MODEL", envvar="DALLE_DATA_MODEL", help="Preset (kandinsky-2-2; shapes-demo, the bundled offline model; tiny, random weights), hub id of a Kandinsky 2.2 decoder, or a local model directory. [default: kandinsky-2-2]")),
    Flag("prior", Optional[str], typer.Option(None, "--prior", metavar="PRIOR", help="Prior hub id or folder for a hub decoder. [default: kandinsky-community/kandinsky-2-2-prior]")),
    Flag("scorer", Optional[str], typer.Option(None, "--scorer", metavar="SCORER", envvar="DALLE_DATA_SCORER", help="CLIP scorer: auto (the model's own for shapes-demo and tiny, else ViT-L-14/openai), shapes-demo, tiny, open_clip ARCH/TAG, hf-hub:org/repo or a folder. [default: auto]")),
    Flag("out", Optional[str], typer.Option(None, "--out", "-o", metavar="DIR|URL", help="Output directory of the run: a folder, or an fsspec URL such as s3://bucket/run (pip install dalle-data[s3]). [default: out]")),
    Flag("fmt", Optional[list[str]], typer.Option(None, "--format", "-f", metavar="FORMAT", help="parquet | imagefolder; repeat for both. [default: parquet]")),
    Flag("seed", Optional[int], typer.Option(None, "--seed", metavar="INT", help="Run seed; the same spec and seed give the same images. [default: 0]")),
    Flag("min_clip", Optional[float], typer.Option(None, "--min-clip", metavar="COSINE", help="Also reject images whose CLIP cosine to their prompt is below this (-1..1; off by default).")),
    Flag("filter_", Optional[str], typer.Option(None, "--filter", metavar="FILTER", help="zero-shot (keep when the image's own class wins) or none. [default: zero-shot]"), field="filter"),
    Flag("max_attempts", Optional[int], typer.Option(None, "--max-attempts", metavar="N", help="Most images generated per class to meet its quota. [default: 5 x --per-class]")),
    Flag("keep_rejected", Optional[bool], typer.Option(None, "--keep-rejected/--no-keep-rejected", help="Store rejected images apart (OUT/rejected/) for audit and review.")),
    Flag("templates", Optional[str], typer.Option(None, "--templates", metavar="PACK.yaml", help="YAML template pack to use instead of the model's (templates/default.yaml; shapes-demo: templates/shapes.yaml).")),
    Flag("prompts", Optional[str], typer.Option(None, "--prompts", metavar="FILE.jsonl", help="JSONL prompt list (from `dalle-data prompts`, edited) used as is.")),
    Flag("focus", Optional[str], typer.Option(None, "--focus", metavar="FOCUS.yaml", help="Spend the images where a classifier fails: a focus file from `dalle-data focus` (class shares, slot weights, contrast prompts; read into the spec).")),
    Flag("select", Optional[str], typer.Option(None, "--select", metavar="uncertain:MODEL.onnx", help="Keep, among the candidates the filter passes, the ones your classifier (an ONNX model, e.g. from `dalle-data probe --save-learner`) is least sure of or gets wrong (pip install dalle-data[learner]).")),
    Flag("candidates", Optional[int], typer.Option(None, "--candidates", metavar="K", help="--select: candidates that pass the filter per kept image, 2 to 64. [default: 4]")),
    Flag("learner_labels", Optional[str], typer.Option(None, "--learner-labels", metavar="FILE", help="--select: the classifier's output order (one class a line, or a JSON list), when its metadata has none.")),
    Flag("learner_size", Optional[int], typer.Option(None, "--learner-size", metavar="PX", help="--select: the side the classifier takes, when its input shape and metadata do not say.")),
    Flag("learner_mean", Optional[str], typer.Option(None, "--learner-mean", metavar="R,G,B", help="--select: per-channel mean of its preprocessing (pixels in 0..1). [default: the metadata's, else ImageNet's]")),
    Flag("learner_std", Optional[str], typer.Option(None, "--learner-std", metavar="R,G,B", help="--select: per-channel std of its preprocessing. [default: the metadata's, else ImageNet's]")),
    Flag("config", Optional[Path], typer.Option(None, "--config", metavar="SPEC.yaml", help="YAML run spec (e.g. a saved OUT/spec.yaml); flags override it.")),
    Flag("from_dir", Optional[str], typer.Option(None, "--from", metavar="DIR", help="Source images for variation/fuse/inpaint: an ImageFolder tree (<class>/<image>), a dalle-data output, or a flat folder with --classes NAME.")),
    Flag("per_source", Optional[int], typer.Option(None, "--per-source", metavar="K", help="Image modes: K kept images per source image (instead of --per-class).")),
    Flag("prompt_weight", Optional[float], typer.Option(None, "--prompt-weight", metavar="W", help="Variation/fuse: mix the class prompt into the CLIP embedding with this weight (0..1). [default: 0]")),
    Flag("fuse_weight", Optional[float], typer.Option(None, "--fuse-weight", metavar="W", help="Fuse: weight of the first image of each pair; the second gets 1-W. [default: 0.5]")),
    Flag("mask", Optional[str], typer.Option(None, "--mask", metavar="KIND", help="Inpaint: border (new background, 64 percent repainted), center (25 percent) or random-box. [default: border]")),
    Flag("mask_dir", Optional[str], typer.Option(None, "--mask-dir", metavar="DIR", help="Inpaint: masks with the same relative path and stem as each source (white = repaint).")),
    Flag("resume", Optional[str], typer.Option(None, "--resume", metavar="OUT", help="Continue the run in OUT with its saved spec (same as rerunning its command).")),
    Flag("overwrite", bool, typer.Option(False, "--overwrite", help="Delete what an earlier run wrote in --out (nothing else) and start over.")),
    Flag("shard", Optional[str], typer.Option(None, "--shard", metavar="I/N", help="Make part I of N (0 <= I < N) of the run: a disjoint part whose quotas close inside it, for Slurm arrays, Kubernetes indexed jobs or a shell loop; then `dalle-data merge OUT`.")),
    Flag("executor", Optional[str], typer.Option(None, "--executor", metavar="EXECUTOR", help="local (this machine's device) or ray (an actor pool; pip install dalle-data[ray]). [default: local]")),
    Flag("ray_address", Optional[str], typer.Option(None, "--ray-address", metavar="ADDRESS", envvar="RAY_ADDRESS", help="--executor ray: an existing cluster (ray://host:10001 or auto). [default: a local instance]")),
    Flag("ray_actors", Optional[int], typer.Option(None, "--ray-actors", metavar="N", help="--executor ray: actors, each loading the models once. [default: 2]")),
    Flag("ray_gpus", Optional[float], typer.Option(None, "--ray-gpus", metavar="G", help="--executor ray: GPUs per actor (0 on CPUs). [default: 1 when the cluster has GPUs, else 0]")),
    Flag("allow_short", bool, typer.Option(False, "--allow-short", help="Exit 0 even when a quota is not met (the dataset is short; summary.json says so). Without it a short run exits 3.")),
    Flag("batch_size", Optional[str], typer.Option(None, "--batch-size", "-b", metavar="N|auto", help="Images per generator call; auto probes for the fastest batch that fits, once per model and machine. [default: auto]")),
    Flag("device", Optional[str], typer.Option(None, "--device", metavar="DEVICE", envvar="DALLE_DATA_DEVICE", help="auto, cpu, cuda, cuda:N or mps. [default: auto]")),
    Flag("dtype", Optional[str], typer.Option(None, "--dtype", metavar="DTYPE", help="auto (fp16 on a GPU, fp32 on the CPU), fp16, bf16 or fp32. [default: auto]")),
    Flag("compile_", Optional[bool], typer.Option(None, "--compile/--no-compile", help="torch.compile the prior and decoder (fixed batch shapes: compiled once; worth it for long GPU runs)."), field="compile"),
    Flag("steps", Optional[int], typer.Option(None, "--steps", metavar="N", help="Decoder denoising steps. [default: the model's]")),
    Flag("prior_steps", Optional[int], typer.Option(None, "--prior-steps", metavar="N", help="Prior denoising steps. [default: the model's]")),
    Flag("guidance_scale", Optional[float], typer.Option(None, "--guidance-scale", metavar="G", help="Classifier-free guidance of the denoiser (turbo models: 0; a negative prompt needs more than 1). [default: the model's]")),
    Flag("shard_size", Optional[int], typer.Option(None, "--shard-size", metavar="N", help="Work units per resumable shard (the most work a crash can lose). [default: 64]")),
    Flag("size", Optional[int], typer.Option(None, "--size", metavar="PX", help="Image width and height in pixels. [default: the model's]")),
    Flag("quiet", bool, typer.Option(False, "--quiet", "-q", help="Print nothing but errors.")),
    Flag("json_output", bool, typer.Option(False, "--json", help="Print the run summary as JSON on stdout (for CI).")),
    Flag("backend", Optional[str], typer.Option(None, "--backend", metavar="BACKEND", help="diffusers (local models), openai (the hosted images API) or a plug-in's backend; `dalle-data backends` lists what each can do. [default: diffusers]")),
    Flag("option", Optional[list[str]], typer.Option(None, "--option", metavar="KEY=VALUE", help="A backend option, e.g. negative_prompt=blurry; repeat for more. `dalle-data backends` lists each backend's options. Part of the spec: other options make another run.")),
    Flag("quality", Optional[str], typer.Option(None, "--quality", metavar="Q", help="--backend openai: low, medium, high or auto. [default: medium]")),
    Flag("base_url", Optional[str], typer.Option(None, "--base-url", metavar="URL", help="--backend openai: images API base URL. [default: $OPENAI_BASE_URL or https://api.openai.com/v1]")),
    Flag("max_concurrency", Optional[int], typer.Option(None, "--max-concurrency", metavar="N", help="Hosted API: most requests in flight at once (a batch holds at least N). [default: 4]")),
    Flag("openai_batch", Optional[bool], typer.Option(None, "--openai-batch/--no-openai-batch", help="--backend openai: send text-to-image requests through the Batch API (half price, results within 24 h; a rerun finds a submitted batch again).")),
    Flag("timeout", Optional[float], typer.Option(None, "--timeout", metavar="SECONDS", help="Hosted API: most seconds one request may take in all (connect, send, answer) before it is retried. [default: 120]")),
    Flag("max_retries", Optional[int], typer.Option(None, "--max-retries", metavar="N", help="Hosted API: retries of a 429, 5xx or timeout (exponential backoff, Retry-After honoured). [default: 5]")),
    Flag("llm", Optional[str], typer.Option(None, "--llm", metavar="MODEL", help="Have this chat model write the vanilla scene prompts (any OpenAI-compatible server).")),
    Flag("llm_base_url", Optional[str], typer.Option(None, "--llm-base-url", metavar="URL", help="Chat server for --llm. [default: $OPENAI_BASE_URL or https://api.openai.com/v1]")),
    Flag("llm_prompts", Optional[int], typer.Option(None, "--llm-prompts", metavar="N", help="Distinct scene prompts --llm writes per class. [default: 50]")),
    Flag("no_cache", bool, typer.Option(False, "--no-cache", help="Ask the LLM afresh instead of reusing its cached answers.")),
    Flag("dry_run", bool, typer.Option(False, "--dry-run", help="Print the plan and a cost estimate; load no model, call no API, write nothing.")),
    Flag("price_per_image", Optional[float], typer.Option(None, "--price-per-image", metavar="USD", help="--dry-run: price one image at this (else the table in dalle_data/pricing.py, or $DALLE_DATA_PRICES).")),
)


def _signature(flags: tuple[Flag, ...]) -> inspect.Signature:
    return inspect.Signature([inspect.Parameter(f.param, inspect.Parameter.KEYWORD_ONLY, default=f.option,
                                                annotation=f.annotation) for f in flags])


@cli_errors
def generate(**given: Any) -> None:
    """Generate a labeled, CLIP-filtered image dataset for the given classes."""
    classes = given["classes"]
    classes_file = given["classes_file"]
    mode = given["mode"]
    fmt = given["fmt"]
    config = given["config"]
    resume = given["resume"]
    overwrite = given["overwrite"]
    shard = given["shard"]
    allow_short = given["allow_short"]
    size = given["size"]
    quiet = given["quiet"]
    json_output = given["json_output"]
    option = given["option"]
    no_cache = given["no_cache"]
    dry_run = given["dry_run"]
    price_per_image = given["price_per_image"]
    out = given["out"]
    names = split_list(classes)
    if classes_file is not None:
        names += read_classes_file(classes_file)
    from dalle_data.config import RunSpec

    flags: dict[str, Any] = {f.field or f.param: given[f.param] for f in FLAGS
                             if f.field or f.param in RunSpec.model_fields}
    flags.update({"classes": names or None, "modes": split_list(mode) or None, "formats": split_list(fmt) or None,
                  "width": size, "height": size, "options": parse_options(option)})
    from dalle_data.remote import check_storage_url, is_url, local_run

    target = resume if resume is not None else out
    if target is not None:
        check_storage_url(target, "--resume" if resume is not None else "--out")
    if target is not None and is_url(target) and overwrite:
        raise SpecError(f"--overwrite does not delete objects on shared storage: remove {target} yourself "
                        "(e.g. aws s3 rm --recursive) or use another --out")
    local, mirror = local_run(target) if target is not None else (None, None)  # a URL: made in a local mirror
    if out is not None:
        flags["out"] = local
    if resume is not None:
        if config is not None:
            raise SpecError("--resume OUT reads OUT/spec.yaml; do not combine it with --config")
        assert local is not None
        if not (local / "spec.yaml").is_file():
            raise SpecError(f"--resume {resume}: no dalle-data run there (no spec.yaml)")
        config, flags["out"] = local / "spec.yaml", local
    values = collect_values(config, flags)
    if values.get("prompts"):
        classes_from_prompts(values)
    if values.get("from_dir") and "classes" not in values:
        classes_from_sources(values)
    if classes is None and classes_file is None and "classes" not in values:
        raise SpecError("no classes given; pass --classes NAME (repeatable or comma-separated) or --classes-file FILE")

    from dalle_data.config import build_spec
    from dalle_data.job import run_generate

    spec = build_spec(values, source=f"config {config}" if config and not any(v is not None for v in flags.values()) else "options")
    if dry_run:
        from dalle_data.job import dry_run as plan_only

        report = plan_only(spec, price_per_image=price_per_image, llm_cache=not no_cache)
        if json_output:
            typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
        else:
            print_dry_run(report)
        return
    from dalle_data.progress import make_progress

    from dalle_data.execution.parts import Part

    part = Part.parse(shard) if shard is not None else None
    summary = run_generate(spec, quiet=quiet, overwrite=overwrite, llm_cache=not no_cache, part=part,
                           progress=make_progress(quiet, json_mode=json_output), mirror=mirror)
    if mirror is not None:
        summary = {**summary, "out": mirror.url}
    if json_output:
        typer.echo(json.dumps(summary, indent=2, ensure_ascii=False))
    elif not quiet:
        from dalle_data.cli.report import print_summary

        print_summary(summary)
    if part is not None and not quiet:
        typer.echo(f"part {part} of {spec.out} done; once every part is: dalle-data merge {spec.out}", err=True)
    if not summary["complete"] and not allow_short:
        from dalle_data.summary import EXIT_SHORT

        short = [name for name, row in summary["classes"].items() if not row["met"]]
        typer.echo(f"error: the dataset is short: {len(short)} class(es) under quota ({', '.join(short[:5])}"
                   f"{', ...' if len(short) > 5 else ''}); for more attempts make a new run with a higher "
                   f"--max-attempts or a looser filter (another --out, or --overwrite), or pass --allow-short to "
                   f"accept it (exit {EXIT_SHORT})", err=True)
        raise typer.Exit(EXIT_SHORT)


generate.__signature__ = _signature(FLAGS)  # type: ignore[attr-defined]
generate.__annotations__ = {f.param: f.annotation for f in FLAGS} | {"return": None}


def print_dry_run(report: dict[str, Any]) -> None:
    """The plan and cost of a ``--dry-run``, for people."""
    from dalle_data.pricing import Estimate, describe

    images = report["images"]
    what = f"{report['backend']} {report['model']}"
    if "quality" in report:
        what += f" (quality {report['quality']}, {report['size']}, {report['max_concurrency']} at a time)"
    typer.echo(f"dry run: nothing generated, no API called, {report['out']} not touched")
    typer.echo(f"model: {what}")
    for slot in report["slots"]:
        typer.echo(f"  {slot['class']} / {slot['mode']}: {slot['target']} kept wanted, at most {slot['max_attempts']} made")
    if "least" in images:
        typer.echo(f"images: {images['target']} kept, at least {images['least']} made (--candidates per kept image), "
                   f"at most {images['max']}")
    else:
        typer.echo(f"images: {images['target']} if every image is kept, at most {images['max']}")
    for line in report.get("focus", []):
        typer.echo(f"focus: {line}")
    if "select" in report:
        typer.echo(f"select: {report['select']['line']}")
    if "llm" in report:
        llm = report["llm"]
        typer.echo(f"prompts: {llm['prompts_per_class']} per class by --llm {llm['model']} at {llm['base_url']}; "
                   f"{llm['classes_cached']} of {len(report['classes'])} classes cached, "
                   f"at least {llm['requests_at_least']} LLM requests to make")
    cost = report["cost"]
    typer.echo(describe(Estimate(cost["per_image"], cost["expected"], cost["max"], cost["source"], cost["note"],
                                 cost.get("prices_checked") or "", cost.get("token_basis"))))
