"""``ImageDataset`` and what every loader shares: splits, subsampling, the folders searched for data.

The datasets themselves are ``experiments.runs.data``'s (the module docstring lists them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from analysis.validation import check_choice, check_int, check_real

__all__ = ["ImageDataset", "CIFAR10_CLASSES", "PAD_MODES", "IMAGE_EXTENSIONS", "SPLITS", "data_roots", "not_found",
           "CIFAR_HOW", "make_dataset", "check_val_fraction", "train_val_split", "subsample"]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
PAD_MODES = ("reflect", "zero")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
SPLITS = ("train", "test")


@dataclass
class ImageDataset:
    """Train/test uint8 images (N x 3 x 32 x 32), int64 labels, and the train normalisation stats.

    ``val_images`` / ``val_labels`` are ``None`` unless the loader was asked for ``val_fraction``.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    mean: torch.Tensor  # (3,) float32, per channel, in [0, 1] units
    std: torch.Tensor  # (3,) float32
    num_classes: int
    class_names: tuple[str, ...] = ()
    val_images: torch.Tensor | None = None
    val_labels: torch.Tensor | None = None

    def __repr__(self) -> str:
        val = "" if self.val_images is None else f", val={tuple(self.val_images.shape)}"
        return (f"ImageDataset({self.name!r}, train={tuple(self.train_images.shape)}{val}, "
                f"test={tuple(self.test_images.shape)}, classes={self.num_classes}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return self.train_images.device

    def to(self, device: str | torch.device) -> "ImageDataset":
        """A copy with every tensor on ``device`` (images stay uint8: 4x less memory than float32)."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self)
                 if isinstance(getattr(self, f.name), torch.Tensor)}
        return replace(self, **moved)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` of ``"train"``, ``"val"`` or ``"test"``."""
        check_choice("split", name, ("train", "val", "test"))
        if name == "val" and self.val_images is None:
            raise ValueError(f"dataset {self.name!r} has no validation split; load it with val_fraction > 0")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")


def _channel_stats(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    # From each channel's 256-bin histogram: exact in float64 without a float copy of the images
    # (CIFAR-10 in float64 would be 1.2 GB).
    counts = torch.stack([torch.bincount(images[:, c].reshape(-1), minlength=256)
                          for c in range(images.shape[1])]).to(torch.float64)
    values = torch.arange(256, dtype=torch.float64) / 255.0
    n = counts.sum(1)
    mean = counts @ values / n
    # Unbiased (n - 1), as torch.std's default, to keep the statistics this module always had.
    std = (counts @ values.square() - n * mean.square()).clamp_min(0).div(n - 1).sqrt()
    # A constant channel would divide by zero; leave it unscaled.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.to(torch.float32), std.to(torch.float32)


def subsample(images: torch.Tensor, labels: torch.Tensor, max_samples: int | None,
              seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``max_samples`` of a permutation seeded by ``seed`` (everything when None or larger)."""
    if max_samples is None or max_samples >= labels.shape[0]:
        return images, labels
    idx = torch.randperm(labels.shape[0], generator=torch.Generator().manual_seed(seed))[:max_samples]
    return images[idx], labels[idx]


def train_val_split(labels, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted index arrays ``(train, val)``: ``round(val_fraction * n_c)`` images of each class c go to val.

    Stratified so a small validation set still sees every class in its proportion; ``seed`` picks
    which images, through its own numpy stream (not the one that shuffles batches).
    """
    labels = np.asarray(labels)
    val_fraction = check_real("val_fraction", val_fraction, min_value=0.0, max_value=1.0, include_max=False)
    seed = check_int("seed", seed, min_value=0)
    rng = np.random.default_rng([seed, 0x5EED])
    val = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        k = int(round(val_fraction * members.size))
        val.append(rng.permutation(members)[:k])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    if val_fraction > 0 and val_idx.size == 0:
        raise ValueError(f"val_fraction={val_fraction:g} holds out no image of {labels.size} training images; "
                         "raise it or set it to 0")
    train_idx = np.setdiff1d(np.arange(labels.size), val_idx, assume_unique=True)
    return train_idx, val_idx


def make_dataset(name, xtr, ytr, xte, yte, num_classes, class_names=(), val_fraction=0.0, seed=0) -> ImageDataset:
    xtr, ytr = np.ascontiguousarray(xtr), np.asarray(ytr, dtype=np.int64)
    xva = yva = None
    if val_fraction > 0:
        tr, va = train_val_split(ytr, val_fraction, seed)
        xva, yva = torch.from_numpy(xtr[va]), torch.from_numpy(ytr[va])
        xtr, ytr = xtr[tr], ytr[tr]
    xtr, xte = torch.from_numpy(np.ascontiguousarray(xtr)), torch.from_numpy(np.ascontiguousarray(xte))
    mean, std = _channel_stats(xtr)
    names = tuple(class_names) or tuple(str(c) for c in range(num_classes))
    return ImageDataset(name, xtr, torch.from_numpy(np.ascontiguousarray(ytr)), xte,
                        torch.from_numpy(np.asarray(yte, dtype=np.int64)), mean, std, int(num_classes),
                        names, xva, yva)


def check_val_fraction(val_fraction) -> float:
    return check_real("val_fraction", val_fraction, min_value=0.0, max_value=1.0, include_max=False)


def data_roots() -> list[Path]:
    """The folders searched for datasets when no path is given, in order (module docstring)."""
    repo = Path(__file__).resolve().parents[2]
    env = [Path(p).expanduser() for p in os.environ.get("BLOCKAUDIT_DATA", "").split(os.pathsep) if p]
    candidates = env + [Path.cwd() / "data", repo / "data", repo / "shared" / "data", repo.parent / "shared" / "data",
                        Path.home() / ".cache" / "blockaudit", Path.home() / "data"]
    seen, roots = set(), []
    for p in candidates:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            roots.append(p)
    return roots


def not_found(what: str, tried: Sequence[Path], how: str) -> FileNotFoundError:
    listing = "\n".join(f"  - {p}" for p in tried)
    return FileNotFoundError(f"{what} not found; tried:\n{listing}\n{how}")


CIFAR_HOW = (
    "To get it: python -c \"import torchvision; torchvision.datasets.{tv}('DIR', download=True)\" "
    "(creates DIR/{folder}), or download https://www.cs.toronto.edu/~kriz/{tarball} and extract it into DIR; "
    "then pass root=DIR (blockaudit: --data-option root=DIR) or set BLOCKAUDIT_DATA=DIR.{extra}")
