"""A record's scores depend only on its image and prompt, never on what the scorer saw before.

A resumed run scores a shard after replaying others from disk, so the scorer's text cache holds other
prompts than in the uninterrupted run; texts encoded as one batch differ in the last bits by batch
composition, and a score rounded to 6 digits (or one right at ``--min-clip``) then differs (issue 21, item 15).
"""

from __future__ import annotations

PROMPTS = [f"a photo of a {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("circle", "square", "star")] + [
    "a watercolor painting of a red circle", "a blurry photo of a green star, in the style of an oil painting"]


def test_text_embeddings_do_not_depend_on_what_is_already_cached(tiny_scorer) -> None:
    tiny_scorer._text_cache.clear()
    fresh = tiny_scorer.encode_text(PROMPTS).clone()
    for k in range(1, len(PROMPTS)):
        for seen in (PROMPTS[:k], PROMPTS[k:], PROMPTS[::k + 1]):
            tiny_scorer._text_cache.clear()
            tiny_scorer.encode_text(seen)
            again = tiny_scorer.encode_text(PROMPTS)
            assert (again == fresh).all(), (k, (again - fresh).abs().max().item())


def test_scores_of_a_batch_do_not_depend_on_the_batches_before_it(tiny_scorer) -> None:
    from PIL import Image

    images = [Image.new("RGB", (32, 32), (37 * i % 255, 91 * i % 255, 53 * i % 255)) for i in range(len(PROMPTS))]
    tiny_scorer.set_labels(["circle", "square", "star"])
    tiny_scorer._text_cache.clear()
    first = tiny_scorer.score(images, PROMPTS).clip_score
    tiny_scorer._text_cache.clear()
    tiny_scorer.score(images[3:9], PROMPTS[3:9])  # shards scored earlier in an uninterrupted run
    assert tiny_scorer.score(images, PROMPTS).clip_score == first
