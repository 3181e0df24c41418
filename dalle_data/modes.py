"""The generation modes, in one table.

Every place that needs to know something about a mode asks this table:
what its prompts are, how many source images a unit takes, which generator
capability makes it, and whether it makes hard negatives.

| mode        | prompts          | sources | call        | capability    | hard negatives |
|-------------|------------------|---------|-------------|---------------|----------------|
| vanilla     | templates / LLM  | 0       | text        | text-to-image | no             |
| style       | templates        | 0       | text        | text-to-image | no             |
| adversarial | templates        | 0       | text        | text-to-image | yes            |
| variation   | the class prompt | 1       | variation   | variation     | no             |
| fuse        | the class prompt | 2       | variation   | fuse          | no             |
| inpaint     | vanilla scenes   | 1       | inpaint     | inpaint       | no             |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Call = Literal["text", "variation", "inpaint"]
Capability = Literal["text-to-image", "variation", "fuse", "inpaint"]


@dataclass(frozen=True, slots=True)
class Mode:
    name: str
    prompts: Literal["templates", "class", "scenes"]  # templates (or an LLM for vanilla), the class, vanilla scenes
    sources: int  # source images per work unit
    call: Call  # which generator entry point makes it
    capability: Capability  # what a backend must be able to do
    hard_negative: bool = False

    @property
    def image(self) -> bool:
        """Driven by source images (``--from``)."""
        return self.sources > 0


MODES: dict[str, Mode] = {m.name: m for m in (
    Mode("vanilla", "templates", 0, "text", "text-to-image"),
    Mode("style", "templates", 0, "text", "text-to-image"),
    Mode("adversarial", "templates", 0, "text", "text-to-image", hard_negative=True),
    Mode("variation", "class", 1, "variation", "variation"),
    Mode("fuse", "class", 2, "variation", "fuse"),
    Mode("inpaint", "scenes", 1, "inpaint", "inpaint"),
)}
NAMES: tuple[str, ...] = tuple(MODES)
TEXT_MODES: tuple[str, ...] = tuple(m.name for m in MODES.values() if not m.image)
IMAGE_MODES: tuple[str, ...] = tuple(m.name for m in MODES.values() if m.image)


def mode(name: str) -> Mode:
    return MODES[name]


def makes_hard_negatives(modes: object) -> bool:
    """Whether any of ``modes`` (names) makes hard negatives."""
    return any(MODES[m].hard_negative for m in modes)  # type: ignore[attr-defined]
