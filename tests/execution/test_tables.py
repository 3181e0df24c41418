"""One table of modes, one registry of backends, every spec field reachable from a flag or a spec file."""

from __future__ import annotations

import pytest

from dalle_data.backends import BACKENDS, check_modes
from dalle_data.config import RunSpec, build_spec
from dalle_data.modes import MODES


def test_every_spec_field_is_reachable_from_a_flag_or_a_spec_file(tmp_path) -> None:
    import typer

    from dalle_data.cli import app
    from dalle_data.config import SPEC_FILE_ONLY, load_config

    command = typer.main.get_command(app).commands["generate"]  # type: ignore[attr-defined]
    flags = {opt for param in command.params for opt in getattr(param, "opts", [])}
    unreached = []
    for field in RunSpec.model_fields:
        flag = "--" + field.replace("_", "-")
        aliases = {"from_dir": "--from", "formats": "--format", "modes": "--mode", "width": "--size",
                   "height": "--size", "json_output": "--json", "options": "--option",
                   "learner": "--select"}  # --select uncertain:PATH
        if flag in flags or aliases.get(field) in flags:
            continue
        unreached.append(field)
    assert set(unreached) <= SPEC_FILE_ONLY, f"fields without a flag: {sorted(set(unreached) - SPEC_FILE_ONLY)}"
    for field in SPEC_FILE_ONLY:  # and those really can be set in a spec file
        spec = tmp_path / f"{field}.yaml"
        value = {"negative_label": "other", "split": "validation"}[field]
        spec.write_text(f"classes: [cat]\nper_class: 1\n{field}: {value}\n")
        assert getattr(build_spec(load_config(spec)), field) == value


def test_the_mode_table_drives_what_a_mode_needs() -> None:
    assert {m.name for m in MODES.values() if m.hard_negative} == {"adversarial"}
    assert {m.name: m.sources for m in MODES.values() if m.image} == {"variation": 1, "fuse": 2, "inpaint": 1}


def test_a_backend_refuses_modes_it_cannot_do_and_names_those_that_can(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.backends.toy_backend import TOY

    monkeypatch.setitem(BACKENDS, "toy", TOY)  # text-to-image only
    message = check_modes("toy", {"vanilla": 0.5, "fuse": 0.5})
    assert message == "the toy backend cannot do fuse; use --backend diffusers or openai for fuse"
    assert check_modes("diffusers", dict.fromkeys(MODES, 1.0)) is None
    with pytest.raises(Exception, match="cannot do variation"):
        build_spec({"classes": ["cat"], "per_source": 1, "modes": ["variation"], "from_dir": "x",
                    "backend": "toy"})
    assert all(b.default_model for b in BACKENDS.values())


def test_a_model_that_cannot_inpaint_is_refused_before_the_run(tmp_path, tiny_generator, tiny_scorer) -> None:
    from dalle_data.errors import SpecError
    from dalle_data.job import run_generate

    photos = tmp_path / "photos" / "cat"
    photos.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (32, 32), (10, 200, 10)).save(photos / "a.png")
    tiny_generator.set_inpaint(None, None)  # no inpainting decoder
    try:
        with pytest.raises(SpecError, match="cannot do inpaint"):
            run_generate(build_spec({"classes": ["cat"], "per_source": 1, "modes": ["inpaint"],
                                     "from_dir": str(tmp_path / "photos"), "model": "tiny",
                                     "out": str(tmp_path / "o")}), generator=tiny_generator, scorer=tiny_scorer)
    finally:
        from dalle_data.generators.tiny import build_tiny_generator

        tiny_generator.set_inpaint(build_tiny_generator().inpaint_decoder)
    assert not (tmp_path / "o").exists()
