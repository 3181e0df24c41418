"""Specs whose hashes are pinned in ``spec_hashes.json`` (written by ``python -m tests.golden.spec_specs``
on main at 40a6b2d, before the spec's fields declared their own roles): a hash must never change, or every
run saved before would no longer resume."""

from __future__ import annotations

import json
from pathlib import Path

BASE = {"classes": ["cat", "dog"], "per_class": 4, "model": "tiny"}
SPECS: dict[str, dict[str, object]] = {
    "minimal": BASE,
    "execution-only-differences": {**BASE, "out": "elsewhere", "batch_size": 3, "device": "cpu", "dtype": "fp32",
                                   "compile": True, "executor": "ray", "ray_actors": 3},
    "guidance-unset": {**BASE, "guidance_scale": None},
    "guidance-4": {**BASE, "guidance_scale": 4.0},
    "guidance-7.5": {**BASE, "guidance_scale": 7.5},
    "content": {**BASE, "seed": 7, "min_clip": 0.2, "filter": "none", "max_attempts": 9, "keep_rejected": True,
                "formats": ["parquet", "imagefolder"], "modes": {"vanilla": 0.5, "style": 0.25, "adversarial": 0.25},
                "width": 64, "height": 64, "steps": 3, "prior_steps": 2, "shard_size": 8, "split": "val",
                "negative_label": "other"},
    "llm-set": {**BASE, "llm": "gpt-5-mini", "llm_prompts": 20},
    "llm-default-prompts": {**BASE, "llm_prompts": 50},
    "openai": {"classes": ["cat"], "per_class": 2, "backend": "openai", "model": "gpt-image-1.5", "quality": "low",
               "max_concurrency": 8, "timeout": 30.0, "max_retries": 2, "openai_batch": True},
    "diffusers-explicit": {**BASE, "backend": "diffusers"},
    "options": {**BASE, "model": "kandinsky-2-2", "options": {"negative_prompt": "blurry"}, "guidance_scale": 5.0},
}


def hashes() -> dict[str, str]:
    from dalle_data.config import build_spec

    return {name: build_spec(dict(values)).spec_hash() for name, values in SPECS.items()}


if __name__ == "__main__":
    path = Path(__file__).with_name("spec_hashes.json")
    path.write_text(json.dumps(hashes(), indent=2) + "\n")
    print(path.read_text())
