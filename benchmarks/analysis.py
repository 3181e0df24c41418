"""Near-duplicates and diversity at scale: time and peak memory for 10,000 and 100,000 images.

Synthetic float16 embeddings of ViT-L-14's width (768), L2-normalised, with 1% planted
near-copies; all images in one class (the worst case: one class's similarity is n²/2
dot products) and spread over 100 classes (the usual case). Each case runs in a fresh
process so its peak resident memory is its own.

    .venv/bin/python benchmarks/analysis.py            # 10k and 100k
    .venv/bin/python benchmarks/analysis.py --sizes 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

DIM = 768


def case(n: int, classes: int) -> dict[str, float]:
    import numpy as np

    from dalle_data.analysis import diversity, duplicate_groups
    from dalle_data.embeddings import EmbeddingSet
    from dalle_data.records import Record

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    planted = rng.choice(n, size=n // 100, replace=False)
    x[planted] = x[(planted + classes) % n]  # a copy of an image of the same class
    x[planted] += rng.normal(scale=0.05, size=(len(planted), DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x = x.astype(np.float16).astype(np.float32)  # what is stored
    labels = [f"c{k % classes}" for k in range(n)]
    records = [Record(id=f"{k:08d}", label=labels[k], label_id=k % classes, class_dir=labels[k], role="positive",
                      imitates=None, prompt=f"p{k % 500}", prompt_source="", mode="vanilla", backend="", model="",
                      seed=k, width=1, height=1, clip_score=0.3, class_prob=0.9, top_class=labels[k], kept=True,
                      status="kept", reject_reason=None, error=None, source_id=None, source_path=None,
                      source2_id=None, source2_path=None, mask=None, shard="s", created_at="", sha256=f"{k:064x}")
               for k in range(n)]
    emb = EmbeddingSet([r.id for r in records], x, np.zeros((n, 1), np.float32), ("x",), "synthetic")
    start = time.perf_counter()
    groups = duplicate_groups(records, emb, 0.95)
    dedup_s = time.perf_counter() - start
    start = time.perf_counter()
    rows = diversity(records, emb, sorted(set(labels)))
    diversity_s = time.perf_counter() - start
    return {"n": n, "classes": classes, "dedup_s": round(dedup_s, 2), "diversity_s": round(diversity_s, 2),
            "groups": len(groups), "vendi_first_class": round(rows[0].vendi, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "embeddings_mb": round(x.nbytes / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        n, classes = (int(v) for v in args.case.split(":"))
        print(json.dumps(case(n, classes)))
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}")
    print(f"{'images':>8} {'classes':>7} {'dedup s':>8} {'diversity s':>11} {'groups':>7} {'peak RSS MB':>11} "
          f"{'embeddings MB':>13}")
    for n in (int(v) for v in args.sizes.split(",")):
        for classes in (100, 1):
            result = subprocess.run([sys.executable, __file__, "--case", f"{n}:{classes}"], capture_output=True,
                                    text=True, check=True)
            r = json.loads(result.stdout)
            print(f"{r['n']:>8} {r['classes']:>7} {r['dedup_s']:>8} {r['diversity_s']:>11} {r['groups']:>7} "
                  f"{r['peak_rss_mb']:>11} {r['embeddings_mb']:>13}", flush=True)


if __name__ == "__main__":
    main()
