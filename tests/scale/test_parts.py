"""--shard i/n: every i/n combination covers the plan exactly once; parts merge into one dataset."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from dalle_data.execution.parts import Part, assign, split
from dalle_data.execution.plan import SlotPlan
from dalle_data.errors import SpecError
from tests.conftest import FAST


def slots(n_classes: int, modes: dict[str, int], rng: random.Random) -> list[SlotPlan]:
    out = []
    for c in range(n_classes):
        for mode, share in modes.items():
            target = max(1, share * rng.randint(1, 40))
            out.append(SlotPlan(cls=f"class{c}", mode=mode, label=f"class{c}", label_id=c, class_dir=f"class{c}",
                                hard_negative=False, target=target, budget=5 * target, prompts=(), run_seed=0))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_any_split_covers_every_slot_exactly_once(seed: int) -> None:
    rng = random.Random(seed)
    whole = slots(rng.randint(1, 30), rng.choice([{"vanilla": 1}, {"vanilla": 3, "style": 1}, {"a": 1, "b": 2, "c": 1}]),
                  rng)
    n = rng.choice([1, 2, 3, 4, 7, 16, 64])
    parts = assign(split(whole, n), n)
    assert len(parts) == n
    dealt = [s for part in parts for s in part]
    for slot in whole:
        subs = [s for s in dealt if (s.cls, s.mode) == (slot.cls, slot.mode)]
        assert sum(s.target for s in subs) == slot.target and sum(s.budget for s in subs) == slot.budget
        stride = subs[0].stride
        assert sorted(s.sub for s in subs) == list(range(stride)) and all(s.stride == stride for s in subs)
        indices = [s.index(k) for s in subs for k in range(3 * slot.target)]
        assert len(indices) == len(set(indices)), "two sub-slots would make the same unit"
        homes = [i for i, part in enumerate(parts) for s in part if (s.cls, s.mode) == (slot.cls, slot.mode)]
        assert len(homes) == len(set(homes)) or n < stride, "sub-slots of one slot share a part"
    fair = -(-sum(s.target for s in whole) // n)
    assert all(s.target <= fair or s.stride == n for s in dealt)
    assert parts == assign(split(whole, n), n), "the same split on every machine"


def test_part_syntax() -> None:
    assert (Part.parse("3/10"), Part.parse("3-of-10")) == (Part(3, 10), Part(3, 10))
    for bad in ("10/10", "-1/4", "3", "a/b", "0/0"):
        with pytest.raises(SpecError):
            Part.parse(bad)


def cli_run(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    from tests.warm_cli import dalle_data_command  # a process of its own, forked warm

    command, full_env = dalle_data_command({**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    return subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=600, env=full_env)


def ids(out: Path) -> list[str]:
    return sorted(json.loads(x)["id"] for x in (out / "manifest.jsonl").read_text().splitlines())


SPEC = [*FAST, "--classes", "zeta,alpha,beta", "--per-class", "6", "--mode", "vanilla=2,style=1", "--filter", "none",
        "--format", "parquet", "--format", "imagefolder", "--batch-size", "2", "--quiet"]


@pytest.mark.slow
def test_parts_merge_into_the_unsharded_dataset(tmp_path: Path, cli) -> None:
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert cli("generate", *SPEC, "--out", whole).exit_code == 0
    for i in range(3):
        assert cli("generate", *SPEC, "--out", sharded, "--shard", f"{i}/3").exit_code == 0
    merged = cli("merge", sharded, "--json")
    assert merged.exit_code == 0, merged.stderr
    summary = json.loads(merged.stdout)
    assert summary["parts"] == 3 and summary["complete"] and summary["kept"] == 18
    assert ids(sharded) == ids(whole)  # no slot was split: the same units as one run makes
    assert json.loads((sharded / "labels.json").read_text()) == json.loads((whole / "labels.json").read_text())
    assert cli("verify", sharded).exit_code == 0


@pytest.mark.slow
def test_a_split_slot_keeps_exact_quotas_no_duplicates_and_is_deterministic(tmp_path: Path, cli) -> None:
    spec = [*FAST, "--classes", "zeta", "--per-class", "9", "--filter", "none", "--format", "parquet",
            "--batch-size", "2", "--quiet"]
    made = []
    for run in ("a", "b"):
        out = tmp_path / run
        for i in range(3):
            assert cli("generate", *spec, "--out", out, "--shard", f"{i}/3").exit_code == 0
        summary = json.loads(cli("merge", out, "--json").stdout)
        assert summary["classes"]["zeta"]["kept"] == 9 and summary["complete"]
        made.append(ids(out))
        assert len(made[-1]) == len(set(made[-1]))
        shards = {json.loads(x)["shard"][:12] for x in (out / "manifest.jsonl").read_text().splitlines()}
        assert len(shards) == 3, "each part made a third"
    assert made[0] == made[1]


@pytest.mark.slow
def test_an_unfinished_part_is_named_with_its_command_and_can_be_rerun_alone(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    assert cli("generate", *SPEC, "--out", out, "--shard", "0/3").exit_code == 0
    killed = cli_run("generate", *SPEC, "--out", out, "--shard", "1/3", env={"DALLE_DATA_FAULT": "shard_marker:1"})
    assert killed.returncode == -signal.SIGKILL
    refused = cli("merge", out)
    assert refused.exit_code == 2
    line = refused.stderr.strip()
    assert "2 of 3 part(s)" in line and f"--resume {out} --shard 1/3" in line and "--shard 2/3" in line
    for i in (1, 2):
        assert cli("generate", *SPEC, "--out", out, "--shard", f"{i}/3").exit_code == 0
    again = cli("generate", *SPEC, "--out", out, "--json")  # the next unsharded generate merges
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["parts"] == 3 and (out / "_SUCCESS").is_file()


def test_parts_of_another_split_and_parts_joining_an_unsharded_run_are_refused(tmp_path: Path, cli) -> None:
    out = tmp_path / "out"
    assert cli("generate", *SPEC, "--out", out, "--shard", "0/2").exit_code == 0
    other = cli("generate", *SPEC, "--out", out, "--shard", "0/3")
    assert other.exit_code == 2 and "split into 2 parts" in other.stderr
    single = tmp_path / "single"
    assert cli("generate", *SPEC, "--out", single).exit_code == 0
    joined = cli("generate", *SPEC, "--out", single, "--shard", "0/2")
    assert joined.exit_code == 2 and "unsharded run" in joined.stderr
