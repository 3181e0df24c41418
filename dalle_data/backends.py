"""The generator backends, declared in one place.

A ``Backend`` says what a backend is called, what it can do (the
capabilities of ``dalle_data.modes``), which model it uses by default, which
spec fields it takes, how to check a spec for it, and where its loader lives
(imported only when a run starts). The spec, planning, the job and
``--dry-run`` ask this registry instead of testing backend names; modes a
backend cannot do are refused when the spec is checked, with a one-line
error that names the backends that can.

This module imports nothing heavy and nothing of the rest of dalle-data but
the mode table, so ``config`` can use it without an import circle.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dalle_data.modes import MODES

DIFFUSERS_PRESETS: dict[str, str] = {
    "kandinsky-2-2": "Kandinsky 2.2 prior + decoder from the Hugging Face Hub (needs a GPU for speed)",
    "shapes-demo": "a small Kandinsky 2.2-layout unCLIP trained here on a world of coloured shapes, offline",
    "tiny": "Kandinsky 2.2 pipeline classes with tiny random weights, offline (tests, demos)",
}
# Text-to-image models of other families (dalle_data.generators.text2image.PRESETS holds their hub ids and
# recommended settings); any diffusers text-to-image folder or hub id works too.
DIFFUSERS_PRESETS.update({
    "sdxl-turbo": "SDXL-Turbo (stabilityai/sdxl-turbo): text-to-image in 1-4 steps, 512²",
    "sd-turbo": "SD-Turbo (stabilityai/sd-turbo): text-to-image in 1-4 steps, 512²",
    "sdxl": "SDXL 1.0 base (stabilityai/stable-diffusion-xl-base-1.0): text-to-image, 1024²",
    "sd3.5-large-turbo": "SD 3.5 Large Turbo (stabilityai/stable-diffusion-3.5-large-turbo): 4 steps, 1024²",
    "flux-schnell": "FLUX.1 [schnell] (black-forest-labs/FLUX.1-schnell): 4 steps, 1024²",
    "sana-1600m": "Sana 1.6B (Efficient-Large-Model/Sana_1600M_1024px_diffusers): 20 steps, 1024²",
    "stable-unclip": "Stable unCLIP 2.1 small (stabilityai/stable-diffusion-2-1-unclip-small): variation and fuse only",
})
OPENAI_DEFAULT_MODEL = "gpt-image-1.5"


@dataclass(frozen=True)
class Backend:
    name: str
    description: str
    capabilities: frozenset[str]
    default_model: str
    loader: str  # "module:function", called with (spec, device) -> Generator
    check: Callable[[Mapping[str, Any]], str | None] = field(default=lambda spec: None)
    reproducible: bool = True  # the same seed gives the same image (an API takes no seed)
    needs_device: bool = True  # loads weights onto a torch device

    def can(self, mode: str) -> bool:
        return MODES[mode].capability in self.capabilities

    def load(self, spec: Any, device: str) -> Any:
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)(spec, device)


def _check_diffusers(spec: Mapping[str, Any]) -> str | None:
    if spec.get("quality") is not None:
        return "--quality applies to --backend openai"
    if spec.get("openai_batch"):
        return "--openai-batch applies to --backend openai"
    return None


def _check_openai(spec: Mapping[str, Any]) -> str | None:
    from dalle_data.pricing import retired

    if retired(str(spec.get("model"))):
        return retired(str(spec.get("model")))
    if spec.get("prior") is not None or spec.get("steps") is not None or spec.get("prior_steps") is not None:
        return "--prior, --steps and --prior-steps are for --backend diffusers; the images API takes none"
    if spec.get("model") in DIFFUSERS_PRESETS:
        return f"--model {spec['model']} is a diffusers model; with --backend openai name an image model such as " \
               f"{OPENAI_DEFAULT_MODEL}"
    return None


BACKENDS: dict[str, Backend] = {b.name: b for b in (
    Backend(
        name="diffusers",
        description="local models through diffusers (Kandinsky 2.2 and the bundled presets)",
        capabilities=frozenset({"text-to-image", "variation", "fuse", "inpaint"}),
        default_model="kandinsky-2-2",
        loader="dalle_data.generators.registry:load_for_spec",
        check=_check_diffusers,
    ),
    Backend(
        name="openai",
        description="the OpenAI images API (current GPT image models): generation and masked edits",
        capabilities=frozenset({"text-to-image", "inpaint"}),
        default_model=OPENAI_DEFAULT_MODEL,
        loader="dalle_data.generators.registry:load_api_for_spec",
        check=_check_openai,
        reproducible=False,
        needs_device=False,
    ),
)}


def backend(name: str) -> Backend:
    return BACKENDS[name]


def capable(mode: str) -> list[str]:
    """The backends that can make ``mode``."""
    return [b.name for b in BACKENDS.values() if b.can(mode)]


def check_modes(backend_name: str, modes: Mapping[str, float] | list[str]) -> str | None:
    """A one-line reason why ``backend_name`` cannot make one of ``modes``, or None."""
    chosen = BACKENDS[backend_name]
    for name in modes:
        if not chosen.can(name):
            others = [b for b in capable(name) if b != backend_name]
            where = f"use --backend {' or '.join(others)}" if others else "no backend can"
            why = " (the images API has no variations endpoint)" if backend_name == "openai" else ""
            return f"the {backend_name} backend cannot do {name}{why}; {where} for {name}"
    return None
