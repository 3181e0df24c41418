"""Train the shapes-demo unCLIP on the procedural world, deterministically, on CPU.

Stages (each seeded; together within the 90-minute two-core budget):

1. CLIP: a text and an image tower trained contrastively on (render, caption),
   plus the zero-shot task itself on training renders (the bare class prompt
   "a photo of a red circle" must win among the class prompts).
2. Autoencoder (MoVQ layout, used without quantization as Kandinsky 2.2's
   decoder pipeline uses it): 32x32x3 ↔ 8x8x4 latents.
3. Decoder: a UNet denoising latents, conditioned on CLIP image embeddings
   (10% of the time on the zero-image embedding, for classifier-free guidance).
4. Prior: a PriorTransformer mapping CLIP text encodings to CLIP image
   embeddings (10% of captions dropped to "" for guidance).
5. Inpainting decoder: the decoder's UNet widened to 9 input channels
   (latents, masked latents, mask) and fine-tuned on random masks.

``python -m dalle_data.demo.train OUT`` (``make demo-model``) writes OUT/prior,
OUT/decoder, OUT/inpaint, OUT/dalle_data_model.json and OUT/judge.safetensors
(a small CNN trained on renders alone, the benchmark's independent judge).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dalle_data.demo import components as C
from dalle_data.demo.world import CLASSES, SIZE, dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    pool: int = 12_000
    clip_steps: int = 3000
    clip_lr: float = 2e-3
    clip_width: int = 64
    clip_layers: int = 4
    clip_patch: int = 4
    clip_augment: bool = True
    ae_steps: int = 1000
    decoder_steps: int = 4000
    prior_steps: int = 3000
    inpaint_steps: int = 1200
    judge_steps: int = 600
    batch: int = 64
    threads: int = 2


def _lr(step: int, total: int, base: float) -> float:
    warm = min(1.0, (step + 1) / 100)
    return base * warm * 0.5 * (1 + math.cos(math.pi * step / total))


def _loop(name: str, steps: int, lr: float, params: Any, loss_fn: Callable[[int], Any]) -> float:
    import torch

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    t0, avg = time.perf_counter(), 0.0
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = _lr(step, steps, lr)
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params if isinstance(params, list) else list(params), 1.0)
        opt.step()
        value = float(loss.detach())
        avg = 0.98 * avg + 0.02 * value if step else value
        if step % 250 == 0 or step == steps - 1:
            log.info("%s step %d/%d loss %.4f (%.0fs)", name, step + 1, steps, avg, time.perf_counter() - t0)
    return avg


class Pool:
    """A fixed pool of training renders, as tensors."""

    def __init__(self, n: int, tok: Any) -> None:
        import torch

        renders = dataset("train", n)
        self.pixels = torch.from_numpy(np.stack([np.asarray(r.image) for r in renders])).permute(0, 3, 1, 2)
        self.labels = torch.tensor([CLASSES.index(r.label) for r in renders])
        self.captions = [r.caption for r in renders]
        enc = tok(self.captions, padding="max_length", max_length=C.CONTEXT, truncation=True, return_tensors="pt")
        self.ids, self.mask = enc.input_ids, enc.attention_mask
        empty = tok([""], padding="max_length", max_length=C.CONTEXT, return_tensors="pt")
        self.empty_ids, self.empty_mask = empty.input_ids, empty.attention_mask

    def batch(self, rng: np.random.Generator, size: int) -> Any:
        return rng.integers(0, len(self.captions), size)


def clip_pixels(pixels: Any) -> Any:
    import torch

    x = pixels.float() / 255.0
    mean = torch.tensor(C.CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(C.CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def ae_pixels(pixels: Any) -> Any:
    return pixels.float() / 127.5 - 1.0


@dataclass
class Clip:
    """The two CLIP towers (exactly the prior pipeline's text_encoder and image_encoder) and a temperature."""

    text: Any
    image: Any
    logit_scale: Any

    def text_embeds(self, ids: Any, mask: Any) -> Any:
        return self.text(input_ids=ids, attention_mask=mask).text_embeds

    def image_embeds(self, pixels: Any) -> Any:
        return self.image(pixel_values=clip_pixels(pixels)).image_embeds


def train_clip(pool: Pool, cfg: TrainConfig, tok: Any) -> Clip:
    import torch

    torch.manual_seed(cfg.seed)
    clip = _new_clip(cfg, math.log(1 / 0.07))
    rng = np.random.default_rng(cfg.seed)
    params = list(clip.text.parameters()) + list(clip.image.parameters()) + [clip.logit_scale]

    class_enc = tok([f"a photo of a {c}" for c in CLASSES], padding="max_length", max_length=C.CONTEXT,
                    return_tensors="pt")

    def loss_fn(step: int) -> Any:
        idx = pool.batch(rng, 2 * cfg.batch)
        text = torch.nn.functional.normalize(clip.text_embeds(pool.ids[idx], pool.mask[idx]), dim=-1)
        pixels = pool.pixels[idx]
        if cfg.clip_augment:  # the classes are invariant to flips and quarter turns; the captions too
            pixels = _flip_rotate(pixels, rng)
        image = torch.nn.functional.normalize(clip.image_embeds(pixels), dim=-1)
        scale = clip.logit_scale.clamp(max=math.log(100)).exp()
        logits = scale * image @ text.T
        # Captions of one scene type are near-duplicates: every same-caption pair is a positive.
        same = torch.tensor([[pool.captions[i] == pool.captions[j] for j in idx] for i in idx], dtype=torch.float32)
        target = same / same.sum(dim=1, keepdim=True)
        pairs = 0.5 * ((-target * logits.log_softmax(-1)).sum(-1).mean() + (-target * logits.T.log_softmax(-1)).sum(-1).mean())
        # The bare class prompt must win for every image of the class: the zero-shot task, on training renders.
        classes = torch.nn.functional.normalize(clip.text_embeds(class_enc.input_ids, class_enc.attention_mask), dim=-1)
        zero_shot = torch.nn.functional.cross_entropy(scale * image @ classes.T, pool.labels[idx])
        return pairs + zero_shot

    _loop("clip", cfg.clip_steps, cfg.clip_lr, params, loss_fn)
    clip.text.eval()
    clip.image.eval()
    return clip


def _flip_rotate(pixels: Any, rng: np.random.Generator) -> Any:
    """Each image flipped horizontally or not, then turned by 0-3 quarter turns (seeded)."""
    import torch

    flips = torch_bool(rng.random(len(pixels)) < 0.5)
    turns = rng.integers(0, 4, len(pixels))
    pixels = torch.where(flips.view(-1, 1, 1, 1), pixels.flip(-1), pixels)
    return torch.stack([torch.rot90(p, int(k), dims=(-2, -1)) for p, k in zip(pixels, turns)])


def zero_shot_accuracy(clip: Clip, tok: Any, split: str = "test", n: int = 800) -> float:
    import torch

    renders = dataset(split, n)
    with torch.no_grad():
        enc = tok([f"a photo of a {c}" for c in CLASSES], padding="max_length", max_length=C.CONTEXT, return_tensors="pt")
        text = torch.nn.functional.normalize(clip.text_embeds(enc.input_ids, enc.attention_mask), dim=-1)
        pixels = torch.from_numpy(np.stack([np.asarray(r.image) for r in renders])).permute(0, 3, 1, 2)
        image = torch.nn.functional.normalize(clip.image_embeds(pixels), dim=-1)
        pred = (image @ text.T).argmax(-1)
    truth = torch.tensor([CLASSES.index(r.label) for r in renders])
    return float((pred == truth).float().mean())


def train_autoencoder(pool: Pool, cfg: TrainConfig) -> Any:
    import torch

    torch.manual_seed(cfg.seed + 1)
    model = C.movq()
    rng = np.random.default_rng(cfg.seed + 1)

    def loss_fn(step: int) -> Any:
        x = ae_pixels(pool.pixels[pool.batch(rng, cfg.batch // 2)])
        h = model.encode(x).latents
        out = model.decode(h, force_not_quantize=True).sample
        # Keep latents near unit scale: the decoder's diffusion starts from unit Gaussian noise.
        return (out - x).abs().mean() + 0.5 * (out - x).pow(2).mean() + 0.01 * (h.pow(2).mean() - 1).pow(2)

    _loop("autoencoder", cfg.ae_steps, 1e-3, list(model.parameters()), loss_fn)
    return model.eval()


def _encode_pool(pool: Pool, clip: Clip, ae: Any, chunk: int = 512) -> dict[str, Any]:
    """Frozen features of the whole pool: image embeddings, text encodings, latents."""
    import torch

    out: dict[str, list[Any]] = {"image": [], "text": [], "hidden": [], "latents": []}
    with torch.no_grad():
        for start in range(0, len(pool.captions), chunk):
            sl = slice(start, start + chunk)
            px = pool.pixels[sl]
            out["image"].append(clip.image_embeds(px))
            t = clip.text(input_ids=pool.ids[sl], attention_mask=pool.mask[sl])
            out["text"].append(t.text_embeds)
            out["hidden"].append(t.last_hidden_state)
            out["latents"].append(ae.encode(ae_pixels(px)).latents)
        empty = clip.text(input_ids=pool.empty_ids, attention_mask=pool.empty_mask)
        zero = clip.image(pixel_values=torch.zeros(1, 3, SIZE, SIZE)).image_embeds
    feats = {k: torch.cat(v) for k, v in out.items()}
    feats.update(empty_text=empty.text_embeds, empty_hidden=empty.last_hidden_state, zero_image=zero,
                 mask=pool.mask.bool(), empty_mask=pool.empty_mask.bool())
    return feats


def _noise(scheduler: Any, x0: Any, rng: np.random.Generator) -> tuple[Any, Any, Any]:
    import torch

    t = torch.from_numpy(rng.integers(0, scheduler.config.num_train_timesteps, len(x0)))
    eps = torch.from_numpy(rng.standard_normal(tuple(x0.shape)).astype(np.float32))
    ab = scheduler.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps, t, eps


def _conditions(feats: dict[str, Any], idx: Any, rng: np.random.Generator, p_uncond: float = 0.1) -> Any:
    cond = feats["image"][idx].clone()
    drop = torch_bool(rng.random(len(idx)) < p_uncond)
    cond[drop] = feats["zero_image"]
    return cond


def torch_bool(array: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(array)


def train_decoder(feats: dict[str, Any], cfg: TrainConfig, in_channels: int = 4, init: Any = None,
                  steps: int | None = None) -> Any:
    """The latent UNet; with ``in_channels=9`` the inpainting variant (initialized from ``init``)."""
    import torch

    torch.manual_seed(cfg.seed + 2 + in_channels)
    model = C.unet(in_channels)
    if init is not None:
        state = init.state_dict()
        weight = state["conv_in.weight"]
        state["conv_in.weight"] = torch.cat([weight, torch.zeros(weight.shape[0], in_channels - 4, *weight.shape[2:])], 1)
        model.load_state_dict(state)
    scheduler = C.decoder_scheduler()
    rng = np.random.default_rng(cfg.seed + 2 + in_channels)
    latents = feats["latents"]

    def loss_fn(step: int) -> Any:
        idx = rng.integers(0, len(latents), cfg.batch * 2)
        x0 = latents[idx]
        xt, t, eps = _noise(scheduler, x0, rng)
        if in_channels == 9:
            keep = _random_keep_masks(rng, len(idx))
            xt = torch.cat([xt, x0 * keep, keep], dim=1)
        cond = _conditions(feats, idx, rng)
        pred = model(xt, t, encoder_hidden_states=None, added_cond_kwargs={"image_embeds": cond}).sample
        return (pred[:, :4] - eps).pow(2).mean()

    name = "inpaint" if in_channels == 9 else "decoder"
    _loop(name, steps or cfg.decoder_steps, 1e-3 if init is None else 3e-4, list(model.parameters()), loss_fn)
    return model.eval()


def _random_keep_masks(rng: np.random.Generator, n: int) -> Any:
    """Latent-resolution keep masks (1 = keep): centre boxes, borders, random boxes."""
    import torch

    side = SIZE // 4
    masks = np.ones((n, 1, side, side), dtype=np.float32)
    for i in range(n):
        kind = rng.integers(0, 3)
        if kind == 0:
            masks[i, :, 2:6, 2:6] = 0
        elif kind == 1:
            masks[i] = 0
            masks[i, :, 1:7, 1:7] = 1
        else:
            w, h = rng.integers(2, 6, 2)
            x, y = rng.integers(0, side - w + 1), rng.integers(0, side - h + 1)
            masks[i, :, y : y + h, x : x + w] = 0
    return torch.from_numpy(masks)


def train_prior(feats: dict[str, Any], cfg: TrainConfig) -> tuple[Any, Any, Any]:
    import torch

    torch.manual_seed(cfg.seed + 3)
    model = C.prior()
    image = feats["image"]
    mean, std = image.mean(0), image.std(0) + 1e-6
    x0_all = (image - mean) / std
    scheduler = C.prior_scheduler()
    rng = np.random.default_rng(cfg.seed + 3)

    def loss_fn(step: int) -> Any:
        idx = rng.integers(0, len(image), cfg.batch * 2)
        xt, t, _ = _noise(scheduler, x0_all[idx], rng)
        text, hidden = feats["text"][idx].clone(), feats["hidden"][idx].clone()
        mask = feats["mask"][idx].clone()
        drop = torch_bool(rng.random(len(idx)) < 0.1)
        text[drop], hidden[drop], mask[drop] = feats["empty_text"], feats["empty_hidden"], feats["empty_mask"]
        pred = model(xt, t, proj_embedding=text, encoder_hidden_states=hidden, attention_mask=mask)
        return (pred.predicted_image_embedding - x0_all[idx]).pow(2).mean()

    _loop("prior", cfg.prior_steps, 1e-3, list(model.parameters()), loss_fn)
    model.clip_mean = torch.nn.Parameter(mean[None].clone())
    model.clip_std = torch.nn.Parameter(std[None].clone())
    return model.eval(), mean, std


class Judge:
    """A small CNN trained on renders only: the benchmark's independent judge of "which class is this?"."""

    def __init__(self) -> None:
        from torch import nn

        def block(cin: int, cout: int) -> list[Any]:
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

        self.net = nn.Sequential(
            *block(3, 32), *block(32, 32), nn.MaxPool2d(2),
            *block(32, 64), *block(64, 64), nn.MaxPool2d(2),
            *block(64, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(CLASSES)),
        )

    def __call__(self, pixels: Any) -> Any:
        return self.net(ae_pixels(pixels))

    def predict(self, images: list[Any]) -> list[str]:
        """Class names for PIL images (resized to the world's size)."""
        import torch

        arrays = np.stack([np.asarray(im.convert("RGB").resize((SIZE, SIZE))) for im in images])
        with torch.no_grad():
            logits = self(torch.from_numpy(arrays).permute(0, 3, 1, 2))
        return [CLASSES[i] for i in logits.argmax(-1).tolist()]

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(path))

    @classmethod
    def load(cls, path: Path) -> "Judge":
        from safetensors.torch import load_file

        judge = cls()
        judge.net.load_state_dict(load_file(str(path)))
        judge.net.eval()
        return judge


def train_judge(pool: Pool, cfg: TrainConfig) -> Judge:
    import torch

    torch.manual_seed(cfg.seed + 4)
    judge = Judge()
    rng = np.random.default_rng(cfg.seed + 4)

    def loss_fn(step: int) -> Any:
        idx = pool.batch(rng, cfg.batch * 2)
        return torch.nn.functional.cross_entropy(judge(_flip_rotate(pool.pixels[idx], rng)), pool.labels[idx])

    _loop("judge", cfg.judge_steps, 2e-3, list(judge.net.parameters()), loss_fn)
    judge.net.eval()
    return judge


class Stages:
    """Each finished stage is saved, so an interrupted training resumes at the next stage."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def run(self, name: str, train: Callable[[], Any], empty: Callable[[], Any]) -> Any:
        import torch

        path = self.root / f"{name}.pt"
        if path.is_file():
            model = empty()
            _module(model).load_state_dict(torch.load(path, weights_only=True))
            _module(model).eval()
            log.info("stage %s: loaded from %s", name, path)
            return model
        model = train()
        tmp = path.with_suffix(".tmp")
        torch.save(_module(model).state_dict(), tmp)
        tmp.replace(path)
        return model


def _module(model: Any) -> Any:
    """The torch module holding a stage's weights."""
    import torch

    if isinstance(model, Clip):
        holder = torch.nn.Module()
        holder.text, holder.image = model.text, model.image
        holder.logit_scale = model.logit_scale
        return holder
    if isinstance(model, Judge):
        return model.net
    return model


def _new_clip(cfg: TrainConfig, log_scale: float = 0.0) -> Clip:
    """Freshly initialized towers of the configured shape (a finished stage loads its weights into these)."""
    import torch
    from transformers import CLIPTextModelWithProjection, CLIPVisionModelWithProjection

    config = C.clip_config(cfg.clip_width, cfg.clip_layers, cfg.clip_patch)
    return Clip(CLIPTextModelWithProjection(config.text_config), CLIPVisionModelWithProjection(config.vision_config),
                torch.nn.Parameter(torch.tensor(log_scale)))


def save_model(out: Path, clip: Clip, tok: Any, prior: Any, ae: Any, decoder: Any, inpaint: Any) -> None:
    """Write the Kandinsky 2.2 layout (fp16 safetensors) that ``--model PATH`` loads."""
    import copy

    from diffusers import KandinskyV22InpaintPipeline, KandinskyV22Pipeline, KandinskyV22PriorPipeline

    def half(module: Any) -> Any:
        return copy.deepcopy(module).half()

    KandinskyV22PriorPipeline(
        prior=half(prior), image_encoder=half(clip.image), text_encoder=half(clip.text), tokenizer=tok,
        scheduler=C.prior_scheduler(), image_processor=C.image_processor(),
    ).save_pretrained(str(out / "prior"))
    KandinskyV22Pipeline(unet=half(decoder), scheduler=C.decoder_scheduler(), movq=half(ae)).save_pretrained(
        str(out / "decoder"))
    KandinskyV22InpaintPipeline(unet=half(inpaint), scheduler=C.decoder_scheduler(), movq=half(ae)).save_pretrained(
        str(out / "inpaint"))
    card = {
        "backend": "kandinsky2.2",
        "defaults": {"width": SIZE, "height": SIZE, "num_inference_steps": 30, "prior_num_inference_steps": 20,
                     "guidance_scale": 4.0, "prior_guidance_scale": 4.0},
        "clip_logit_scale": float(clip.logit_scale.detach().clamp(max=math.log(100)).exp()),
        "classes": list(CLASSES),
    }
    (out / "dalle_data_model.json").write_text(json.dumps(card, indent=2) + "\n")


def train_all(out: Path, cfg: TrainConfig = TrainConfig()) -> dict[str, Any]:
    """Every stage, in order; returns figures measured on held-out renders."""
    import torch

    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    random.seed(cfg.seed)
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    tok = C.tokenizer()
    pool = Pool(cfg.pool, tok)
    stages = Stages(out / ".stages")
    clip = stages.run("clip", lambda: train_clip(pool, cfg, tok), lambda: _new_clip(cfg))
    zero_shot = zero_shot_accuracy(clip, tok)
    log.info("CLIP zero-shot top-1 on held-out renders: %.3f", zero_shot)
    ae = stages.run("autoencoder", lambda: train_autoencoder(pool, cfg), C.movq)
    feats = _encode_pool(pool, clip, ae)
    decoder = stages.run("decoder", lambda: train_decoder(feats, cfg), C.unet)
    prior = stages.run("prior", lambda: train_prior(feats, cfg)[0], C.prior)
    inpaint = stages.run("inpaint", lambda: train_decoder(feats, cfg, in_channels=9, init=decoder,
                                                          steps=cfg.inpaint_steps), lambda: C.unet(9))
    judge = stages.run("judge", lambda: train_judge(pool, cfg), Judge)
    save_model(out, clip, tok, prior, ae, decoder, inpaint)
    judge.save(out / "judge.safetensors")
    figures = {"clip_zero_shot_top1": round(zero_shot, 4), "train_minutes": round((time.perf_counter() - t0) / 60, 1),
               "config": dataclasses.asdict(cfg)}
    (out / "training.json").write_text(json.dumps(figures, indent=2) + "\n")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description="Train the shapes-demo unCLIP (make demo-model).")
    parser.add_argument("out", type=Path)
    parser.add_argument("--quick", action="store_true", help="a few steps per stage: checks the plumbing only")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = TrainConfig()
    if args.quick:
        cfg = dataclasses.replace(cfg, pool=512, clip_steps=5, ae_steps=5, decoder_steps=5, prior_steps=5,
                                  inpaint_steps=5, judge_steps=5)
    print(json.dumps(train_all(args.out, cfg), indent=2))


if __name__ == "__main__":
    main()
