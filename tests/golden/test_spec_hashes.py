"""A spec's hash never changes (runs saved before resume), and every field of the spec says its role."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pytest

from tests.golden.spec_specs import hashes

PINNED = json.loads((Path(__file__).with_name("spec_hashes.json")).read_text())


def test_spec_hashes_are_those_main_saved() -> None:
    assert hashes() == PINNED


def test_execution_fields_leave_the_hash_alone_and_content_fields_change_it() -> None:
    from dalle_data.config import RunSpec, build_spec

    base = build_spec({"classes": ["cat"], "per_class": 2, "model": "tiny"})
    for name in RunSpec.execution_fields():
        assert name not in base.content_dict(), name
    assert "seed" in base.content_dict() and "out" not in base.content_dict()
    assert base.spec_hash() == build_spec({"classes": ["cat"], "per_class": 2, "model": "tiny", "device": "cpu",
                                           "batch_size": 7, "out": "x"}).spec_hash()
    assert base.spec_hash() != build_spec({"classes": ["cat"], "per_class": 2, "model": "tiny", "seed": 1}).spec_hash()


def test_a_field_that_does_not_say_its_role_is_refused_at_definition() -> None:
    from dalle_data.config import CONTENT_SINCE_DEFAULT, EXECUTION, RunSpec

    with pytest.raises(TypeError, match="Later.sharpness: annotate it"):
        class Later(RunSpec):  # a new field added without saying whether it decides the dataset
            sharpness: float = 1.0

    class Fine(RunSpec):
        sharpness: Annotated[float, CONTENT_SINCE_DEFAULT] = 1.0
        workers: Annotated[int, EXECUTION] = 2
    assert "sharpness" in Fine.content_fields() and "workers" in Fine.execution_fields()
    # a content field added later is hashed only away from its default: older runs keep their hash
    spec = Fine(classes=("cat",), per_class=2, model="tiny")
    assert "sharpness" not in spec.content_dict() and Fine(classes=("cat",), per_class=2, model="tiny",
                                                          sharpness=2.0).content_dict()["sharpness"] == 2.0
