"""``dalle_data.testing.BackendContract``, the contract a plug-in's own tests subclass, run here over the built-in
tiny backend (the diffusers backend's ``tiny`` preset, built offline) and over the toy test backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dalle_data.backends import BACKENDS, Backend
from dalle_data.testing import BackendContract
from tests.backends.toy_backend import TOY


class TestTinyDiffusers(BackendContract):
    backend_name = "diffusers"
    model = "tiny"
    spec_values = {"steps": 2, "prior_steps": 2, "width": 32, "height": 32}


class TestToyBackend(BackendContract):
    backend_name = "toy"

    @pytest.fixture(scope="class")
    def record(self) -> Iterator[Backend]:
        BACKENDS["toy"] = TOY  # registered for this class only (a plug-in's would come from its entry point)
        yield TOY
        del BACKENDS["toy"]


def test_a_capability_declared_without_its_method_is_caught() -> None:
    from dalle_data.generators.base import missing_protocols
    from tests.backends.toy_backend import ToyGenerator

    class Boasting(ToyGenerator):
        capabilities = frozenset({"text-to-image", "inpaint"})

    assert missing_protocols(ToyGenerator("toy-1", 0)) == []
    assert missing_protocols(Boasting("toy-1", 0)) == ["inpaint"]
