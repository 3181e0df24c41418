"""Train a small classifier on a dalle-data output, as training code would.

    python examples/train_classifier.py OUT [--format parquet|imagefolder] [--epochs 1]

Parquet is read with `datasets` (image → PIL, label → ClassLabel); ImageFolder
with torchvision's `ImageFolder`. Nothing dalle-data specific is needed to
read either: that is the point.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms

TRANSFORM = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor()])


def parquet_dataset(out: Path) -> tuple[torch.utils.data.Dataset, list[str]]:
    import datasets

    ds = datasets.load_dataset("parquet", data_dir=str(out / "parquet"), split="train")
    names = ds.features["label"].names
    ds = ds.with_transform(lambda b: {"x": [TRANSFORM(im.convert("RGB")) for im in b["image"]], "y": b["label"]})
    return ds, names


def imagefolder_dataset(out: Path) -> tuple[torch.utils.data.Dataset, list[str]]:
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(out / "imagefolder" / "train"), transform=TRANSFORM)
    return [{"x": x, "y": y} for x, y in ds], ds.classes


def train(out: Path, fmt: str, epochs: int) -> float:
    torch.manual_seed(0)
    ds, names = parquet_dataset(out) if fmt == "parquet" else imagefolder_dataset(out)
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, collate_fn=lambda rows: (
        torch.stack([r["x"] for r in rows]), torch.tensor([r["y"] for r in rows])))
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                          nn.Linear(128, len(names)))
    optim = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss = torch.tensor(0.0)
    for epoch in range(epochs):
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optim.zero_grad()
            loss.backward()
            optim.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f} on {len(ds)} images, classes {names}")
    return float(loss.detach())


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--format", default="parquet", choices=["parquet", "imagefolder"])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args()
    train(args.out, args.format, args.epochs)
