"""CLIP scoring and filtering of generated images."""

from dalle_data.scoring.filters import ClipFilter, Verdict
from dalle_data.scoring.registry import DEFAULT_SCORER, SCORER_PRESETS, load_scorer, resolve_scorer_name

__all__ = ["ClipFilter", "DEFAULT_SCORER", "SCORER_PRESETS", "Verdict", "load_scorer", "resolve_scorer_name"]
