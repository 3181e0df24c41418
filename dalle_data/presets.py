"""The diffusers backend's ``--model`` presets, in one table.

Each preset says what ``dalle-data backends`` shows of it, the hub repo it loads (where one repo is the whole
model), and, for the text-to-image families, the size, steps and guidance its authors recommend (checked
2026-11-30). Everything else is read from this table: the backend record's preset list
(``dalle_data.backends``), the spec checks (guidance-free presets, those with an IP-Adapter family),
``dalle_data.generators.text2image.PRESETS`` (the recommended settings as ``GenerationSettings``) and the
offline check of what a preset downloads.

Plain data only, so that the spec layer and the models layer can both read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str  # what `dalle-data backends` says of it
    repo: str | None = None  # the one hub repo it loads (None: built here, or several repos: its loader knows)
    size: int | None = None  # recommended settings of a text-to-image pipeline (None: the loader's own)
    steps: int | None = None
    guidance: float | None = None
    ip_adapter: bool = False  # of a family with an IP-Adapter (SDXL: h94/IP-Adapter's sdxl_models)

    @property
    def text_to_image_pipeline(self) -> bool:
        """Loaded as a diffusers text-to-image pipeline with the settings above."""
        return self.steps is not None

    @property
    def guidance_free(self) -> bool:
        """Made to run without guidance (a negative prompt does nothing there unless guidance is raised)."""
        return self.guidance is not None and self.guidance <= 1


PRESET_TABLE: tuple[ModelPreset, ...] = (
    ModelPreset("kandinsky-2-2", "Kandinsky 2.2 prior + decoder from the Hugging Face Hub (needs a GPU for speed)"),
    ModelPreset("shapes-demo", "a small Kandinsky 2.2-layout unCLIP trained here on a world of coloured shapes, "
                               "offline"),
    ModelPreset("tiny", "Kandinsky 2.2 pipeline classes with tiny random weights, offline (tests, demos)"),
    ModelPreset("sdxl-turbo", "SDXL-Turbo (stabilityai/sdxl-turbo): text-to-image in 1-4 steps, 512²",
                "stabilityai/sdxl-turbo", 512, 4, 0.0, ip_adapter=True),
    ModelPreset("sd-turbo", "SD-Turbo (stabilityai/sd-turbo): text-to-image in 1-4 steps, 512²",
                "stabilityai/sd-turbo", 512, 4, 0.0),
    ModelPreset("sdxl", "SDXL 1.0 base (stabilityai/stable-diffusion-xl-base-1.0): text-to-image, 1024²",
                "stabilityai/stable-diffusion-xl-base-1.0", 1024, 30, 5.0, ip_adapter=True),
    ModelPreset("sd3.5-large-turbo", "SD 3.5 Large Turbo (stabilityai/stable-diffusion-3.5-large-turbo): 4 steps, "
                                     "1024²", "stabilityai/stable-diffusion-3.5-large-turbo", 1024, 4, 0.0),
    ModelPreset("flux-schnell", "FLUX.1 [schnell] (black-forest-labs/FLUX.1-schnell): 4 steps, 1024²",
                "black-forest-labs/FLUX.1-schnell", 1024, 4, 0.0),
    ModelPreset("sana-1600m", "Sana 1.6B (Efficient-Large-Model/Sana_1600M_1024px_diffusers): 20 steps, 1024²",
                "Efficient-Large-Model/Sana_1600M_1024px_diffusers", 1024, 20, 4.5),
    ModelPreset("stable-unclip", "Stable unCLIP 2.1 small (stabilityai/stable-diffusion-2-1-unclip-small): "
                                 "variation and fuse only", "stabilityai/stable-diffusion-2-1-unclip-small"),
)
PRESETS: dict[str, ModelPreset] = {p.name: p for p in PRESET_TABLE}

DIFFUSERS_PRESETS: dict[str, str] = {p.name: p.description for p in PRESET_TABLE}  # --model name → what it is
GUIDANCE_FREE_PRESETS = frozenset(p.name for p in PRESET_TABLE if p.guidance_free)
IP_ADAPTER_PRESETS = frozenset(p.name for p in PRESET_TABLE if p.ip_adapter)
