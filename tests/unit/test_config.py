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
    assert spec().slot_targets({})[("cat", "vanilla")] == (10, 50)
    assert spec(max_attempts=12).slot_targets({})[("cat", "vanilla")] == (10, 12)
    shared = spec(modes="vanilla=3,style=1", max_attempts=20).slot_targets({})
    assert shared[("dog", "vanilla")] == (8, 15) and shared[("dog", "style")] == (2, 5)


def test_per_source_targets_scale_with_each_class_sources() -> None:
    s = build_spec({"classes": ["cat", "dog"], "per_source": 3, "modes": "variation", "from_dir": "x"})
    assert s.slot_targets({"cat": 2, "dog": 5}) == {("cat", "variation"): (6, 30), ("dog", "variation"): (15, 75)}


@pytest.mark.parametrize(
    ("values", "needle"),
    [({"modes": "variation"}, "--from"), ({"per_class": None, "per_source": 2}, "--per-source applies"),
     ({"per_class": None, "per_source": 2, "modes": "vanilla,variation", "from_dir": "x"}, "text modes need")],
)
def test_image_mode_options_are_checked(values: dict, needle: str) -> None:
    with pytest.raises(SpecError, match=needle):
        spec(**values)
