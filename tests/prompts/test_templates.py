"""Template packs: loading, validation errors, and balanced deterministic expansion."""

from __future__ import annotations

import hashlib
import itertools
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dalle_data.errors import SpecError
from dalle_data.prompts import PromptItem, builtin_pack_path, expand_prompts, load_pack

REPO_ROOT = Path(__file__).resolve().parents[2]

# Slot values are distinct single words, so a prompt's words tell which were used.
SLOTS = {
    "a": ("alpha", "bravo", "charlie"),
    "b": ("delta", "echo", "foxtrot", "golf", "hotel"),
    "c": ("india", "juliet"),
    "d": ("kilo", "lima", "mike", "november", "oscar", "papa", "quebec"),
}
# Templates with different slot sets: 15 + 35 + 30 + 14 = 94 combinations.
MIXED_PACK = f"""\
name: mixed
slots:
  a: [{", ".join(SLOTS["a"])}]
  b: [{", ".join(SLOTS["b"])}]
  d: [{", ".join(SLOTS["d"])}]
modes:
  vanilla:
    templates:
      - "A {{cls}} {{a}} {{b}}"
      - "A photo of {{cls}} near {{b}} and {{d}}"
      - "{{cls}} {{a}} {{c}} {{b}} scene"
      - "{{cls}} beside {{d}} at {{c}}"
    slots:
      c: [{", ".join(SLOTS["c"])}]
"""
# Every template uses the same slots: 4 * 3 * 5 = 60 combinations.
SAME_SLOTS_PACK = """\
name: same
slots: {a: [alpha, bravo, charlie], b: [delta, echo, foxtrot, golf, hotel]}
modes:
  style:
    templates: ["{cls} {a} {b}", "a {cls} with {a} in {b}", "{b}: {cls} {a}", "{cls}, {a}, {b} style"]
"""


def write_pack(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def slot_counts(items: list[PromptItem], slots: dict[str, tuple[str, ...]]) -> dict[str, Counter[str]]:
    """How often each value of each slot occurs (zero for unused values)."""
    counts = {name: Counter(dict.fromkeys(values, 0)) for name, values in slots.items()}
    for item in items:
        words = set(item.prompt.replace(",", " ").replace(":", " ").split())
        for name, values in slots.items():
            found = [v for v in values if v in words]
            assert len(found) <= 1, item.prompt
            counts[name].update(found)
    return counts


def spread(counter: Counter[str]) -> int:
    return max(counter.values()) - min(counter.values())


def test_default_pack_loads_and_covers_the_three_modes() -> None:
    pack = load_pack()
    assert pack.name == "default"
    assert pack.path == builtin_pack_path()
    assert pack.modes == ("vanilla", "style", "adversarial")
    assert pack.digest == hashlib.sha256(builtin_pack_path().read_bytes()).hexdigest()
    assert "A {cls} {action} {environment}" in pack.templates("vanilla")
    assert len(pack.slots("vanilla")["action"]) >= 15
    assert len(pack.slots("vanilla")["environment"]) >= 20
    assert len(pack.slots("style")["style"]) >= 8
    assert len(pack.slots("adversarial")["object"]) >= 12


def test_default_pack_prompts_are_clean_and_name_the_class() -> None:
    pack = load_pack()
    classes = ["dalmatian", "frisbee", "elephant"]
    items = expand_prompts(pack, classes, pack.modes, 40, seed=3)
    assert len(items) == 3 * 3 * 40
    for item in items:
        assert item.cls in item.prompt
        assert "{" not in item.prompt and "}" not in item.prompt
        assert "  " not in item.prompt and " ," not in item.prompt
        assert item.prompt == item.prompt.strip()
        assert item.source.startswith(f"default:{item.mode}#")
    elephant = [i.prompt for i in items if i.cls == "elephant"]
    assert not any("a elephant" in p.lower() for p in elephant)
    assert any("an elephant" in p.lower() for p in elephant)


def test_same_seed_gives_same_prompts_and_another_seed_changes_them() -> None:
    pack = load_pack()
    first = expand_prompts(pack, ["dalmatian", "frisbee"], ["vanilla", "style"], 25, seed=7)
    again = expand_prompts(pack, ["dalmatian", "frisbee"], ["vanilla", "style"], 25, seed=7)
    other = expand_prompts(pack, ["dalmatian", "frisbee"], ["vanilla", "style"], 25, seed=8)
    assert first == again
    assert [i.prompt for i in first] != [i.prompt for i in other]
    assert {i.prompt for i in first} != {i.prompt for i in other}


def test_prompts_do_not_depend_on_python_hash_seed() -> None:
    code = (
        "from dalle_data.prompts import load_pack, expand_prompts;"
        "print([i.prompt for i in expand_prompts(load_pack(), ['owl'], ['vanilla'], 5, seed=1)])"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(REPO_ROOT)}
        result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        outputs.add(result.stdout)
    assert len(outputs) == 1


def test_result_order_is_class_then_mode_then_stream() -> None:
    pack = load_pack()
    items = expand_prompts(pack, ["zebra", "apple"], ["style", "vanilla"], 3, seed=0)
    assert [(i.cls, i.mode) for i in items] == [
        (c, m) for c in ("zebra", "apple") for m in ("style", "vanilla") for _ in range(3)
    ]


def test_a_class_keeps_its_prompts_when_n_grows_or_classes_change() -> None:
    pack = load_pack()
    small = expand_prompts(pack, ["owl"], ["vanilla"], 10, seed=5)
    large = expand_prompts(pack, ["owl"], ["vanilla"], 30, seed=5)
    with_others = expand_prompts(pack, ["cat", "owl"], ["vanilla"], 10, seed=5)
    assert large[:10] == small
    assert [i for i in with_others if i.cls == "owl"] == small


@pytest.mark.parametrize("n", [5, 12, 23, 36, 47])
def test_each_slot_value_is_used_evenly_across_templates_with_different_slots(tmp_path: Path, n: int) -> None:
    pack = load_pack(write_pack(tmp_path, MIXED_PACK))
    for seed in range(25):
        items = expand_prompts(pack, ["owl"], ["vanilla"], n, seed)
        assert len(items) == n
        for name, counter in slot_counts(items, SLOTS).items():
            assert spread(counter) <= 1, (seed, name, counter)
        # templates compete for the same slot values here, so they are near-equal rather than exact
        assert spread(Counter(i.source for i in items)) <= 2, seed


@pytest.mark.parametrize("n", [4, 8, 17, 30, 50])
def test_templates_are_used_near_evenly(tmp_path: Path, n: int) -> None:
    pack = load_pack(write_pack(tmp_path, SAME_SLOTS_PACK))
    for seed in range(25):
        items = expand_prompts(pack, ["owl"], ["style"], n, seed)
        templates = Counter(dict.fromkeys((f"same:style#{i}" for i in range(4)), 0))
        templates.update(i.source for i in items)
        # slot balance comes first, so a template may trail by two while others catch up
        assert spread(templates) <= (0 if n == 4 else 2), (seed, templates)
        for name, counter in slot_counts(items, {"a": SLOTS["a"], "b": SLOTS["b"]}).items():
            assert spread(counter) <= 1, (seed, name, counter)


@pytest.mark.parametrize("mode", ["vanilla", "style", "adversarial"])
def test_default_pack_spreads_its_slot_values_evenly(mode: str) -> None:
    pack = load_pack()
    for seed in range(5):
        items = expand_prompts(pack, ["dalmatian"], [mode], 120, seed)
        for name, values in pack.slots(mode).items():
            counter = Counter(dict.fromkeys(values, 0))
            for item in items:
                found = [v for v in values if v in item.prompt]
                if found:  # the longest match, as "in motion" could hide in a longer value
                    counter[max(found, key=len)] += 1
            assert spread(counter) <= 1, (seed, name, counter)


def test_no_two_prompts_repeat_even_when_templates_differ_only_in_case_and_spaces(tmp_path: Path) -> None:
    path = write_pack(
        tmp_path,
        'name: dup\nslots: {a: [red, blue, green]}\nmodes:\n  vanilla:\n    templates: ["A {cls}  {a}", "a {cls} {a} "]\n',
    )
    items = expand_prompts(load_pack(path), ["car"], ["vanilla"], 10, seed=0)
    keys = [" ".join(i.prompt.split()).casefold() for i in items]
    assert sorted(keys) == ["a car blue", "a car green", "a car red"]


def test_small_pack_returns_all_its_combinations_when_n_is_larger(tmp_path: Path) -> None:
    path = write_pack(
        tmp_path,
        "name: tiny\nslots: {a: [x1, x2, x3]}\nmodes:\n  style:\n"
        '    templates: ["{cls} {a}", "{cls} drawn as {a}", "just a {cls}"]\n',
    )
    items = expand_prompts(load_pack(path), ["owl"], ["style"], 50, seed=4)
    expected = {f"owl {v}" for v in ("x1", "x2", "x3")} | {f"owl drawn as {v}" for v in ("x1", "x2", "x3")}
    assert len(items) == 7
    assert {i.prompt for i in items} == expected | {"just an owl"}


def test_custom_pack_mode_slots_override_shared_slots(tmp_path: Path) -> None:
    path = write_pack(
        tmp_path,
        "name: mine\ndescription: test pack\nslots:\n  place: [at home]\n"
        "modes:\n  vanilla:\n    templates: ['The {cls} {place}']\n"
        "  adversarial:\n    templates: ['A {cls}-shaped rock {place}']\n    slots:\n      place: [in the sea]\n",
    )
    pack = load_pack(str(path))
    assert (pack.name, pack.modes, pack.path) == ("mine", ("vanilla", "adversarial"), path)
    items = expand_prompts(pack, ["Owl"], ["adversarial", "vanilla"], 5, seed=0)
    assert items == [
        PromptItem("Owl", "adversarial", "An Owl-shaped rock in the sea", "mine:adversarial#0"),
        PromptItem("Owl", "vanilla", "The Owl at home", "mine:vanilla#0"),
    ]


def test_rendering_normalizes_spaces_and_fixes_articles(tmp_path: Path) -> None:
    path = write_pack(
        tmp_path,
        'name: art\nmodes:\n  vanilla:\n    templates: ["  An {cls} ,  seen\\tfrom above . "]\n',
    )
    pack = load_pack(path)
    prompts = [i.prompt for i in expand_prompts(pack, ["cat", "owl", "unicorn", "hourglass"], ["vanilla"], 1, 0)]
    assert prompts == [
        "A cat, seen from above.",
        "An owl, seen from above.",
        "A unicorn, seen from above.",
        "An hourglass, seen from above.",
    ]


def test_expanding_a_mode_the_pack_lacks_lists_the_modes_it_has(tmp_path: Path) -> None:
    pack = load_pack(write_pack(tmp_path, "name: v\nmodes:\n  vanilla:\n    templates: ['{cls}']\n"))
    with pytest.raises(SpecError, match=r"no mode 'style'.*it has: vanilla"):
        expand_prompts(pack, ["owl"], ["style"], 3, seed=0)


def test_unknown_placeholder_names_file_line_mode_and_template(tmp_path: Path) -> None:
    path = write_pack(
        tmp_path,
        "name: bad\nslots:\n  color: [red]\nmodes:\n  vanilla:\n    templates:\n"
        "      - 'A {cls} in {color}'\n      - 'A {cls} in {colour}'\n",
    )
    with pytest.raises(SpecError) as info:
        load_pack(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path} line 8" in message
    assert "mode 'vanilla', template 1" in message
    assert "'A {cls} in {colour}'" in message and "{colour}" in message


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("name: x\nmodes:\n  vanilla:\n    templates: ['{cls}'\n", 5, "not valid YAML"),
        ("name: x\nmodes:\n  vanilla:\n    templates: ['{cls}']\n  vanilla:\n    templates: ['{cls}']\n", 5, "twice"),
        ("name: x\nmodes:\n  vanilla:\n    templates: ['{cls}']\n    slot: {a: [b]}\n", 5, "unknown key 'slot'"),
        ("name: x\nmodes:\n  vanilla:\n    slots: {}\n", 3, "required key 'templates'"),
        ("name: x\nslots:\n  a: [yes, 'no']\nmodes:\n  vanilla:\n    templates: ['{cls} {a}']\n", 3, "got True; put it in quotes"),
        ("name: x\nslots:\n  a: []\nmodes:\n  vanilla:\n    templates: ['{cls} {a}']\n", 3, "no values"),
        ("name: x\nslots:\n  a: [b, ' B ']\nmodes:\n  vanilla:\n    templates: ['{cls} {a}']\n", 3, "twice"),
        ("name: x\nmodes:\n  variation:\n    templates: ['{cls}']\n", 3, "unknown mode 'variation'"),
        ("name: x\nmodes:\n  vanilla:\n    templates: ['a photo']\n", 4, "does not contain {cls}"),
        ("name: x\nmodes:\n  vanilla:\n    templates: ['{cls!r} {0}']\n", 4, "plain names"),
        ("name: x\nmodes:\n  vanilla:\n    templates: ['{cls} {']\n", 4, "not a valid template"),
        ("name: 'a:b'\nmodes:\n  vanilla:\n    templates: ['{cls}']\n", 1, "pack name"),
    ],
)
def test_invalid_pack_errors_name_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write_pack(tmp_path, text, name="mypack.yaml")
    with pytest.raises(SpecError) as info:
        load_pack(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{path} line {line}" in message
    assert fragment in message


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n"])
def test_pack_that_is_not_a_mapping_is_rejected(tmp_path: Path, text: str) -> None:
    path = write_pack(tmp_path, text)
    with pytest.raises(SpecError, match="must be a YAML mapping"):
        load_pack(path)


def test_directory_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"is a directory; pass a template pack \.yaml file"):
        load_pack(tmp_path)
    with pytest.raises(SpecError, match="not found"):
        load_pack(tmp_path / "missing.yaml")


def test_every_combination_of_a_mode_is_reachable(tmp_path: Path) -> None:
    pack = load_pack(write_pack(tmp_path, MIXED_PACK))
    items = expand_prompts(pack, ["owl"], ["vanilla"], 1000, seed=9)
    expected = {f"An owl {a} {b}" for a, b in itertools.product(SLOTS["a"], SLOTS["b"])}
    assert len(items) == len({i.prompt for i in items}) == 94
    assert expected <= {i.prompt for i in items}


def test_a_slot_value_that_is_the_class_itself_is_skipped(tmp_path: Path) -> None:
    path = write_pack(
        tmp_path,
        "name: neg\nmodes:\n  adversarial:\n    templates: ['A {cls}-like {object}', 'A {object} shaped like a {cls}']\n"
        "    slots:\n      object: [umbrella, car]\n",
    )
    items = expand_prompts(load_pack(path), ["Umbrella"], ["adversarial"], 10, seed=0)
    assert sorted(i.prompt for i in items) == ["A car shaped like an Umbrella", "An Umbrella-like car"]
