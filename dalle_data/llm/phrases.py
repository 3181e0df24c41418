"""Scene phrases from an LLM: the request text, parsing, cleaning and de-duplication.

Pure functions, no network: ``writer`` sends what ``messages`` builds and
feeds the reply to ``parse_phrases``; ``Deduper`` keeps one of every group of
phrases that are the same after normalization (case, punctuation, articles,
word order) or nearly the same: their content words (all but articles and
small connecting words) overlap by ``NEAR`` or more (Jaccard), so "running
along a beach at sunset" repeats "running on a beach at sunset" but "... at
sunrise" does not.
"""

from __future__ import annotations

import json
import re
import unicodedata
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from dalle_data.prompts.expand import wants_an  # the "a"/"an" rule the templates use
from dalle_data.prompts.templates import normalize_prompt

TEMPLATE = "A {cls} {phrase}"
NEAR = 0.75  # Jaccard overlap of content-word sets at which two phrases count as the same scene
_ARTICLES = frozenset({"a", "an", "the"})
_LINKS = _ARTICLES | frozenset([
    "on", "in", "at", "of", "to", "by", "for", "from", "with", "along", "into", "onto", "near", "beside",
    "next", "while", "and", "or", "its", "his", "her", "their", "some"
])
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_NUMBERING = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")

# Words that make a class depict people: then age, gender and skin tone are balanced explicitly.
PEOPLE_WORDS = frozenset([
    "person", "people", "man", "men", "woman", "women", "boy", "boys", "girl", "girls", "child", "children",
    "kid", "kids", "baby", "babies", "toddler", "teenager", "adult", "adults", "elder", "elderly",
    "grandparent", "family", "worker", "workers", "doctor", "doctors", "nurse", "nurses", "teacher",
    "student", "students", "athlete", "athletes", "player", "players", "runner", "cyclist", "pedestrian",
    "pedestrians", "chef", "cook", "farmer", "soldier", "police", "officer", "firefighter", "surgeon",
    "scientist", "engineer", "driver", "pilot", "dancer", "musician", "singer", "shopper", "customer",
    "tourist", "hiker", "swimmer", "skier", "surfer", "skateboarder", "climber", "patient", "face", "faces",
    "portrait", "crowd"
])

SYSTEM = (
    "You write short scene phrases for a text-to-image model that makes training images for an image "
    "classifier. Each phrase continues the words \"A <class>\" and describes one concrete, photographable "
    "scene: what the subject is doing or how it is placed, where, from which viewpoint, in what light. "
    "Spread the phrases widely and evenly: actions and poses; indoor and outdoor settings in many regions and "
    "climates; times of day, seasons, weather and lighting; camera viewpoints and distances (close-up, wide "
    "shot, from above, from below, from behind, at eye level). Avoid a narrow or stereotyped picture of the "
    "class. If the class depicts people, give a balanced spread of age, gender and skin tone across the "
    "phrases. Never repeat the class name, never number the phrases, name no art style."
)
JSON_EXAMPLE = '{"phrases": ["lying down on the kitchen floor", "running along a beach at sunset, seen from above"]}'


class ScenePhrases(BaseModel):
    """The answer the LLM must give (the structured-output schema, and the check of any answer)."""

    model_config = ConfigDict(extra="ignore")

    phrases: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=300)]] = Field(
        min_length=1
    )


def response_format() -> dict[str, Any]:
    """The ``json_schema`` response format for structured output."""
    schema = {
        "type": "object",
        "properties": {"phrases": {"type": "array", "items": {"type": "string"}}},
        "required": ["phrases"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "scene_phrases", "strict": True, "schema": schema}}


def depicts_people(cls: str) -> bool:
    words = re.findall(r"[a-z]+", cls.casefold())
    return any(w in PEOPLE_WORDS or w.rstrip("s") in PEOPLE_WORDS for w in words)


def messages(cls: str, k: int, avoid: list[str], structured: bool) -> list[dict[str, str]]:
    """The chat messages asking for ``k`` phrases for ``cls`` (JSON spelled out when not ``structured``)."""
    lines = [f'Class: "{cls}". Write {k} distinct scene phrases, each one continuing "A {cls} ...".']
    if depicts_people(cls):
        lines.append("This class depicts people: spread age (children, adults, older people), gender and skin "
                     "tone evenly across the phrases, and say them in the phrases.")
    if avoid:
        lines.append("Already written, do not repeat or paraphrase: " + "; ".join(avoid))
    if not structured:
        lines.append(f"Answer with one JSON object and nothing else, in exactly this form: {JSON_EXAMPLE}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n".join(lines)}]


def parse_phrases(text: str | None) -> list[str]:
    """The phrases of a reply (JSON object, bare list, or either inside prose / a code fence).

    Raises ``ValueError`` with a short reason when there is no valid answer.
    """
    if not text or not text.strip():
        raise ValueError("empty reply")
    body = _FENCE.sub("", text.strip())
    data: Any = None
    for candidate in (body, _between(body, "{", "}"), _between(body, "[", "]")):
        if candidate is None:
            continue
        try:
            data = json.loads(candidate)
            break
        except ValueError:
            continue
    else:
        raise ValueError(f"not JSON: {text.strip()[:60]!r}")
    if isinstance(data, list):
        data = {"phrases": data}
    try:
        return ScenePhrases.model_validate(data).phrases
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise ValueError(f"{where}: {first['msg']}") from None


def _between(text: str, left: str, right: str) -> str | None:
    start, end = text.find(left), text.rfind(right)
    return text[start : end + 1] if 0 <= start < end else None


def clean_phrase(phrase: str, cls: str) -> str:
    """A phrase without numbering, quotes, final full stop or a leading "A <class>"."""
    text = _NUMBERING.sub("", normalize_prompt(phrase)).strip(" \"'“”").rstrip(".").strip()
    lowered, own = text.casefold(), cls.casefold()
    for lead in (f"a {own} ", f"an {own} ", f"the {own} ", f"{own} "):
        if lowered.startswith(lead):
            text = text[len(lead):].strip()
            break
    return text


def fill(cls: str, phrase: str) -> str:
    """``TEMPLATE`` filled: "A dalmatian lying on the floor" ("An" before a vowel sound)."""
    text = TEMPLATE.format(cls=cls, phrase=phrase)
    if wants_an(cls):
        text = "An" + text[1:]
    return normalize_prompt(text)


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    return [w for w in re.findall(r"\w+", text) if w not in _ARTICLES]


class Deduper:
    """Keeps the first of every group of same or nearly-same phrases."""

    def __init__(self) -> None:
        self._keys: set[str] = set()
        self._sets: list[frozenset[str]] = []

    def add(self, phrase: str) -> bool:
        """Whether ``phrase`` is new (and now remembered)."""
        words = _words(phrase)
        if not words:
            return False
        key = " ".join(sorted(words))
        bag = frozenset(w for w in words if w not in _LINKS) or frozenset(words)
        if key in self._keys or any(len(bag & s) / len(bag | s) >= NEAR for s in self._sets):
            return False
        self._keys.add(key)
        self._sets.append(bag)
        return True
