"""The run spec: everything that decides what a run produces.

A ``RunSpec`` is built from a YAML config file and/or CLI flags (flags win),
validated with pydantic (unknown keys are rejected) and saved beside the
output as ``spec.yaml`` with a hash. The hash covers only what decides the
dataset's content, so the same run resumed on another machine with another
batch size or device is still the same run.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from dalle_data.backends import BACKENDS, check_fields, check_modes
from dalle_data.errors import SpecError
from dalle_data.focus import check_focus, class_quotas, load_focus_file
from dalle_data.llm.client import APIError, check_base_url
from dalle_data.modes import IMAGE_MODES, NAMES as MODE_NAMES, TEXT_MODES
from dalle_data.naming import clean_class_names, duplicate_key
from dalle_data.urls import check_storage_url

__all__ = ["IMAGE_MODES", "MODE_NAMES", "TEXT_MODES", "RunSpec", "build_spec", "load_config", "dump_spec"]
# The format names a spec accepts: the built-in ones (dalle_data.writers.formats.FORMATS holds their records;
# its ``register`` adds the name of any other format here, so a spec can name it).
FORMATS: list[str] = ["parquet", "imagefolder"]

_ALWAYS: Any = object()  # hashed whatever its value
_DEFAULT: Any = object()  # stands for the field's own default


@dataclass(frozen=True)
class Content:
    """A spec field that decides what a run writes: it enters the spec hash.

    ``left_out_at``: a field added after specs were first saved is hashed only when set away from this value
    (``CONTENT_SINCE_DEFAULT``: its default), so a run saved before the field existed keeps its hash and resumes.
    ``unset_as``: a field whose default changed hashes an unset value as the old default, so a run saved with it
    keeps its hash (``guidance_scale`` was 4.0, the value of every model then; unset now means the model's own).
    """

    left_out_at: Any = _ALWAYS
    unset_as: Any = _ALWAYS


@dataclass(frozen=True)
class Execution:
    """A spec field that decides only how or where a run is made (batch size, device, where an API runs, where
    the run is written): left out of the hash, so the same run resumes on another machine or with other limits.
    (The LLM's prompts enter the hash as a digest of what it wrote, not as where it ran.)"""


CONTENT = Content()
CONTENT_SINCE_DEFAULT = Content(left_out_at=_DEFAULT)
EXECUTION = Execution()


def spec_roles(model: type[BaseModel]) -> dict[str, Content | Execution]:
    """Every field's role, read from its annotation; a field that names none (or both) is a ``TypeError``: the
    spec is in two parts, and a new field must say which it belongs to (forgetting is impossible)."""
    roles: dict[str, Content | Execution] = {}
    for name, info in model.model_fields.items():
        marks = [m for m in info.metadata if isinstance(m, Content | Execution)]
        if len(marks) != 1:
            raise TypeError(f"{model.__name__}.{name}: annotate it Annotated[..., CONTENT] (it decides what the run "
                            "writes: hashed; CONTENT_SINCE_DEFAULT for a field added later) or Annotated[..., "
                            "EXECUTION] (how or where the run is made: not hashed) - see dalle_data.config.Content "
                            "and Execution")
        mark = marks[0]
        if isinstance(mark, Content) and mark.left_out_at is _DEFAULT:
            mark = Content(left_out_at=info.get_default(call_default_factory=True), unset_as=mark.unset_as)
        roles[name] = mark
    return roles


class RunSpec(BaseModel):
    """A validated run specification (see ``dalle-data generate --help``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _roles: ClassVar[dict[str, Content | Execution]] = {}  # each field's part: hashed content or execution

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls._roles = spec_roles(cls)  # a subclass's new fields must say their role too

    @classmethod
    def content_fields(cls) -> dict[str, Content]:
        """The fields the hash covers (hashed content), with how each is hashed."""
        return {k: r for k, r in cls._roles.items() if isinstance(r, Content)}

    @classmethod
    def execution_fields(cls) -> frozenset[str]:
        """The fields left out of the hash (unhashed execution)."""
        return frozenset(k for k, r in cls._roles.items() if isinstance(r, Execution))

    classes: Annotated[tuple[str, ...], CONTENT]
    per_class: Annotated[int | None, CONTENT] = Field(default=None, gt=0, le=10_000_000)
    per_source: Annotated[int | None, CONTENT] = Field(default=None, gt=0, le=100_000)
    modes: Annotated[dict[str, float], CONTENT] = Field(default_factory=lambda: {"vanilla": 1.0})
    model: Annotated[str, CONTENT] = "kandinsky-2-2"
    prior: Annotated[str | None, CONTENT] = None
    scorer: Annotated[str, CONTENT] = "auto"
    out: Annotated[Path, EXECUTION] = Path("out")
    formats: Annotated[tuple[str, ...], CONTENT] = ("parquet",)  # names in FORMATS (checked by _formats)
    seed: Annotated[int, CONTENT] = Field(default=0, ge=0, lt=2**63)
    min_clip: Annotated[float | None, CONTENT] = Field(default=None, ge=-1.0, le=1.0)
    filter: Annotated[Literal["zero-shot", "none"], CONTENT] = "zero-shot"
    max_attempts: Annotated[int | None, CONTENT] = Field(default=None, gt=0)
    keep_rejected: Annotated[bool, CONTENT] = False
    templates: Annotated[str | None, CONTENT] = None
    prompts: Annotated[str | None, CONTENT] = None
    batch_size: Annotated[int | Literal["auto"], EXECUTION] = "auto"  # per generator call; auto: probed
    device: Annotated[str, EXECUTION] = "auto"
    dtype: Annotated[Literal["auto", "fp16", "bf16", "fp32"], EXECUTION] = "auto"  # the weights' precision
    executor: Annotated[str, EXECUTION] = Field(default="local", pattern=r"^[a-z][a-z0-9_-]*$")  # a registered name
    ray_address: Annotated[str | None, EXECUTION] = None
    ray_actors: Annotated[int, EXECUTION] = Field(default=2, gt=0, le=10_000)
    ray_gpus: Annotated[float | None, EXECUTION] = Field(default=None, ge=0)
    compile: Annotated[bool, EXECUTION] = False  # torch.compile the denoisers
    width: Annotated[int | None, CONTENT] = Field(default=None, ge=16, le=4096)
    height: Annotated[int | None, CONTENT] = Field(default=None, ge=16, le=4096)
    steps: Annotated[int | None, CONTENT] = Field(default=None, gt=0, le=1000)
    prior_steps: Annotated[int | None, CONTENT] = Field(default=None, ge=2, le=1000)  # the unCLIP prior scheduler needs two
    guidance_scale: Annotated[float | None, Content(unset_as=4.0)] = Field(default=None, ge=0.0, le=50.0)  # None: the model's own
    from_dir: Annotated[str | None, CONTENT] = None
    prompt_weight: Annotated[float, CONTENT] = Field(default=0.0, ge=0.0, le=1.0)
    fuse_weight: Annotated[float, CONTENT] = Field(default=0.5, gt=0.0, lt=1.0)
    mask: Annotated[Literal["border", "center", "random-box"], CONTENT] = "border"
    mask_dir: Annotated[str | None, CONTENT] = None
    negative_label: Annotated[str, CONTENT] = Field(default="hard_negative", min_length=1, max_length=200)
    shard_size: Annotated[int, CONTENT] = Field(default=64, gt=0, le=100_000)
    split: Annotated[str, CONTENT] = Field(default="train", pattern=r"^[A-Za-z0-9_]{1,64}$")  # what datasets accepts as a split name
    # Hosted APIs (the key is never a field: it comes from OPENAI_API_KEY only).
    backend: Annotated[str, CONTENT_SINCE_DEFAULT] = "diffusers"  # a name in dalle_data.backends.BACKENDS
    quality: Annotated[Literal["low", "medium", "high", "auto"] | None, CONTENT_SINCE_DEFAULT] = None
    base_url: Annotated[str | None, EXECUTION] = None
    max_concurrency: Annotated[int, EXECUTION] = Field(default=4, gt=0, le=256)
    openai_batch: Annotated[bool, EXECUTION] = False  # text-to-image through the Batch API
    timeout: Annotated[float, EXECUTION] = Field(default=120.0, gt=0, le=3600)
    max_retries: Annotated[int, EXECUTION] = Field(default=5, ge=0, le=20)
    llm: Annotated[str | None, CONTENT_SINCE_DEFAULT] = None
    llm_base_url: Annotated[str | None, EXECUTION] = None
    llm_prompts: Annotated[int, CONTENT_SINCE_DEFAULT] = Field(default=50, gt=0, le=5000)
    # The backend's own options (``dalle_data.backends``: --option KEY=VALUE), without their defaults.
    options: Annotated[dict[str, Any], CONTENT_SINCE_DEFAULT] = Field(default_factory=dict)
    # Where the images go (``dalle_data.focus``): --focus FILE is read into the spec, so its content is hashed.
    focus: Annotated[dict[str, Any] | None, CONTENT_SINCE_DEFAULT] = None
    # Learner-aware selection (``--select uncertain:PATH``): over-generate ``candidates`` per kept image and keep
    # those the learner (an ONNX classifier, ``scoring.learner``) is least sure of. The learner's file, class
    # order and preprocessing enter the hash as one input digest (``planning``: inputs["learner"]), not by path.
    select: Annotated[Literal["uncertain"] | None, CONTENT_SINCE_DEFAULT] = None
    candidates: Annotated[int, CONTENT_SINCE_DEFAULT] = Field(default=4, ge=2, le=64)
    learner: Annotated[str | None, EXECUTION] = None
    learner_labels: Annotated[str | None, EXECUTION] = None
    learner_size: Annotated[int | None, EXECUTION] = Field(default=None, ge=8, le=4096)
    learner_mean: Annotated[str | None, EXECUTION] = None
    learner_std: Annotated[str | None, EXECUTION] = None

    @model_validator(mode="before")
    @classmethod
    def _backend_model(cls, data: Any) -> Any:
        """Without --model, a backend's own default model; the options checked against the backend's model."""
        if not isinstance(data, dict):
            return data
        name = data.get("backend") or "diffusers"
        chosen = BACKENDS.get(name) if isinstance(name, str) else None
        if chosen is None:
            return data  # the backend's validator names the backends there are
        if not data.get("model"):
            data = {**data, "model": chosen.default_model}
        options = data.get("options")
        if options is not None and not isinstance(options, dict):
            raise ValueError("options must be a mapping of option names to values (--option KEY=VALUE)")
        return {**data, "options": chosen.parse_options(options)}

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"unknown backend {value!r}; choose from {', '.join(BACKENDS)}")
        return value

    @field_validator("batch_size", mode="before")
    @classmethod
    def _batch_size(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        try:
            size = int(value)
        except (TypeError, ValueError):
            raise ValueError("batch size must be a whole number or auto") from None
        if not 0 < size <= 4096 or (isinstance(value, float) and not value.is_integer()):
            raise ValueError("batch size must be between 1 and 4096, or auto")
        return size

    @field_validator("base_url", "llm_base_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        try:
            return None if value is None else check_base_url(value, "the URL")
        except APIError as err:
            raise ValueError(str(err)) from None

    @field_validator("from_dir")
    @classmethod
    def _from_dir(cls, value: str | None) -> str | None:
        try:
            return None if value is None else check_storage_url(value, "the URL")
        except SpecError as err:
            raise ValueError(str(err)) from None

    @field_validator("classes", mode="before")
    @classmethod
    def _classes(cls, value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("classes must be a list of names")
        return tuple(clean_class_names(value))

    @field_validator("modes", mode="before")
    @classmethod
    def _modes(cls, value: Any) -> dict[str, float]:
        return parse_modes(value)

    @field_validator("formats", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else list(value)
        out: list[str] = []
        for item in items:
            for part in str(item).split(","):
                part = part.strip().lower()
                if part and part not in out:
                    out.append(part)
        unknown = [p for p in out if p not in FORMATS]
        if unknown:
            raise ValueError(f"unknown format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
        if not out:
            raise ValueError("at least one format is needed")
        return tuple(out)

    @model_validator(mode="before")
    @classmethod
    def _select_path(cls, data: Any) -> Any:
        """``select: uncertain:PATH`` (the flag's form, also in a spec file) → select and learner. The path
        given with ``--select`` wins over a saved spec's ``learner`` (the same file moved, or a new learner
        for a new run: its bytes decide the spec hash either way)."""
        if isinstance(data, dict) and isinstance(data.get("select"), str) and ":" in data["select"]:
            method, _, path = data["select"].partition(":")
            data = {**data, "select": method, "learner": path or data.get("learner")}
        return data

    @field_validator("learner", "learner_labels")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        """A file the run reads again on resume: named absolutely, so a rerun from elsewhere finds it."""
        return None if value is None else str(Path(value).expanduser().absolute())

    @field_validator("focus", mode="before")
    @classmethod
    def _focus(cls, value: Any) -> dict[str, Any] | None:
        if value is None:
            return None
        return check_focus(load_focus_file(value) if isinstance(value, str | Path) else value)

    @model_validator(mode="after")
    def _checks(self) -> "RunSpec":
        if not self.negative_label.strip():
            raise ValueError("negative_label is empty; name the hard-negative class (default hard_negative)")
        if duplicate_key(self.negative_label) in {duplicate_key(c) for c in self.classes} and "adversarial" in self.modes:
            raise ValueError(
                f"class {self.negative_label!r} collides with the hard-negative label; set negative_label to another name"
            )
        image_modes = [m for m in self.modes if m in IMAGE_MODES]
        if self.per_class is None and self.per_source is None:
            raise ValueError("--per-class N is required (kept images wanted per class), or --per-source K for image modes")
        if self.per_source is not None and self.per_class is not None:
            raise ValueError("give --per-class N or --per-source K, not both")
        if self.per_source is not None and not image_modes:
            raise ValueError("--per-source applies to the image modes (variation, fuse, inpaint)")
        if self.per_class is None and len(image_modes) < len(self.modes):
            raise ValueError("text modes need --per-class N; --per-source K covers only variation, fuse and inpaint")
        if image_modes and not self.from_dir:
            raise ValueError(f"mode {image_modes[0]} needs source images: --from DIR")
        if self.max_attempts is not None and self.per_class is not None and self.max_attempts < self.per_class:
            raise ValueError(f"max_attempts ({self.max_attempts}) must be at least per_class ({self.per_class})")
        if self.focus is not None:
            check_focus(self.focus, self.classes)
            if self.per_class is None:
                raise ValueError("--focus deals --per-class N images by the focus's shares: give --per-class")
            if self.prompts or self.llm:
                raise ValueError("--focus weighs the template pack's prompts; it cannot weigh "
                                 + ("--prompts FILE" if self.prompts else "--llm prompts"))
        self._select_checks()
        self._api_checks()
        return self

    def _select_checks(self) -> None:
        given = self.model_fields_set
        if self.select is None:
            extra = [f for f in ("candidates", "learner", "learner_labels", "learner_size", "learner_mean",
                                 "learner_std") if f in given and getattr(self, f) not in (None, 4)]
            if extra:
                raise ValueError(f"--{extra[0].replace('_', '-')} shapes learner-aware selection: "
                                 "add --select uncertain:PATH (an ONNX classifier)")
            return
        if not self.learner:
            raise ValueError("--select uncertain needs the learner: --select uncertain:PATH (an ONNX classifier)")
        if self.per_class is None:
            raise ValueError("--select keeps the images a learner needs among --per-class N candidates: give "
                             "--per-class (not --per-source)")

    def _api_checks(self) -> None:
        values = self.model_dump()
        defaults = {name: info.default for name, info in type(self).model_fields.items()}
        problem = (check_modes(self.backend, self.modes) or check_fields(self.backend, values, defaults)
                   or BACKENDS[self.backend].check(values))
        if problem:
            raise ValueError(problem)
        if self.llm is not None:
            if self.prompts:
                raise ValueError("--llm writes the prompts; do not combine it with --prompts FILE")
            if "vanilla" not in self.modes and "inpaint" not in self.modes:
                raise ValueError("--llm writes vanilla scene prompts (inpaint uses them too); add --mode vanilla")

    # -- derived values -------------------------------------------------
    def mode_targets(self, total: int) -> dict[str, int]:
        """Split ``total`` over the modes by share (largest remainder, stable order)."""
        return apportion(total, self.modes)

    def slot_targets(self, sources_per_class: dict[str, int]) -> dict[tuple[str, str], tuple[int, int]]:
        """(class, mode) → (target of kept images, attempt budget).

        ``--per-class N`` is split over the modes by share; ``--per-source K``
        makes an image mode's target K per source image of the class. The budget
        is ``--max-attempts`` split the same way, or 5 × the target.
        """
        out: dict[tuple[str, str], tuple[int, int]] = {}
        quotas = class_quotas(self.per_class, self.classes, self.focus) if self.per_class is not None else {}
        for cls in self.classes:
            quota = quotas.get(cls)
            targets = self.mode_targets(quota) if quota is not None else {}
            attempts = self.max_attempts
            if attempts is not None and quota is not None and self.per_class:
                attempts = max(quota, round(attempts * quota / self.per_class))  # a focus scales the budget too
            budgets = self.mode_targets(attempts) if attempts is not None else {}
            for mode in self.modes:
                target = targets.get(mode, 0)
                if self.per_source is not None and mode in IMAGE_MODES and self.per_class is None:
                    target = self.per_source * sources_per_class.get(cls, 0)
                if target:
                    factor = self.candidates if self.select else 1  # --select: K candidates per kept image
                    out[(cls, mode)] = (target, max(budgets.get(mode, 5 * factor * target), target))
        return out

    def content_dict(self) -> dict[str, Any]:
        """The hashed part of the spec (``execution_dict`` is the rest)."""
        return content_of(self.model_dump(mode="json"), type(self))

    def execution_dict(self) -> dict[str, Any]:
        """The unhashed part of the spec: how and where this run is made."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k in self.execution_fields()}

    def spec_hash(self, extra: dict[str, str] | None = None) -> str:
        """Hash of what decides the output (plus digests of input files in ``extra``)."""
        payload = {"spec": self.content_dict(), "inputs": extra or {}}
        blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


RunSpec._roles = spec_roles(RunSpec)


def hashed_value(key: str, value: Any, model: type[RunSpec] | None = None) -> Any:
    """What a dumped spec field's value enters the hash (and run.json) as: an unset field of a changed default
    as its stand-in (``Content.unset_as``)."""
    role = (model or RunSpec)._roles.get(key)
    if value is None and isinstance(role, Content) and role.unset_as is not _ALWAYS:
        return role.unset_as
    return value


def content_of(data: dict[str, Any], model: type[RunSpec] | None = None) -> dict[str, Any]:
    """The fields of a dumped spec that decide what a run produces (what the spec hash covers)."""
    content = (model or RunSpec).content_fields()
    return {k: hashed_value(k, v, model) for k, v in data.items()
            if k in content and not (content[k].left_out_at is not _ALWAYS and v == content[k].left_out_at)}


def parse_modes(value: Any) -> dict[str, float]:
    """Modes as ``{"vanilla": 0.6, "adversarial": 0.4}`` from any accepted form.

    Accepts a dict, a list of ``name`` / ``name=share`` items, or a comma
    separated string of those. Shares are normalized to sum to 1.
    """
    if isinstance(value, dict):
        items = [(str(k), v) for k, v in value.items()]
    else:
        parts: list[str] = []
        for item in [value] if isinstance(value, str) else list(value or []):
            parts.extend(p.strip() for p in str(item).split(",") if p.strip())
        items = []
        for part in parts:
            name, _, share = part.partition("=")
            items.append((name, share or None))
    shares: dict[str, float] = {}
    for name, share in items:
        name = name.strip().lower()
        if name not in MODE_NAMES:
            raise ValueError(f"unknown mode {name!r}; choose from {', '.join(MODE_NAMES)}")
        try:
            weight = 1.0 if share is None else float(share)
        except (TypeError, ValueError):
            raise ValueError(f"mode share {share!r} for {name} is not a number") from None
        if not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"mode share for {name} must be a positive number")
        shares[name] = shares.get(name, 0.0) + weight
    if not shares:
        raise ValueError("at least one mode is needed")
    total = sum(shares.values())
    return {k: v / total for k, v in shares.items()}


def apportion(total: int, shares: dict[str, float]) -> dict[str, int]:
    """Integer split of ``total`` by ``shares`` (largest remainder, ties by order)."""
    raw = {k: total * s for k, s in shares.items()}
    base = {k: math.floor(v) for k, v in raw.items()}
    left = total - sum(base.values())
    order = sorted(shares, key=lambda k: (-(raw[k] - base[k]), list(shares).index(k)))
    for k in order[:left]:
        base[k] += 1
    return base


# Spec fields set only in a spec file (no flag), and flags named otherwise than their field.
SPEC_FILE_ONLY = frozenset({"negative_label", "split"})
FLAG_NAMES = {"from_dir": "--from", "formats": "--format", "modes": "--mode", "width": "--size", "height": "--size",
              "filter": "--filter", "learner": "--select"}


def _one_line(err: ValidationError, as_flags: bool) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    if as_flags and loc in RunSpec.model_fields and loc not in SPEC_FILE_ONLY:
        loc = FLAG_NAMES.get(loc, "--" + loc.replace("_", "-"))
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    more = f" (and {len(err.errors()) - 1} more problem(s))" if len(err.errors()) > 1 else ""
    return f"{loc}: {msg}{more}" if loc else f"{msg}{more}"


# The spec field whose range each sampling default of a model folder (its dalle_data_model.json) must keep.
SETTING_FIELDS = {"width": "width", "height": "height", "num_inference_steps": "steps",
                  "prior_num_inference_steps": "prior_steps", "guidance_scale": "guidance_scale",
                  "prior_guidance_scale": "guidance_scale"}


def setting_problem(key: str, value: Any) -> str | None:
    """Why ``value`` is not a default the flag of sampling setting ``key`` would accept (None: it would)."""
    field = SETTING_FIELDS[key]
    info = RunSpec.model_fields[field]
    flag = FLAG_NAMES.get(field, "--" + field.replace("_", "-"))
    try:
        TypeAdapter(Annotated[info.annotation, info]).validate_python(value, strict=True)
    except ValidationError as err:
        return f"{err.errors()[0]['msg']}, as for {flag}"
    return f"a value is needed, as for {flag}" if value is None else None


def build_spec(values: dict[str, Any], source: str = "options") -> RunSpec:
    """Validate ``values`` into a ``RunSpec``; errors become one-line ``SpecError``s."""
    try:
        return RunSpec(**values)
    except ValidationError as err:
        raise SpecError(f"invalid {source}: {_one_line(err, source == 'options')}") from None
    except SpecError as err:
        raise SpecError(f"invalid {source}: {err}") from None


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML spec file into a dict of spec fields (hyphens allowed in keys)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"cannot read config file {path}: {err}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise SpecError(f"config file {path}{where}: {problem}") from None
    if data is None:
        raise SpecError(f"config file {path} is empty")
    if not isinstance(data, dict):
        raise SpecError(f"config file {path} must be a mapping of spec fields (classes:, per_class:, ...)")
    for key in ("spec_hash", "dalle_data_version", "input_digests"):
        data.pop(key, None)
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def dump_spec(spec: RunSpec, spec_hash: str, version: str, inputs: dict[str, str] | None = None) -> str:
    """The YAML text saved as ``OUT/spec.yaml``; ``--config`` reads it back."""
    data = spec.model_dump(mode="json")
    data = {"dalle_data_version": version, "spec_hash": spec_hash, "input_digests": inputs or {}, **data}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
