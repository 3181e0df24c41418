"""Template packs: YAML prompt templates with slots, and their expansion.

A pack (``templates/default.yaml`` is built in) holds templates per mode, such
as ``"A {cls} {action} {environment}"``, and the values each slot may take.
``load_pack`` validates it at load time; ``expand_prompts`` turns classes into
prompts. The expansion of one (class, mode) is a seeded stream (a larger ``n``
extends a smaller one) in which the template index counts as one more slot and
every slot hands out its least-used values first, so each value is used within
one of every other among the prompts that use that slot. A text already made
is never repeated; the next least-used combination is taken instead, and only
when those are used up (small packs) any unused combination in a seeded order.
"""

from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import logging
import math
import random
import re
import reprlib
import string
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dalle_data.errors import SpecError

logger = logging.getLogger(__name__)

KNOWN_MODES: tuple[str, ...] = ("vanilla", "style", "adversarial")
CLASS_FIELD = "cls"
# Combination spaces up to this size are enumerated when the balanced search
# runs dry; larger ones are sampled at random.
MAX_ENUMERATED = 200_000
_SEARCH_BUDGET = 2_000  # rendered candidates tried per prompt before falling back
_SAMPLE_ATTEMPTS = 2_000  # random draws per prompt in a large, nearly used-up space
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PACK_NAME = re.compile(r"[\w.-]+\Z")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_ARTICLE = re.compile(r"(?:^|(?<=[\s(\"']))([Aa])(n?)(\s+)\Z")
_AN_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "ute", "uro", "eu", "ewe", "one", "once")
_AN_SILENT_H = ("hour", "honest", "honor", "honour", "heir")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PromptItem:
    """One prompt for one class and mode, and where it came from."""

    cls: str  # class name exactly as the user gave it
    mode: str  # one of KNOWN_MODES
    prompt: str  # the full prompt text
    source: str  # "<pack>:<mode>#<template index>", "file:<name>:<line>", "user", ...


@dataclass(frozen=True, slots=True)
class _Template:
    text: str
    parts: tuple[tuple[str, str | None], ...]  # (literal text, placeholder after it or None)
    fields: tuple[str, ...]  # slot names it uses, without cls, each once


@dataclass(frozen=True, slots=True)
class _Mode:
    name: str
    templates: tuple[_Template, ...]
    slots: Mapping[str, tuple[str, ...]]  # only the slots its templates use


@dataclass(frozen=True)
class TemplatePack:
    """A validated template pack. ``digest`` is the sha256 of the file bytes."""

    name: str
    description: str
    path: Path
    digest: str
    modes: tuple[str, ...]
    _table: Mapping[str, _Mode]

    def templates(self, mode: str) -> tuple[str, ...]:
        """The template texts of ``mode``, in pack order (index = source id)."""
        return tuple(t.text for t in self._mode(mode).templates)

    def slots(self, mode: str) -> dict[str, tuple[str, ...]]:
        """The slot values that ``mode``'s templates use."""
        return dict(self._mode(mode).slots)

    def _mode(self, mode: str) -> _Mode:
        if mode not in self._table:
            raise SpecError(
                f"template pack {self.name!r} ({self.path}) has no mode {mode!r}; "
                f"it has: {', '.join(self.modes)}; pick one of those or add {mode!r} to the pack"
            )
        return self._table[mode]


class _ModeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    templates: list[str] = Field(min_length=1)
    slots: dict[str, list[str]] = Field(default_factory=dict)


class _PackSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    description: str = ""
    slots: dict[str, list[str]] = Field(default_factory=dict)
    modes: dict[str, _ModeSpec] = Field(min_length=1)


def builtin_pack_path() -> Path:
    """The built-in pack, ``templates/default.yaml`` at the repository root."""
    return Path(__file__).resolve().parents[2] / "templates" / "default.yaml"


def load_pack(path: str | Path | None = None) -> TemplatePack:
    """Read and validate a template pack; ``None`` loads the built-in one."""
    file = builtin_pack_path() if path is None else Path(path)
    if file.is_dir():
        raise SpecError(f"{file} is a directory; pass a template pack .yaml file, e.g. templates/default.yaml")
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"template pack {file} not found; pass the path of an existing .yaml pack") from None
    except OSError as exc:
        raise SpecError(f"cannot read template pack {file}: {exc.strerror}; check the path and permissions") from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{file}: not UTF-8 text (byte {exc.start}); save the pack as UTF-8") from exc
    data, root = _parse_yaml(text, str(file))
    ctx = _Context(str(file), root)
    if not isinstance(data, dict):
        raise SpecError(
            f"{file}: a template pack must be a YAML mapping with keys 'name' and 'modes'; see {builtin_pack_path()}"
        )
    try:
        spec = _PackSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(ctx.validation_message(exc)) from None
    pack = _build_pack(spec, ctx, file, hashlib.sha256(raw).hexdigest())
    logger.debug("loaded template pack %r from %s (modes: %s)", pack.name, file, ", ".join(pack.modes))
    return pack


@dataclass(frozen=True, slots=True)
class _Context:
    """Where a pack came from, to point error messages at file and line."""

    file: str
    root: yaml.Node | None

    def at(self, *loc: str | int) -> str:
        """``file line N`` for the deepest key or item of ``loc`` that exists."""
        node, line = self.root, (self.root.start_mark.line + 1 if self.root is not None else None)
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                key, node = next(((k, v) for k, v in node.value if k.value == str(part)), (None, None))
                line = key.start_mark.line + 1 if key is not None else line
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
                node = node.value[part]
                line = node.start_mark.line + 1
            else:
                break
        return f"{self.file} line {line}" if line else self.file

    def validation_message(self, exc: ValidationError) -> str:
        """The first pydantic error as one line: file, line, key path, problem."""
        errors = exc.errors()
        err, loc = errors[0], tuple(p for p in errors[0]["loc"] if p != "[key]")
        if err["type"] == "extra_forbidden":
            model = _PackSpec if len(loc) == 1 else _ModeSpec
            problem = f"unknown key {loc[-1]!r}; allowed keys: {', '.join(model.model_fields)}"
        elif err["type"] == "missing":
            problem, loc = f"required key {loc[-1]!r} is missing", loc[:-1]
        elif err["type"] == "string_type":
            scalar = isinstance(err["input"], (bool, int, float, datetime.date))
            problem = f"expected text, got {reprlib.repr(err['input'])}" + ("; put it in quotes" if scalar else "")
        else:
            problem = err["msg"][0].lower() + err["msg"][1:]
        where = ".".join(str(p) for p in loc) or "top level"
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        return f"{self.at(*loc)}: {where}: {problem}{more}"


def _parse_yaml(text: str, file: str) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree (kept for line numbers); rejects duplicate keys."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file} line {mark.line + 1}" if mark is not None else file
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SpecError(f"{where}: not valid YAML ({problem}); fix the file") from exc
    stack, visited = ([root] if root is not None else []), set()
    while stack:  # aliases may share or nest nodes, hence ``visited``
        node = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, value in node.value:
                stack.append(value)
                if not isinstance(key, yaml.ScalarNode):
                    continue
                if key.value in keys:
                    line = key.start_mark.line + 1
                    raise SpecError(f"{file} line {line}: key {key.value!r} appears twice; keep one")
                keys.add(key.value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return data, root


def _build_pack(spec: _PackSpec, ctx: _Context, file: Path, digest: str) -> TemplatePack:
    if not _PACK_NAME.match(spec.name):
        raise SpecError(f"{ctx.at('name')}: pack name {spec.name!r} may only use letters, digits, '_', '-' and '.'")
    _check_slots(spec.slots, ctx, ("slots",))
    table: dict[str, _Mode] = {}
    for mode, mode_spec in spec.modes.items():
        if mode not in KNOWN_MODES:
            raise SpecError(
                f"{ctx.at('modes', mode)}: unknown mode {mode!r}; a pack's modes are: {', '.join(KNOWN_MODES)}"
            )
        _check_slots(mode_spec.slots, ctx, ("modes", mode, "slots"))
        available = {**spec.slots, **mode_spec.slots}
        templates = tuple(
            _parse_template(text, available, f"{ctx.at('modes', mode, 'templates', i)}: mode {mode!r}, template {i}")
            for i, text in enumerate(mode_spec.templates)
        )
        used = sorted({f for t in templates for f in t.fields})
        table[mode] = _Mode(mode, templates, {f: tuple(available[f]) for f in used})
    return TemplatePack(spec.name, spec.description.strip(), file, digest, tuple(table), table)


def _check_slots(slots: Mapping[str, list[str]], ctx: _Context, loc: tuple[str, ...]) -> None:
    for name, values in slots.items():
        where = ctx.at(*loc, name)
        if not _NAME.match(name) or name == CLASS_FIELD:
            raise SpecError(f"{where}: slot name {name!r} must be a plain name (letters, digits, _) other than 'cls'")
        if not values:
            raise SpecError(f"{where}: slot {name!r} has no values; give it at least one")
        seen: dict[str, int] = {}
        for i, value in enumerate(values):
            key = normalize_prompt(value).casefold()
            if not key:
                raise SpecError(f"{ctx.at(*loc, name, i)}: slot {name!r} has an empty value; remove it")
            if key in seen:
                raise SpecError(f"{ctx.at(*loc, name, i)}: slot {name!r} lists {value!r} twice; keep one")
            seen[key] = i


def _parse_template(text: str, available: Mapping[str, Any], where: str) -> _Template:
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise SpecError(
            f"{where}: {text!r} is not a valid template ({exc}); write a literal brace as {{{{ or }}}}"
        ) from exc
    parts: list[tuple[str, str | None]] = []
    fields: list[str] = []
    for literal, name, spec, conversion in parsed:
        if name is not None and (not _NAME.match(name) or spec or conversion):
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise SpecError(f"{where}: {text!r} has placeholder {shown}; placeholders are plain names like {{cls}}")
        if name is not None and name != CLASS_FIELD and name not in available:
            known = ", ".join(sorted(available)) or "none"
            raise SpecError(
                f"{where}: {text!r} uses unknown placeholder {{{name}}}; define slot {name!r} "
                f"in the pack's or the mode's slots (slots available: {known})"
            )
        parts.append((literal, name))
        if name is not None and name != CLASS_FIELD and name not in fields:
            fields.append(name)
    if all(name != CLASS_FIELD for _, name in parts):
        raise SpecError(f"{where}: {text!r} does not contain {{cls}}; every template must name the class")
    return _Template(text, tuple(parts), tuple(fields))


def normalize_prompt(text: str) -> str:
    """Single spaces, no space before punctuation, no surrounding white space."""
    return _SPACE_BEFORE_PUNCT.sub(r"\1", _SPACES.sub(" ", text)).strip()


def _wants_an(word: str) -> bool:
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
            article = ("An" if match.group(1) == "A" else "an") if _wants_an(value) else match.group(1)
            literal = literal[: match.start()] + article + match.group(3)
        out.append(literal)
        out.append(value)
    return normalize_prompt("".join(out))


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

    def excess(self, value: T) -> int:
        live = [self._counts[v] for v in self._values if v not in self._retired]
        return self._counts[value] - min(live, default=self._counts[value])

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
        self.slots = {name: _Balancer(values, rng(f"slot:{name}")) for name, values in table.slots.items()}
        self.sizes = [math.prod(len(table.slots[f]) for f in t.fields) for t in table.templates]
        self.total = sum(self.sizes)
        self.made = [0] * len(table.templates)
        self.pair_uses: Counter[tuple[int, str, str]] = Counter()
        # spent[slot][value]: live templates that have used every combination with that value
        self.spent: dict[str, Counter[str]] = {name: Counter() for name in table.slots}
        self.seen: set[str] = set()
        self.fallback_rng = rng("fallback")
        self.fallback_order: Iterator[int] | None = None

    def __iter__(self) -> Iterator[tuple[int, str]]:
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
                if self.pair_uses[index, name, value] == self.sizes[index] // len(self.table.slots[name]):
                    self.spent[name][value] += 1
            if self.made[index] >= self.sizes[index]:
                self.templates.retire(index)
                for name in self.table.templates[index].fields:
                    self.spent[name].subtract(self.table.slots[name])
            yield index, text

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
        """The first unused combination of least-used values; else the least unbalanced one."""
        for pick in itertools.islice(self._candidates(least_only=True), _SEARCH_BUDGET):
            if pick[2].casefold() not in self.seen:
                return pick
        fresh = (p for p in itertools.islice(self._candidates(least_only=False), _SEARCH_BUDGET)
                 if p[2].casefold() not in self.seen)
        return min(fresh, key=self._excess, default=None)

    def _excess(self, pick: tuple[int, dict[str, str], str]) -> tuple[int, int, int]:
        """How far above the least-used a combination's values and template are."""
        slots = [self.slots[name].excess(value) for name, value in pick[1].items()]
        return max(slots, default=0), self.templates.excess(pick[0]), sum(slots)

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
            number, digit = divmod(number, len(self.table.slots[name]))
            values[name] = self.table.slots[name][digit]
        return index, values, _render(template, self.cls, values)


def expand_prompts(
    pack: TemplatePack, classes: Sequence[str], modes: Sequence[str], n: int, seed: int
) -> list[PromptItem]:
    """Up to ``n`` distinct prompts per class and mode, ordered class, mode, stream.

    Deterministic for (pack, classes, modes, n, seed); a class's prompts do not
    depend on the other classes, and a larger ``n`` extends a smaller one. When
    the pack has fewer than ``n`` distinct prompts for a class and mode, all of
    them are returned.
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
