"""The dataset card ``OUT/README.md``, in the Hugging Face convention.

A YAML header that the Hub and ``datasets`` read (``dataset_info`` with the
features of the Parquet rows, the label a ``class_label`` over the run's one
label map; ``configs``/``data_files`` pointing at the Parquet split, or at the
ImageFolder tree for an ImageFolder-only run; task, size, annotation and
licence fields), and a body that says how the data was made and what it
holds, from the report's figures. ``datasets.load_dataset(OUT)`` loads the
dataset through it.
"""

from __future__ import annotations

import html
import re
import unicodedata
from typing import TYPE_CHECKING, Any

import yaml

from dalle_data.advice import review_command
from dalle_data.focus import describe as describe_focus
from dalle_data.writers.formats import formats_of
from dalle_data.writers.imagefolder import _yaml_features

if TYPE_CHECKING:
    from dalle_data.rundir.reader import Run

# Licences of the models dalle-data knows by name (checked 2026-11-30 on their model cards).
# A synthetic dataset inherits the generator's terms; unknown models are "unknown".
MODEL_LICENSES: dict[str, str] = {
    "kandinsky-2-2": "apache-2.0",
    "kandinsky-community/kandinsky-2-2-decoder": "apache-2.0",
    "kandinsky-community/kandinsky-2-2-prior": "apache-2.0",
    "shapes-demo": "apache-2.0",
    "tiny": "apache-2.0",
}
SCORER_LICENSES: dict[str, str] = {"ViT-L-14/openai": "mit", "tiny": "apache-2.0", "shapes-demo": "apache-2.0"}


# What CommonMark and GFM tables read as markup in running text: backslash-escaped, it renders as itself
# (< > & become entities, as in the HTML report).
_MARKUP = re.compile(r"([\\`*_\[\]!|#~])")


LIMITATIONS = (
    "Every label comes from the generator and the scorer, not from a person: images the scorer misjudges carry "
    f"wrong labels. `{review_command('OUT', 50)}` shows the likeliest first.",
    "The scorer that filters is also the one that measures diversity and near-duplicates here; its blind spots "
    "are shared by all three figures.",
    "Synthetic images differ from photographs in texture, composition and bias; check with `dalle-data probe` "
    "against real images before relying on the data.",
    "The images inherit the generator's licence terms and its training data's biases.",
)


def one_line(text: str) -> str:
    """``text`` with its control and line-separator characters written as Python escapes (``\\n``)."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c for c in text)


def md_text(value: object) -> str:
    """``value`` as plain text of the card's body, a table cell included: none of its markup renders."""
    return html.escape(_MARKUP.sub(r"\\\1", one_line(str(value))), quote=False)


def md_code(value: object) -> str:
    """``value`` as a code span in a table cell of the card (its fence longer than any run of backticks in it)."""
    text = one_line(str(value)).replace("|", "\\|")
    fence = "`" * (max(map(len, re.findall("`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` examples."""
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < limit:
            return name
    return "10M<n<100M"


def header(run: Run, figures: dict[str, Any], fingerprint: str) -> dict[str, Any]:
    spec = run.spec
    split = spec.split
    pointed = sorted((f for f in formats_of(spec.formats) if f.card_files is not None), key=lambda f: f.card_rank)
    path = pointed[0].card_files(split) if pointed else f"imagefolder/{split}/**"  # type: ignore[misc]
    features = _yaml_features(run.labels.names)
    return {
        "pretty_name": f"dalle-data synthetic images: {', '.join(spec.classes[:5])}"
                       + (f" and {len(spec.classes) - 5} more" if len(spec.classes) > 5 else ""),
        "license": MODEL_LICENSES.get(spec.model, "unknown"),
        "task_categories": ["image-classification"],
        "size_categories": [size_category(figures["images"])],
        "annotations_creators": ["machine-generated"],
        "language_creators": ["machine-generated"],
        "source_datasets": ["original"],
        "tags": ["synthetic", "dalle-data", "clip-filtered"],
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": path}],
                     # the cache key of datasets follows the configs: this changes whenever the rows do
                     "description": f"dalle-data run {run.spec_hash}, rows sha256 {fingerprint}"}],
        "dataset_info": {"config_name": "default", "features": features,
                         "splits": [{"name": split, "num_examples": figures["images"]}]},
    }


def card(run: Run, figures: dict[str, Any], fingerprint: str, versions: dict[str, str] | None = None) -> str:
    """The whole ``README.md`` (deterministic: the same run and figures give the same text)."""
    spec = run.spec
    versions = versions or {}
    front = yaml.safe_dump(header(run, figures, fingerprint), sort_keys=False, allow_unicode=True, width=1000)
    lines = [f"---\n{front}---", "", "# Synthetic image-classification data made by dalle-data", ""]
    lines += [f"{figures['images']} images of {len(run.labels.names)} labels, generated from class names, "
              "scored by a separate CLIP and kept only when that CLIP's zero-shot classifier agrees with the "
              "label." if spec.filter == "zero-shot" else f"{figures['images']} images, generated from class names "
              "(no zero-shot filter).", ""]
    lines += ["## Load it", "", "```python", "import datasets",
              'ds = datasets.load_dataset("path/to/this/folder")  # label: a ClassLabel over labels.json',
              "", "# or, for torchvision, the ImageFolder tree (when the run wrote one):",
              f'# torchvision.datasets.ImageFolder("path/to/this/folder/imagefolder/{spec.split}")', "```", ""]
    lines += ["## How it was made", ""]
    modes = ", ".join(f"{mode} {share:.0%}" for mode, share in spec.modes.items())
    prompts = (f"LLM {md_code(spec.llm)}" if spec.llm else f"prompt list {md_code(spec.prompts)}" if spec.prompts
               else f"template pack {md_code(spec.templates or 'built-in for the model')}")
    rows = [
        ("generator", f"{md_code(spec.model)} ({spec.backend}); licence {MODEL_LICENSES.get(spec.model, 'unknown')}"),
        ("scorer", f"{md_code(figures['embeddings'].get('scorer') or spec.scorer)} (CLIP); licence "
                   f"{SCORER_LICENSES.get(spec.scorer, 'see the model card')}"),
        ("revisions", "as resolved from the local cache or folder at run time (pin a hub revision by "
                      "downloading it to a folder and passing the folder)"),
        ("prompts", prompts),
        ("modes", modes),
        ("filter", f"{spec.filter}" + (f", CLIP cosine ≥ {spec.min_clip}" if spec.min_clip is not None else "")),
        ("seed", str(spec.seed)),
        ("image size", f"{spec.width or 'model default'} × {spec.height or 'model default'}"),
        ("dalle-data", versions.get("dalle-data", figures["dalle_data_version"])),
        ("libraries", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k != "dalle-data") or "—"),
        ("spec hash", run.spec_hash),
        ("command", "`dalle-data generate --config spec.yaml` (the spec beside this card holds every setting)"),
    ]
    lines += ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows] + [""]
    if spec.focus is not None:
        lines += ["### Focused", "", "The images were spent where a classifier failed (`generate --focus`; the "
                  "focus is in spec.yaml):", ""]
        lines += [f"- {md_text(line)}" for line in describe_focus(spec.focus, list(spec.classes), spec.per_class or 0)]
        if spec.focus.get("why"):
            lines += ["", md_text(str(spec.focus["why"]))]
        lines += [""]
    if spec.select is not None:
        sel = (getattr(run, "summary", None) or {}).get("select") or {}
        lines += ["### Selected by a learner", "", f"Of the candidates the filter passed, 1 in {spec.candidates} was "
                  f"kept: those the classifier {md_code(sel.get('learner') or 'learner')} was least sure of "
                  "(`generate --select uncertain`; each record's `learner_prob` is its probability of the label)."]
        if sel.get("learner_prob_kept") is not None and sel.get("learner_prob_not_selected") is not None:
            lines += ["", f"Its mean probability of the label: {sel['learner_prob_kept']:.2f} on the "
                          f"{sel.get('kept')} kept, {sel['learner_prob_not_selected']:.2f} on the "
                          f"{sel.get('not_selected')} set aside."]
        lines += [""]
    lines += ["## What it holds", "", "| label | role | target | kept | generated | acceptance | Vendi | "
              "mean distance | prompts |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    div = {d["label"]: d for d in figures["diversity"]}
    for label, row in figures["classes"].items():
        d = div.get(label)
        name = md_text(label)
        lines.append(f"| {name} | {row['role']} | {row['target']} | {row['kept']} | {row['generated']} | "
                     f"{row['acceptance']:.0%} | {d['vendi']:.1f} | {d['mean_distance']:.3f} | {d['prompts']} |"
                     if d else f"| {name} | {row['role']} | {row['target']} | {row['kept']} | {row['generated']} | "
                     f"{row['acceptance']:.0%} | – | – | – |")
    dup = figures["duplicates"]
    lines += ["", f"Near-duplicates (cosine ≥ {dup['threshold']} between the scorer's image embeddings, or the "
              f"same bytes): {len(dup['groups'])} group(s); keeping one image per group would set aside "
              f"{dup['set_aside']} ({dup['share']:.1%}).", ""]
    probe = figures.get("probe")
    if probe:
        lines += probe_lines(probe)
    lines += ["## Known limitations", "", *(f"- {x}" for x in LIMITATIONS), ""]
    if figures["warnings"]:
        lines += ["## Warnings", ""] + [f"- {md_text(w)}" for w in figures["warnings"]] + [""]
    lines += ["The full report with histograms and image grids: `report/index.html`.", ""]
    return "\n".join(lines)


def probe_lines(probe: dict[str, Any]) -> list[str]:
    """The card's probe section: each training set's accuracy and worst group on real images."""
    seeds = probe.get("seeds", 1)
    learner = probe.get("learner_detail") or f"A linear probe on {probe.get('scorer')} embeddings"
    lines = ["## Probe", "", f"{md_text(learner[:1].upper() + learner[1:])}, trained on this data and tested on "
             f"{probe.get('test_images')} real images (`dalle-data probe`)"
             + (f", mean ± sd over {seeds} seeds" if seeds > 1 else "") + ":", "",
             "| trained on | images | top-1 | worst group |", "|---|---:|---:|---:|"]
    for name, row in probe.get("results", {}).items():
        lines.append(f"| {md_text(name)} | {row.get('train_images')} | {_pm(row.get('top1'), row.get('top1_sd'))} | "
                     f"{_pm(row.get('worst_group'), row.get('worst_group_sd'))} |")
    return lines + [""]


def _pm(value: Any, sd: Any) -> str:
    if not isinstance(value, (int, float)):
        return "–"
    return f"{value:.1%}" + (f" ± {sd:.1%}" if sd else "")
