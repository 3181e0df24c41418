"""The contract every generator backend passes, for a plug-in's own tests to reuse.

A plug-in's test module subclasses ``BackendContract`` and says which backend it tests::

    from dalle_data.testing import BackendContract

    class TestMyBackend(BackendContract):
        backend_name = "mybackend"       # its entry point name (dalle_data.backends)
        model = "my-tiny-model"          # small and offline: a test model, not real weights
        spec_values = {"options": {}}    # anything else its spec needs

pytest then runs every ``test_*`` method below against a generator the backend's own loader builds from a
spec (``generator`` fixture; override it to build the generator another way). Capability-specific checks run
only for the capabilities the generator declares; determinism only for a ``reproducible`` backend.

dalle-data's suite runs this contract over its built-in tiny backend (``tests/backends/test_contract_mixin.py``).
Needs pytest (a test dependency); nothing here is imported by dalle-data itself.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from dalle_data.backends import BACKENDS, Backend, Options, check_modes, function_at
from dalle_data.config import RunSpec, build_spec
from dalle_data.generators.base import (
    CAPABILITY_PROTOCOLS,
    Defect,
    GenerationSettings,
    Refusal,
    TextToImage,
    capabilities_of,
    missing_protocols,
)
from dalle_data.generators.registry import resolve_settings
from dalle_data.modes import MODES

PROMPTS = ("a cat on a beach", "a dog in the snow", "a red car at night")
SEEDS = (11, 2**62 + 5, 7)


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def source_images(count: int = 3, size: int = 48) -> list[Image.Image]:
    """Fixed noise pictures: the sources of the variation, fuse and inpaint checks."""
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


def centre_mask(size: int = 48) -> Image.Image:
    """A white square in the middle of a black ``size``² mask (white: repaint)."""
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 255
    return Image.fromarray(mask, mode="L")


class BackendContract:
    """Checks one backend's record and generator against what dalle-data relies on (see the module docstring).

    Set ``backend_name`` (and usually ``model``); override ``generator`` or ``settings`` when the defaults do
    not suit. ``tolerance`` is the largest pixel difference accepted between an image made alone and the same
    image made in a batch (floating-point noise)."""

    backend_name: ClassVar[str]
    model: ClassVar[str | None] = None  # None: the backend's default model
    spec_values: ClassVar[Mapping[str, Any]] = {}
    tolerance: ClassVar[int] = 2
    device: ClassVar[str] = "cpu"

    # -- what the checks run on ------------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    def record(self) -> Backend:
        if self.backend_name not in BACKENDS:
            pytest.fail(f"no backend {self.backend_name!r} is registered (entry point group dalle_data.backends); "
                        f"there are {', '.join(BACKENDS)}")
        return BACKENDS[self.backend_name]

    @pytest.fixture(scope="class")
    def spec(self, record: Backend) -> RunSpec:
        values = {"classes": ["cat"], "per_class": 1, "backend": self.backend_name, "scorer": "tiny",
                  **({"model": self.model} if self.model else {}), **self.spec_values}
        return build_spec(values)

    @pytest.fixture(scope="class")
    def generator(self, record: Backend, spec: RunSpec) -> Any:
        """The generator under test, built by the backend's own loader from ``spec``."""
        return record.load(spec, self.device)

    @pytest.fixture(scope="class")
    def settings(self, generator: Any, spec: RunSpec) -> GenerationSettings:
        """The generator's defaults with what ``spec`` sets (small sizes and few steps keep the checks fast)."""
        return resolve_settings(spec, generator.defaults)

    def needs(self, generator: Any, capability: str) -> None:
        if capability not in capabilities_of(generator):
            pytest.skip(f"{self.backend_name} ({generator.model}) does not declare {capability}")

    def assert_outputs(self, outputs: Sequence[Any], count: int, settings: GenerationSettings) -> list[Image.Image]:
        assert isinstance(outputs, list) and len(outputs) == count, "one output per image asked for"
        for out in outputs:
            assert isinstance(out, Image.Image | Defect | Refusal), f"an output is a {type(out).__name__}"
        images = [out for out in outputs if isinstance(out, Image.Image)]
        assert images, "the tiny model made no image at all (every output a Defect or Refusal)"
        return images

    def assert_batch_invariant(self, alone: Image.Image, in_batch: Image.Image) -> None:
        diff = np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(in_batch, dtype=np.int16)).max()
        assert diff <= self.tolerance, f"an image depends on its batch (max pixel difference {diff})"

    # -- the record ------------------------------------------------------------------------------------------
    def test_the_record_is_complete(self, record: Backend) -> None:
        known = {m.capability for m in MODES.values()}
        assert record.name == self.backend_name and record.description and record.default_model
        assert record.capabilities and set(record.capabilities) <= known, record.capabilities
        assert issubclass(record.options, Options)
        for where in (record.loader, record.price):
            assert callable(function_at(where)), f"{where} names no function"
        assert set(record.capable_models) <= set(record.capabilities)

    def test_the_price_model_answers_for_a_dry_run(self, record: Backend, spec: RunSpec) -> None:
        cost = record.cost(spec, 4, 8)
        assert isinstance(cost, dict)

    def test_modes_it_cannot_make_are_refused_when_the_spec_is_checked(self, record: Backend) -> None:
        for mode, info in MODES.items():
            problem = check_modes(self.backend_name, [mode])
            assert (problem is None) == (info.capability in record.capabilities), (mode, problem)

    # -- the generator ---------------------------------------------------------------------------------------
    def test_the_generator_names_itself_and_its_settings(self, generator: Any, record: Backend) -> None:
        assert isinstance(generator.backend, str) and generator.backend
        assert isinstance(generator.model, str) and generator.model
        assert isinstance(generator.defaults, GenerationSettings)
        assert capabilities_of(generator) <= set(record.capabilities), "it declares more than its record"

    def test_every_declared_capability_has_its_protocol(self, generator: Any) -> None:
        assert missing_protocols(generator) == [], (
            f"declared without the method its protocol needs ({', '.join(missing_protocols(generator))}; "
            f"see {', '.join(p.__name__ for p in CAPABILITY_PROTOCOLS.values())} in dalle_data.generators.base)")

    def test_text_to_image_one_output_per_prompt_batch_invariant(self, generator: Any,
                                                                  settings: GenerationSettings) -> None:
        self.needs(generator, "text-to-image")
        assert isinstance(generator, TextToImage)
        batch = generator(list(PROMPTS), list(SEEDS), settings)
        images = self.assert_outputs(batch, len(PROMPTS), settings)
        assert all(im.size == (settings.width, settings.height) for im in images), "images of another size"
        for i in (2, 0):
            alone = generator([PROMPTS[i]], [SEEDS[i]], settings)
            if isinstance(alone[0], Image.Image) and isinstance(batch[i], Image.Image):
                self.assert_batch_invariant(alone[0], batch[i])

    def test_the_same_seed_gives_the_same_image(self, generator: Any, record: Backend,
                                                settings: GenerationSettings) -> None:
        if not record.reproducible:
            pytest.skip(f"{self.backend_name} takes no seed (Backend.reproducible is False)")
        self.needs(generator, "text-to-image")
        first = generator(list(PROMPTS[:2]), list(SEEDS[:2]), settings)
        again = generator(list(PROMPTS[:2]), list(SEEDS[:2]), settings)
        assert [png(im) for im in first] == [png(im) for im in again]
        assert png(first[0]) != png(first[1]), "other prompts and seeds, the same image"

    def test_variation_and_fuse_one_output_per_unit(self, generator: Any, settings: GenerationSettings) -> None:
        self.needs(generator, "variation")
        pics = source_images()
        conditions, weights = [[pics[0]], [pics[1], pics[2]]], [[1.0], [0.5, 0.5]]
        outputs = generator.variation(conditions, weights, list(SEEDS[:2]), settings)
        self.assert_outputs(outputs, 2, settings)
        alone = generator.variation(conditions[:1], weights[:1], list(SEEDS[:1]), settings)
        if isinstance(alone[0], Image.Image) and isinstance(outputs[0], Image.Image):
            self.assert_batch_invariant(alone[0], outputs[0])

    def test_inpaint_one_output_per_unit(self, generator: Any, settings: GenerationSettings) -> None:
        self.needs(generator, "inpaint")
        pics, mask = source_images(2), centre_mask()
        outputs = generator.inpaint(pics, [mask, mask], list(PROMPTS[:2]), list(SEEDS[:2]), settings)
        self.assert_outputs(outputs, 2, settings)
