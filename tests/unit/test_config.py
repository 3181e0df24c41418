from __future__ import annotations

from pathlib import Path

import pytest

from dalle_data.config import apportion, build_spec, dump_spec, load_config, parse_modes
from dalle_data.errors import SpecError


def spec(**kw):
    return build_spec({"classes": ["cat", "dog"], "per_class": 10, **kw})


def test_modes_accept_lists_shares_and_dicts() -> None:
    assert parse_modes(["vanilla", "style"]) == {"vanilla": 0.5, "style": 0.5}
    assert parse_modes("vanilla=3,adversarial=1") == {"vanilla": 0.75, "adversarial": 0.25}
    assert parse_modes({"style": 2}) == {"style": 1.0}


def test_apportion_is_exact_and_stable() -> None:
    assert apportion(10, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}) == {"a": 4, "b": 3, "c": 3}
    assert sum(apportion(7, {"a": 0.6, "b": 0.4}).values()) == 7


def test_hash_ignores_execution_settings_but_not_content() -> None:
    base = spec()
    assert base.spec_hash() == spec(batch_size=64, device="cpu", out=Path("elsewhere")).spec_hash()
    assert base.spec_hash() != spec(seed=1).spec_hash()
    assert base.spec_hash() != spec(modes="vanilla,style").spec_hash()
    assert base.spec_hash({"templates": "a"}) != base.spec_hash({"templates": "b"})


def test_saved_spec_loads_back_as_the_same_spec(tmp_path: Path) -> None:
    original = spec(modes="vanilla=2,adversarial=1", formats=["parquet", "imagefolder"], min_clip=0.2)
    path = tmp_path / "spec.yaml"
    path.write_text(dump_spec(original, original.spec_hash(), "0.1.0", {"templates": "x"}))
    assert build_spec(load_config(path)) == original


def test_hard_negative_label_may_not_collide_with_a_class() -> None:
    with pytest.raises(SpecError, match="negative_label"):
        build_spec({"classes": ["hard_negative"], "per_class": 1, "modes": "adversarial"})


def test_attempt_budget_defaults_to_five_times_the_quota() -> None:
    assert spec().attempt_budget == 50
    assert spec(max_attempts=12).attempt_budget == 12
