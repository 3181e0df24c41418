"""Template packs: YAML prompt templates with slots, loaded and validated.

A pack (``templates/default.yaml`` is built in) holds templates per mode, such
as ``"A {cls} {action} {environment}"``, and the values each slot may take.
``load_pack`` validates it at load time (unknown placeholders, modes and keys
are errors that name the file and line); ``expand_prompts`` in ``expand``
turns classes into prompts.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import re
import reprlib
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from dalle_data.errors import SpecError

logger = logging.getLogger(__name__)

KNOWN_MODES: tuple[str, ...] = ("vanilla", "style", "adversarial")
CLASS_FIELD = "cls"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PACK_NAME = re.compile(r"[\w.-]+\Z")
_SPACES = re.compile(r"\s+")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")


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
    _table: Mapping[str, _Mode] = field(repr=False, compare=False)

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
        err, raw_loc = errors[0], errors[0]["loc"]
        loc, value, kind = tuple(p for p in raw_loc if p != "[key]"), err["input"], err["type"]
        if "[key]" in raw_loc:
            problem, loc = f"key {reprlib.repr(value)} must be text; put it in quotes", loc[:-1]
        elif kind == "extra_forbidden":
            model = _PackSpec if len(loc) == 1 else _ModeSpec
            problem = f"unknown key {loc[-1]!r}; allowed keys: {', '.join(model.model_fields)}"
        elif kind == "missing":
            problem, loc = f"required key {loc[-1]!r} is missing", loc[:-1]
        elif kind in ("string_type", "list_type", "dict_type", "model_type"):
            wanted = {"string_type": "text", "list_type": "a list"}.get(kind, "a mapping of keys")
            scalar = kind == "string_type" and isinstance(value, (bool, int, float, datetime.date))
            problem = f"expected {wanted}, got {reprlib.repr(value)}" + ("; put it in quotes" if scalar else "")
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
