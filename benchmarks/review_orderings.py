"""Which review order finds wrong-class images first? Measured on the shapes-demo model.

A run of the bundled shapes-demo model is generated twice (with the zero-shot filter, as
users run it, and without it, where many more wrong images are kept); the bundled judge
(a CNN trained on renders only, 100% on held-out renders, independent of the CLIP) says
which kept images are not their label. For each review order, the number of wrong images
among the first 16 and 40 shown, beside what a random order finds on average.

    .venv/bin/python benchmarks/review_orderings.py [--per-class 24]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
FIRST = (16, 40)


def measure(out: Path, judge: Any) -> dict[str, Any]:
    from PIL import Image

    from dalle_data.review.orderings import prepare
    from dalle_data.review.run import load_run
    from dalle_data.review.selection import SelectionOptions, select

    run = load_run(out)
    kept = [r for r in run.reviewable()]
    images = [Image.open(out / "imagefolder" / "train" / r.class_dir / f"{r.id}.png").convert("RGB") for r in kept]
    wrong = {r.id for r, p in zip(kept, judge.predict(images)) if p != (r.imitates or r.label)}
    rows: dict[str, Any] = {"kept": len(kept), "wrong": len(wrong)}
    for order in ("clip", "prob", "margin"):
        opts = SelectionOptions(lowest=max(FIRST), order=order)
        values, groups = prepare(run, opts, kept)
        shown = [item.record.id for item in select(kept, opts, run.labels, values, groups)]
        rows[order] = [sum(i in wrong for i in shown[:k]) for k in FIRST]
    rows["random (expected)"] = [round(len(wrong) * min(k, len(kept)) / max(len(kept), 1), 1) for k in FIRST]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from dalle_data.config import build_spec
    from dalle_data.demo.train import Judge
    from dalle_data.demo.world import CLASSES
    from dalle_data.generators import load_generator
    from dalle_data.generators.registry import shapes_demo_dir
    from dalle_data.job import run_generate
    from dalle_data.progress import NullProgress
    from dalle_data.scoring import load_scorer

    generator, scorer = load_generator("shapes-demo"), load_scorer("shapes-demo")
    judge = Judge.load(shapes_demo_dir() / "judge.safetensors")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, filt in (("zero-shot filter", "zero-shot"), ("no filter", "none")):
            out = Path(tmp) / filt
            spec = build_spec({"classes": list(CLASSES), "model": "shapes-demo", "out": out, "per_class": args.per_class,
                               "modes": {"vanilla": 0.75, "style": 0.25}, "filter": filt, "formats": ["imagefolder"],
                               "max_attempts": args.per_class * 2, "batch_size": 16})
            run_generate(spec, progress=NullProgress(), generator=generator, scorer=scorer)
            results[name] = measure(out, judge)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"# shapes-demo, {len(CLASSES)} classes x {args.per_class}; wrong = the judge disagrees with the label")
    print(f"{'run':<18} {'order':<18} " + " ".join(f"{'first ' + str(k):>9}" for k in FIRST) + "   (kept, wrong)")
    for name, rows in results.items():
        for order in ("clip", "prob", "margin", "random (expected)"):
            print(f"{name:<18} {order:<18} " + " ".join(f"{v:>9}" for v in rows[order])
                  + f"   ({rows['kept']}, {rows['wrong']})")


if __name__ == "__main__":
    main()
