"""Expanding a template pack into prompts: balanced, de-duplicated, seeded.

The expansion of one (class, mode) is a seeded stream (a larger ``n``
extends a smaller one) in which the template index counts as one more slot and
every slot hands out its least-used values first: among the prompts that use a
slot, each value is used within one of every other for as long as unused
combinations of least-used values remain (in practice until a mode's
combinations are mostly used up). Templates come out near-evenly; slot balance
wins when the two compete. A text already made is never repeated; the next
least-used combination is taken instead, and when none is left, any unused
combination in a seeded order. A slot value equal to the class is skipped.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

from dalle_data.focus import item_weight, spread
from dalle_data.prompts.templates import CLASS_FIELD, PromptItem, TemplatePack, _Mode, _Template, normalize_prompt

logger = logging.getLogger(__name__)

# Combination spaces up to this size are enumerated when the balanced search
# runs dry; larger ones are sampled at random.
MAX_ENUMERATED = 200_000
_SEARCH_BUDGET = 2_000  # rendered candidates tried per prompt before falling back
_SAMPLE_ATTEMPTS = 2_000  # random draws per prompt in a large, nearly used-up space
_ARTICLE = re.compile(r"(?:^|(?<=[\s(\"']))([Aa])(n?)(\s+)\Z")
_AN_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "ute", "uro", "eu", "ewe", "one", "once")
_AN_SILENT_H = ("hour", "honest", "honor", "honour", "heir")
T = TypeVar("T")


def wants_an(word: str) -> bool:
    w = word.lstrip().lower()
    if w.startswith(_AN_SILENT_H):
        return True
    return bool(w) and w[0] in "aeiou" and not w.startswith(_AN_CONSONANT_SOUND)


def _render(template: _Template, cls: str, values: Mapping[str, str]) -> str:
    """Fill a template; "a"/"an" right before a placeholder follows its value."""
    out: list[str] = []
    for literal, name in template.parts:
        if name is None:
            out.append(literal)
            continue
        value = cls if name == CLASS_FIELD else values[name]
        match = _ARTICLE.search(literal)
        if match:
            article = ("An" if match.group(1) == "A" else "an") if wants_an(value) else match.group(1)
            literal = literal[: match.start()] + article + match.group(3)
        out.append(literal)
        out.append(value)
    return normalize_prompt("".join(out))


def render_template(pack: TemplatePack, mode: str, cls: str, values: Mapping[str, str]) -> list[str]:
    """Every template of ``mode`` whose fields ``values`` fill, filled with ``cls`` and ``values``."""
    return [_render(t, cls, values) for t in pack._mode(mode).templates if set(t.fields) <= set(values)]


def _derive_seed(*parts: object) -> int:
    blob = json.dumps([str(p) for p in parts], ensure_ascii=False).encode("utf-8")
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


class _Balancer(Generic[T]):
    """Hands out values least-used first; ties in an order reshuffled per round."""

    def __init__(self, values: Sequence[T], rng: random.Random) -> None:
        self._values = list(values)
        self._rng = rng
        self._counts = dict.fromkeys(self._values, 0)
        self._retired: set[T] = set()
        self._level = -1
        self._order: list[T] = []

    def ranked(self, least_only: bool, spent: Callable[[T], int] | None = None) -> list[T]:
        """Live values, least-used first (only those if ``least_only``).

        Among equally used values, those ``spent`` for more templates come
        first (leaving the others to the templates that still need them),
        then the order of the current round.
        """
        live = [v for v in self._values if v not in self._retired]
        if not live:
            return []
        level = min(self._counts[v] for v in live)
        if level != self._level:
            self._level = level
            self._order = self._rng.sample(self._values, len(self._values))
        ordered = [v for v in self._order if v not in self._retired]
        ranked = sorted(ordered, key=lambda v: (self._counts[v], -spent(v) if spent else 0))
        return [v for v in ranked if self._counts[v] == level] if least_only else ranked

    def use(self, value: T) -> None:
        self._counts[value] += 1

    def retire(self, value: T) -> None:
        self._retired.add(value)


class _ModeStream:
    """The endless-until-exhausted, deterministic prompt stream of one (class, mode)."""

    def __init__(self, table: _Mode, cls: str, seed: int) -> None:
        self.table, self.cls = table, cls

        def rng(key: str) -> random.Random:
            return random.Random(_derive_seed(seed, cls, table.name, key))

        self.templates: _Balancer[int] = _Balancer(range(len(table.templates)), rng("template"))
        # A value that is the class itself ("an umbrella-like umbrella") would mislabel images.
        own = normalize_prompt(cls).casefold()
        self.values = {
            name: tuple(v for v in values if normalize_prompt(v).casefold() != own)
            for name, values in table.slots.items()
        }
        self.slots = {name: _Balancer(values, rng(f"slot:{name}")) for name, values in self.values.items()}
        self.sizes = [math.prod(len(self.values[f]) for f in t.fields) for t in table.templates]
        self.total = sum(self.sizes)
        self.made = [0] * len(table.templates)
        self.pair_uses: Counter[tuple[int, str, str]] = Counter()
        # spent[slot][value]: live templates that have used every combination with that value
        self.spent: dict[str, Counter[str]] = {name: Counter() for name in table.slots}
        self.seen: set[str] = set()
        self.fallback_rng = rng("fallback")
        self.fallback_order: Iterator[int] | None = None
        for index, size in enumerate(self.sizes):
            if size == 0:
                self.templates.retire(index)

    def __iter__(self) -> Iterator[tuple[int, str]]:
        for index, _, text in self.with_values():
            yield index, text

    def with_values(self) -> Iterator[tuple[int, dict[str, str], str]]:
        """The stream, each prompt with its template index and slot values."""
        while True:
            pick = self._balanced_pick() or self._fallback_pick()
            if pick is None:
                return
            index, values, text = pick
            self.seen.add(text.casefold())
            self.templates.use(index)
            self.made[index] += 1
            for name, value in values.items():
                self.slots[name].use(value)
                self.pair_uses[index, name, value] += 1
                if self.pair_uses[index, name, value] == self.sizes[index] // len(self.values[name]):
                    self.spent[name][value] += 1
            if self.made[index] >= self.sizes[index]:
                self.templates.retire(index)
                for name in self.table.templates[index].fields:
                    self.spent[name].subtract(self.values[name])
            yield index, values, text

    def _candidates(self, least_only: bool) -> Iterator[tuple[int, dict[str, str], str]]:
        """Combinations with templates least-used first, then values (least-used only if asked)."""
        choices = {
            name: slot.ranked(least_only, self.spent[name].__getitem__) for name, slot in self.slots.items()
        }
        for index in self.templates.ranked(least_only=False):
            template = self.table.templates[index]
            for combo in itertools.product(*(choices[f] for f in template.fields)):
                values = dict(zip(template.fields, combo))
                yield index, values, _render(template, self.cls, values)

    def _balanced_pick(self) -> tuple[int, dict[str, str], str] | None:
        """The first unused combination of least-used values, else of any values, least-used first."""
        for least_only in (True, False):
            for pick in itertools.islice(self._candidates(least_only), _SEARCH_BUDGET):
                if pick[2].casefold() not in self.seen:
                    return pick
        return None

    def _fallback_pick(self) -> tuple[int, dict[str, str], str] | None:
        """Any unused combination: a seeded full order if small, random draws if large."""
        if self.total <= MAX_ENUMERATED:
            if self.fallback_order is None:
                self.fallback_order = iter(self.fallback_rng.sample(range(self.total), self.total))
            numbers: Iterator[int] = self.fallback_order
        else:
            numbers = (self.fallback_rng.randrange(self.total) for _ in range(_SAMPLE_ATTEMPTS))
        for number in numbers:
            pick = self._decode(number)
            if pick[2].casefold() not in self.seen:
                return pick
        return None

    def _decode(self, number: int) -> tuple[int, dict[str, str], str]:
        """Combination ``number`` of the pack's combinations, counted template by template."""
        index = 0
        while number >= self.sizes[index]:
            number -= self.sizes[index]
            index += 1
        template = self.table.templates[index]
        values: dict[str, str] = {}
        for name in template.fields:
            number, digit = divmod(number, len(self.values[name]))
            values[name] = self.values[name][digit]
        return index, values, _render(template, self.cls, values)


def expand_prompts(
    pack: TemplatePack, classes: Sequence[str], modes: Sequence[str], n: int, seed: int
) -> list[PromptItem]:
    """Up to ``n`` distinct prompts per class and mode, ordered class, mode, stream.

    Deterministic for (pack, classes, modes, n, seed); a class's prompts do not
    depend on the other classes, and a larger ``n`` extends a smaller one.
    Prompts spread evenly over templates and slot values (see the module
    docstring). When the pack has fewer than ``n`` distinct prompts for a class
    and mode, all of them are returned.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    tables = [pack._mode(mode) for mode in modes]
    items: list[PromptItem] = []
    for cls in classes:
        for table in tables:
            stream = _ModeStream(table, cls, seed)
            before = len(items)
            for index, text in itertools.islice(stream, n):
                items.append(PromptItem(cls, table.name, text, f"{pack.name}:{table.name}#{index}"))
            if len(items) - before < n:
                logger.info(
                    "template pack %r has only %d distinct %s prompts for %r (asked for %d)",
                    pack.name, len(items) - before, table.name, cls, n,
                )
    return items


def expand_focused(
    pack: TemplatePack, classes: Sequence[str], modes: Sequence[str], n: int, seed: int,
    focus: Mapping[str, object],
) -> list[PromptItem]:
    """``expand_prompts`` spent by a focus (``dalle_data.focus``): ``n`` prompts per class and mode.

    A class the focus gives no weights or contrasts gets exactly its
    ``expand_prompts`` stream. Otherwise the class's distinct prompts (its
    stream, up to ``max(n, 4 × values)``) are dealt ``n`` times by their
    weight (the product of their slot values' weights; ``focus.spread``:
    interleaved, deterministic), so a prompt may repeat (its images still
    differ: a unit's seed follows its index). The class's contrast prompts
    join its first text mode (vanilla when it has it), each list with its
    share of that mode's prompts (style when there is no vanilla; never the
    hard negatives of adversarial).
    """
    entries = focus.get("classes", {})
    assert isinstance(entries, Mapping)
    items: list[PromptItem] = []
    for cls in classes:
        entry = entries.get(cls) or {}
        weights = entry.get("weights") or {}
        contrasts = entry.get("contrasts") or []
        if not weights and not contrasts:
            items += expand_prompts(pack, [cls], modes, n, seed)
            continue
        contrast_mode = next((m for m in ("vanilla", "style") if m in modes), None)  # never hard negatives
        for mode in modes:
            table = pack._mode(mode)
            stream = _ModeStream(table, cls, seed)
            width = max((len(v) for v in stream.values.values()), default=1)
            made = list(itertools.islice(stream.with_values(), max(n, 4 * width)))
            texts = [PromptItem(cls, mode, text, f"{pack.name}:{mode}#{index}") for index, _, text in made]
            shares = [item_weight(values, weights) for _, values, _ in made]
            own = contrasts if mode == contrast_mode else []
            rest = 1.0 - sum(float(c["share"]) for c in own)
            whole = sum(shares)
            if whole <= 0 and not own:
                raise ValueError(f"focus: every {mode} prompt of {cls!r} has weight 0")
            shares = [rest * w / whole for w in shares] if whole > 0 else [0.0] * len(shares)
            for c in own:
                other = c.get("mistaken_for")
                source = "focus:contrast" + (f":{other}" if other else "")
                for prompt in c["prompts"]:
                    texts.append(PromptItem(cls, mode, normalize_prompt(prompt), source))
                    shares.append(float(c["share"]) / len(c["prompts"]))
            items += spread(texts, shares, n)
    return items
