"""Figures of the shapes-demo model, measured on held-out renders of the shapes world.

* the judge's own top-1 on held-out renders (it must be right for the rest to mean anything);
* CLIP zero-shot top-1 on held-out renders (goal >= 95%);
* generator fidelity: the share of vanilla generations that the judge (a small
  CNN trained on renders only, not the CLIP) assigns to the requested class,
  unfiltered (goal >= 60%) and after the CLIP zero-shot filter (goal >= 85%);
* variation: the share of variations of held-out renders that keep the
  source's class (goal >= 80%);
* inpainting: mean |output - source| outside the mask and its feathered
  blend band (0-255; 0 by construction), and the share of border-inpainted
  images (new background) that keep their class;
* linear probe: synthetic-only training, with and without the CLIP filter,
  tested on real renders, beside zero-shot accuracy.

    .venv/bin/python benchmarks/shapes.py [--model shapes-demo] [--per-class 24] [--json]
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


def judge_share(judge: Any, out: Path, status: str, by: str = "label") -> tuple[float, int]:
    """Share of records with ``status`` whose image the judge puts in the record's class."""
    from PIL import Image

    rows = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["status"] == status or (status == "any" and r["status"] in ("kept", "rejected"))]
    images, labels = [], []
    for r in rows:
        base = out / ("imagefolder/train" if r["status"] == "kept" else "rejected/imagefolder")
        images.append(Image.open(base / r["class_dir"] / f"{r['id']}.png").convert("RGB"))
        labels.append(r[by])
    if not images:
        return 0.0, 0
    predicted = judge.predict(images)
    return sum(p == t for p, t in zip(predicted, labels)) / len(labels), len(labels)


def run(model: str, per_class: int, tmp: Path) -> dict[str, Any]:
    from dalle_data.config import build_spec
    from dalle_data.demo.train import Judge
    from dalle_data.demo.world import CLASSES, dataset, write_imagefolder
    from dalle_data.generators import load_generator
    from dalle_data.generators.registry import shapes_demo_dir
    from dalle_data.job import run_generate
    from dalle_data.probe import run_probe
    from dalle_data.progress import NullProgress
    from dalle_data.scoring import load_scorer

    model_dir = shapes_demo_dir() if model == "shapes-demo" else Path(model)
    generator = load_generator(model)
    scorer = load_scorer("shapes-demo" if model == "shapes-demo" else str(model_dir))
    judge = Judge.load(model_dir / "judge.safetensors")
    real = write_imagefolder(tmp / "real", "test", 40 * len(CLASSES))
    sources = write_imagefolder(tmp / "sources", "val", 4 * len(CLASSES))
    figures: dict[str, Any] = {}
    held_out = dataset("test", 40 * len(CLASSES))  # the same renders as `real`: is the judge itself right?
    figures["judge_top1_on_renders"] = sum(p == r.label for p, r in zip(judge.predict([r.image for r in held_out]),
                                                                        held_out)) / len(held_out)

    def generate(name: str, **values: Any) -> dict[str, Any]:
        spec = build_spec({"classes": list(CLASSES), "model": model, "out": tmp / name, "keep_rejected": True,
                           "formats": ["imagefolder"], "templates": str(REPO / "templates" / "shapes.yaml"),
                           "batch_size": 16, **values})
        return run_generate(spec, progress=NullProgress(), generator=generator, scorer=scorer)

    generate("vanilla", per_class=per_class, max_attempts=per_class, filter="zero-shot")
    figures["fidelity_unfiltered"], n = judge_share(judge, tmp / "vanilla", "any")
    figures["fidelity_filtered"], kept = judge_share(judge, tmp / "vanilla", "kept")
    figures["filter_acceptance"] = round(kept / n, 3) if n else 0.0
    generate("variation", per_source=2, modes="variation", from_dir=str(sources), filter="none")
    figures["variation_keeps_class"], _ = judge_share(judge, tmp / "variation", "kept")
    summary = generate("inpaint", per_source=1, modes="inpaint", from_dir=str(sources), filter="none", mask="border")
    figures["inpaint_keeps_class"], _ = judge_share(judge, tmp / "inpaint", "kept")
    figures["inpaint_outside_band_mad"] = inpaint_outside(tmp / "inpaint")
    report = run_probe(tmp / "vanilla", real, scorer=scorer, classes=list(CLASSES), ablate_filter=True)
    figures["clip_zero_shot_top1"] = report["results"]["zero-shot"]["top1"]
    figures["probe_synthetic_filtered"] = report["results"]["synthetic"]["top1"]
    figures["probe_synthetic_unfiltered"] = report["results"]["synthetic (unfiltered)"]["top1"]
    figures["images_per_second_inpaint"] = summary["images_per_second"]
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in figures.items()}


def inpaint_outside(out: Path) -> float:
    """Mean |output - source| where the border mask keeps the source (the centre box), less the kept
    half of the feathered blend band at its edge."""
    import numpy as np
    from PIL import Image, ImageOps

    from dalle_data.masks import auto_mask, feather_width

    diffs = []
    for line in (out / "manifest.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["status"] != "kept":
            continue
        output = np.asarray(Image.open(out / "imagefolder/train" / r["class_dir"] / f"{r['id']}.png").convert("RGB"), int)
        source = ImageOps.fit(Image.open(r["source_path"]).convert("RGB"), (output.shape[1], output.shape[0]),
                              method=Image.Resampling.BICUBIC)
        size = (output.shape[1], output.shape[0])
        keep = np.asarray(auto_mask("border", size, 0)[0]) < 128
        half = feather_width(size) // 2
        keep = np.pad(keep, half, constant_values=True)  # erode: drop kept pixels within half a band of the mask
        keep = np.all([keep[dy : dy + size[1], dx : dx + size[0]] for dy in range(2 * half + 1)
                       for dx in range(2 * half + 1)], axis=0)
        diffs.append(float(np.abs(output - np.asarray(source, int))[keep].mean()))
    return float(np.mean(diffs)) if diffs else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shapes-demo")
    parser.add_argument("--per-class", type=int, default=24)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = run(args.model, args.per_class, Path(tmp))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    goals = {"clip_zero_shot_top1": 0.95, "fidelity_unfiltered": 0.60, "fidelity_filtered": 0.85,
             "variation_keeps_class": 0.80}
    for key, value in figures.items():
        goal = f"  (goal >= {goals[key]:.0%})" if key in goals else ""
        print(f"{key:<28} {value}{goal}")


if __name__ == "__main__":
    main()
