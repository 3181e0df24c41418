"""Prompts: template packs, their deterministic expansion, and JSONL prompt lists."""

from dalle_data.prompts.jsonl import read_prompts_jsonl, write_prompts_jsonl
from dalle_data.prompts.expand import expand_focused, expand_prompts, render_template
from dalle_data.prompts.templates import (
    KNOWN_MODES,
    PromptItem,
    TemplatePack,
    builtin_pack_path,

    load_pack,
    normalize_prompt,
)

__all__ = [
    "KNOWN_MODES",
    "PromptItem",
    "TemplatePack",
    "builtin_pack_path",
    "expand_focused",
    "expand_prompts",
    "load_pack",
    "normalize_prompt",
    "read_prompts_jsonl",
    "render_template",
    "write_prompts_jsonl",
]
