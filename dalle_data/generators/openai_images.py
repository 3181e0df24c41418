"""The OpenAI images API as a generator: GPT image models, text to image, reference edits and masked edits.

``OpenAIImageGenerator`` calls ``images.generate`` (vanilla, style and
adversarial modes) and ``images.edit`` (inpainting, variation and fuse)
through the ``openai`` client, one request per image, at most ``max_concurrency`` at a time (a
thread pool inside each batch call). Retries, backoff and secret hygiene are
``dalle_data.llm.client``'s. A prompt the API refuses (moderation) comes back
as a ``Refusal``, so the run records it as ``status=refused`` and goes on;
authentication and quota failures, and transient failures that outlast the
retries, stop the run with one line (finished shards are kept).

The API has no seed: seeds are recorded, but a rerun of unfinished work makes
different images.

Variation and fuse: the DALL·E 2 variations endpoint is retired, but GPT
image models take one or more reference images in ``images.edit`` (no mask)
with a prompt and make a new image from them. A ``variation`` sends its
source as the one reference; a ``fuse`` sends its two sources, in order. The
prompt is ``reference_prompt``'s: it asks for a new picture of the same
subject (variation) or one subject combining both references, weighted by
the fuse weights (fuse), and quotes the class prompt when ``--prompt-weight``
put it among the conditions.

An answer that is no usable image (no data, bad base64, not an image, a
truncated file, or more than ``MAX_IMAGE_PIXELS`` pixels, which is refused
from the header before any pixel is decoded) is a ``Defect``: the run records
it as ``status=failed`` with the reason and goes on.

With ``batch=True`` (``--openai-batch``) text-to-image requests go through
the Batch API instead (half price, results within a day): each generator call
becomes one batch job (a JSONL file of ``/v1/images/generations`` requests
uploaded, the batch created, polled every ``DALLE_DATA_BATCH_POLL`` seconds
(default 30) for at most ``DALLE_DATA_BATCH_WAIT`` (default 25 h), its output
file streamed and matched by ``custom_id``; see ``openai_batch``). The
batch id is remembered under ``$DALLE_DATA_HOME/openai-batches/`` by a key of
the requests (model, quality, size, prompts, seeds) until the shard holding
its images is committed (``take_kept_state``), so a run killed while it
waits finds the same batch again when it is rerun (the shard markers decide
what is rerun, as always) and pays for nothing twice. Lines that fail come back
as ``Refusal`` (moderation) or ``Defect``. Edits (inpaint, variation, fuse) are
not batched: they are multipart uploads, so they go to the edits endpoint
directly even with ``batch=True``.

Masks: dalle-data's masks are white where to repaint; the edits endpoint
wants an RGBA mask whose transparent (alpha 0) pixels are the ones to edit.
Outside the mask the source's own pixels are composited back, as the local
backend does.
"""

from __future__ import annotations

import base64
import io
import logging
import struct
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dalle_data.backends import OPENAI_DEFAULT_QUALITY, OPENAI_QUALITIES
from dalle_data.generators.base import Defect, GenerationSettings, KeptState, Refusal, split_conditions
from dalle_data.generators.openai_batch import BatchJobs
from dalle_data.masks import feathered_composite
from dalle_data.llm.client import (
    Aborted,
    ContentRefused,
    Endpoint,
    call_with_retries,
    make_client,
)

if TYPE_CHECKING:
    import openai
    from PIL.Image import Image

    from dalle_data.llm.client import Scrubber

log = logging.getLogger(__name__)

DEFAULT_MODEL = "gpt-image-1.5"
QUALITIES, DEFAULT_QUALITY = OPENAI_QUALITIES, OPENAI_DEFAULT_QUALITY
# Steps mean nothing to the API; they stay 1 so record ids do not change with --steps defaults.
OPENAI_DEFAULTS = GenerationSettings(width=1024, height=1024, num_inference_steps=1, prior_num_inference_steps=1)
# An answer with more pixels is a Defect, never decoded (the API's largest is 1536x1024; 8000x8000 RGB is 192 MB).
MAX_IMAGE_PIXELS = 64_000_000
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Output = Any  # Image | Defect | Refusal


class OpenAIImageGenerator:
    """Text → image, reference-image edits (variation, fuse) and masked edits with a GPT image model."""

    backend = "openai"
    capabilities = frozenset({"text-to-image", "variation", "fuse", "inpaint"})

    def __init__(
        self, model: str = DEFAULT_MODEL, *, endpoint: Endpoint | None = None, quality: str = DEFAULT_QUALITY,
        max_concurrency: int = 4, client: openai.OpenAI | None = None, scrubber: Scrubber | None = None,
        batch: bool = False, moderation: str = "auto", input_fidelity: str | None = None,
    ) -> None:
        if quality not in QUALITIES:
            raise ValueError(f"quality must be one of {', '.join(QUALITIES)}")
        self.model = model
        self.endpoint = endpoint or Endpoint()
        self.quality = quality
        self.max_concurrency = max(1, max_concurrency)
        self.defaults = OPENAI_DEFAULTS
        self.batch = batch
        # --option moderation / input_fidelity (backends.OpenAIOptions); sent only when set, as the API's
        # defaults are the same.
        self._generate_extra: dict[str, Any] = {"moderation": moderation} if moderation != "auto" else {}
        self._edit_extra: dict[str, Any] = {"input_fidelity": input_fidelity} if input_fidelity else {}
        if client is None or scrubber is None:
            client, scrubber = make_client(self.endpoint)  # fails here, before any work, without a key
        self._client, self._scrub = client, scrubber
        self._jobs = BatchJobs(client, self._api, scrubber, _decode)

    def __repr__(self) -> str:
        return f"OpenAIImageGenerator(model={self.model!r}, url={self.endpoint.url!r}, quality={self.quality!r})"

    # -- the Generator contract ---------------------------------------------------
    def __call__(self, prompt: Sequence[str], seeds: Sequence[int], settings: GenerationSettings) -> list[Output]:
        """One image (or ``Refusal`` / ``Defect``) per prompt; ``seeds`` are recorded, not used."""
        if len(prompt) != len(seeds):
            raise ValueError("one seed per prompt is needed")
        size = _size(settings)
        if self.batch and prompt:
            return self._batch(list(prompt), list(seeds), size)
        jobs = [self._generate_job(p, size) for p in prompt]
        return self._run_all(jobs)

    # -- the Batch API (dalle_data.generators.openai_batch) -------------------------------
    def _batch(self, prompts: list[str], seeds: list[int], size: str) -> list[Output]:
        """One batch job for these prompts (resumed when an earlier run submitted it already)."""
        bodies = [{"model": self.model, "prompt": p, "n": 1, "size": size, "quality": self.quality,
                   "output_format": "png", **self._generate_extra} for p in prompts]
        return self._jobs.run(self.endpoint.url, bodies, seeds)

    def take_kept_state(self) -> KeptState:
        """The finished batch jobs whose images were handed out since the last call (released after their shard's
        marker is written; a rerun before that downloads them again instead of paying twice)."""
        return self._jobs.take_kept_state()

    def _api(self, request: Callable[[], Any]) -> Any:
        return call_with_retries(request, what=f"batch API ({self.model})", endpoint=self.endpoint,
                                 scrub=self._scrub, abort=threading.Event())

    def inpaint(
        self, images: Sequence[Image], masks: Sequence[Image], prompt: Sequence[str],
        seeds: Sequence[int], settings: GenerationSettings,
    ) -> list[Output]:
        """Repaint the white part of each mask through the edits endpoint; the black part is kept."""
        size = _size(settings)
        jobs = [self._inpaint_job(image, mask, p, size) for image, mask, p in zip(images, masks, prompt)]
        return self._run_all(jobs)

    def variation(
        self, conditions: Sequence[Sequence[Any]], weights: Sequence[Sequence[float]], seeds: Sequence[int],
        settings: GenerationSettings,
    ) -> list[Output]:
        """One new image per item from its reference images (variation: one, fuse: two) through the edits endpoint.

        ``conditions[i]`` are PIL images, optionally with one text (the class prompt of ``--prompt-weight``);
        ``weights[i]`` has one weight per condition. All the item's images are sent as reference images (PNG,
        in order, no mask) with ``reference_prompt``'s prompt. ``seeds`` are recorded, not used (the API has
        no seed). Never batched, even with ``batch=True``: the Batch API takes JSON lines and an edit is a
        multipart upload, so these requests always go to the edits endpoint directly.
        """
        if not len(conditions) == len(weights) == len(seeds):
            raise ValueError("one weight list and one seed per item are needed")
        size = _size(settings)
        return self._run_all([self._reference_job(conds, ws, size) for conds, ws in zip(conditions, weights)])

    # -- requests -----------------------------------------------------------------
    def _generate_job(self, prompt: str, size: str) -> Callable[[threading.Event], Output]:
        def job(abort: threading.Event) -> Output:
            response = self._call(lambda: self._client.images.generate(
                model=self.model, prompt=prompt, n=1, size=size, quality=self.quality, output_format="png",
                **self._generate_extra,
            ), abort)
            return response if isinstance(response, Refusal) else _decode(response)

        return job

    def _inpaint_job(self, image: Image, mask: Image, prompt: str, size: str) -> Callable[[threading.Event], Output]:
        return self._edit_job([_png(image.convert("RGB"))], prompt, size, mask=_png(alpha_mask(mask, image.size)),
                              finish=lambda result: feathered_composite(result, image, mask))

    def _reference_job(
        self, conds: Sequence[Any], ws: Sequence[float], size: str,
    ) -> Callable[[threading.Event], Output]:
        pictures, image_weights, text = split_conditions(conds, ws)
        prompt = reference_prompt(image_weights, text or None)
        return self._edit_job([_png(picture) for picture in pictures], prompt, size)

    def _edit_job(
        self, images: Sequence[bytes], prompt: str, size: str, *, mask: bytes | None = None,
        finish: Callable[[Image], Output] | None = None,
    ) -> Callable[[threading.Event], Output]:
        """One ``images.edit`` request: PNG ``images`` (one is sent as ``image``, several as ``image[]``), an
        optional PNG ``mask``; ``finish`` turns the decoded image into the output (a refusal or defect as is)."""
        files = [(f"image-{k}.png" if len(images) > 1 else "image.png", png, "image/png")
                 for k, png in enumerate(images, 1)]
        extra: dict[str, Any] = {"mask": ("mask.png", mask, "image/png")} if mask is not None else {}

        def job(abort: threading.Event) -> Output:
            response = self._call(lambda: self._client.images.edit(
                model=self.model, prompt=prompt, n=1, size=size, quality=self.quality,
                image=files[0] if len(files) == 1 else files, **extra, **self._edit_extra,
            ), abort)
            if isinstance(response, Refusal):
                return response
            result = _decode(response)
            return result if isinstance(result, Defect) or finish is None else finish(result)

        return job

    def _call(self, request: Callable[[], Any], abort: threading.Event) -> Any:
        try:
            return call_with_retries(request, what=f"images API ({self.model})", endpoint=self.endpoint,
                                     scrub=self._scrub, abort=abort)
        except ContentRefused as err:
            return Refusal(err.reason)

    def _run_all(self, jobs: list[Callable[[threading.Event], Output]]) -> list[Output]:
        """Run ``jobs`` at most ``max_concurrency`` at a time; the first hard failure stops the rest."""
        if not jobs:
            return []
        abort = threading.Event()

        def guarded(job: Callable[[threading.Event], Output]) -> Output:
            try:
                return job(abort)
            except Aborted:
                return None
            except BaseException:
                abort.set()
                raise

        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(jobs)),
                                thread_name_prefix="dalle-data-openai") as pool:
            futures = [pool.submit(guarded, job) for job in jobs]
            try:
                errors = [f.exception() for f in futures]
            except BaseException:  # a second Ctrl-C: no new requests, no more retries
                abort.set()
                pool.shutdown(wait=False, cancel_futures=True)
                raise
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
        return [f.result() for f in futures]


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_VARIATION_PROMPT = ("A new, different photo of the same subject as the reference image: keep what the "
                     "subject is (its class) and the visual style, but show it from a new viewpoint, in a new pose "
                     "and a new composition. Do not copy the reference image.")
_FUSE_PROMPT = ("One new photo that combines the {n} reference images: a single subject that blends the subject "
                "and the visual style of the references, seen from a new viewpoint in a new composition. One "
                "photo, not a collage or side-by-side; do not copy any reference.")


def reference_prompt(weights: Sequence[float], text: str | None = None) -> str:
    """The edit prompt of a variation (one reference image) or fuse (several), deterministic.

    ``weights`` are the reference images' weights, in order (their sum is normalised away). A fuse says
    how much to follow each reference, in whole percent: "Follow both references equally." when the
    percentages are equal, else "Make it mostly like the first reference (70%), with less of the second
    (30%)." ("almost entirely" from 80%; more references are listed by weight, ties in order). ``text``
    (the class prompt) is quoted as the subject's description.
    """
    if not weights:
        raise ValueError("a reference prompt needs at least one reference image")
    if len(weights) > len(_ORDINALS):
        raise ValueError(f"at most {len(_ORDINALS)} reference images")
    described = f' The subject is described as "{text.strip()}".' if text and text.strip() else ""
    if len(weights) == 1:
        return _VARIATION_PROMPT + described
    total = sum(max(0.0, float(w)) for w in weights)
    shares = [round(100 * max(0.0, float(w)) / total) if total > 0 else round(100 / len(weights)) for w in weights]
    if len(set(shares)) == 1:
        balance = "Follow both references equally." if len(weights) == 2 else "Follow all the references equally."
    else:
        order = sorted(range(len(shares)), key=lambda i: (-shares[i], i))
        degree = "almost entirely" if shares[order[0]] >= 80 else "mostly"
        rest = " and ".join(f"the {_ORDINALS[i]} ({shares[i]}%)" for i in order[1:])
        top = order[0]
        balance = f"Make it {degree} like the {_ORDINALS[top]} reference ({shares[top]}%), with less of {rest}."
    return f"{_FUSE_PROMPT.format(n=_count(len(weights)))}{described} {balance}"


def _count(n: int) -> str:
    return ("two", "three", "four", "five", "six", "seven", "eight")[n - 2] if 2 <= n <= 8 else str(n)


def _size(settings: GenerationSettings) -> str:
    return f"{settings.width}x{settings.height}"


def _png(image: Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _decode(response: Any) -> Image | Defect:
    """The first image of an images-API response, as RGB, or a ``Defect`` saying why there is none."""
    data = getattr(response, "data", None)
    b64 = getattr(data[0], "b64_json", None) if isinstance(data, list) and data else None
    if b64 is None or b64 == "":
        return Defect("the images API returned no image data")
    try:
        raw = base64.b64decode("".join(b64.split()), validate=True)
    except (AttributeError, TypeError, ValueError):
        return Defect("the images API returned image data that is not valid base64")
    too_big = _too_big(_png_size(raw))
    return too_big or _open_rgb(raw)


def _open_rgb(raw: bytes) -> Image | Defect:
    """``raw`` decoded as RGB; the size is checked from the header first (``Image.open`` reads only that)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    try:
        with PILImage.open(io.BytesIO(raw)) as img:
            return _too_big(img.size) or img.convert("RGB")
    except UnidentifiedImageError:
        return Defect("the images API returned an unreadable image (the data is not an image)")
    except PILImage.DecompressionBombError:
        return Defect(f"the images API returned an image too large to decode (over {_limit()})")
    except (ValueError, OSError, EOFError, SyntaxError, struct.error) as err:
        return Defect(f"the images API returned an unreadable image ({type(err).__name__})")


def _png_size(raw: bytes) -> tuple[int, int] | None:
    """Width and height from a PNG's IHDR (PIL itself warns on, or refuses, huge sizes before we can look)."""
    if raw[:8] != _PNG_SIGNATURE or raw[12:16] != b"IHDR" or len(raw) < 24:
        return None
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


def _too_big(size: tuple[int, int] | None) -> Defect | None:
    if size is None or size[0] * size[1] <= MAX_IMAGE_PIXELS:
        return None
    return Defect(f"the images API returned a {size[0]}x{size[1]} image, too large to decode (over {_limit()})")


def _limit() -> str:
    return f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels"


def alpha_mask(mask: Image, size: tuple[int, int]) -> Image:
    """dalle-data's white-is-repaint mask as the API's RGBA mask: alpha 0 where to edit, 255 where to keep."""
    from PIL import Image as PILImage

    gray = mask.convert("L")
    if gray.size != size:
        gray = gray.resize(size, PILImage.Resampling.NEAREST)
    alpha = gray.point(lambda v: 0 if v >= 128 else 255)
    out = PILImage.new("RGBA", size, (0, 0, 0, 255))
    out.putalpha(alpha)
    return out


def composite(result: Image, source: Image, mask: Image) -> Image:
    """The API's output inside the mask, the source's own pixels outside it, with a hard edge (kept for
    comparison; edits use ``dalle_data.masks.feathered_composite``, as the local backend does)."""
    from PIL import Image as PILImage

    if result.size != source.size:
        result = result.resize(source.size, PILImage.Resampling.BICUBIC)
    keep = mask.convert("L").resize(source.size, PILImage.Resampling.NEAREST).point(lambda v: 255 if v < 128 else 0)
    out = result.copy()
    out.paste(source.convert("RGB"), (0, 0), keep)
    return out
