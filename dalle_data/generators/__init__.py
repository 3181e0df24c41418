"""Image generators: one backend per module behind the ``Generator`` protocol.

``load_generator`` turns the user's ``--model`` (a preset name, a hub id or a
local directory) into a ready generator.
"""

from dalle_data.generators.base import (
    CAPABILITY_PROTOCOLS,
    Compilable,
    GenerationSettings,
    Generator,
    ImagePrompt,
    Inpaint,
    NegativePrompt,
    TextToImage,
    Variation,
)
from dalle_data.generators.registry import MODEL_PRESETS, load_generator, resolve_settings

__all__ = ["CAPABILITY_PROTOCOLS", "Compilable", "GenerationSettings", "Generator", "ImagePrompt", "Inpaint",
           "MODEL_PRESETS", "NegativePrompt", "TextToImage", "Variation", "load_generator", "resolve_settings"]
