"""Seeds are 63-bit: the review state sends them as strings, which JavaScript cannot round."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

from dalle_data.review.selection import SelectionOptions
from dalle_data.review.server import ReviewServer
from dalle_data.review.session import ReviewSession
from tests.review.conftest import lowest_ids
from tests.review.test_server import request

BIG_SEED = 2**53 + 1  # 9007199254740993: the first integer a JavaScript number cannot hold
MAX_SEED = 2**63 - 1


def set_seeds(out: Path, seeds: dict[str, int]) -> None:
    """Rewrite the run's manifest with these seeds (ids → seed)."""
    manifest = out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    for row in rows:
        row["seed"] = seeds.get(row["id"], row["seed"])
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))


def as_javascript_reads_it(text: str) -> object:
    """JSON parsed the way a browser parses it: every number a double."""
    return json.loads(text, parse_int=float)


def test_the_state_json_carries_64_bit_seeds_exactly(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    first, second = lowest_ids(out, 2)
    set_seeds(out, {first: BIG_SEED, second: MAX_SEED})
    srv = ReviewServer(ReviewSession.open(out, SelectionOptions(lowest=3)), port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        status, body, _ = request(srv, "GET", "/api/state")
    finally:
        srv.shutdown()
        srv.server_close()
    assert status == 200
    seeds = {item["id"]: item["seed"] for item in as_javascript_reads_it(body.decode())["items"]}
    assert seeds[first] == "9007199254740993" and seeds[second] == "9223372036854775807"
    manifest = {json.loads(line)["id"]: json.loads(line)["seed"] for line in (out / "manifest.jsonl").read_text().splitlines()}
    assert all(seed == str(manifest[rid]) for rid, seed in seeds.items())  # every seed, as generated


def test_a_decision_answer_carries_the_seed_as_a_string(base_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(base_run, out)
    first = lowest_ids(out, 1)[0]
    set_seeds(out, {first: BIG_SEED})
    session = ReviewSession.open(out, SelectionOptions(lowest=1))
    answer = session.decide(json.dumps({"id": first, "action": "accept"}).encode())
    assert as_javascript_reads_it(json.dumps(answer))["item"]["seed"] == str(BIG_SEED)
