"""Batches and augmentation on the device where the uint8 images live: shuffle, pad-crop, flip, normalise."""
from __future__ import annotations

from typing import Iterator

import torch

from analysis.validation import check_choice, check_int
from experiments.runs.dataset import PAD_MODES

__all__ = ["normalize", "augment_batch", "iterate_batches"]


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``N x C x H x W`` -> ``dtype``, scaled to [0, 1] then standardised per channel."""
    x = images.to(dtype) / 255.0
    return (x - mean.to(x.device, dtype).view(1, -1, 1, 1)) / std.to(x.device, dtype).view(1, -1, 1, 1)


def _draw_augment(n: int, generator: torch.Generator, pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Draw order (row shifts, column shifts, flip coins) is part of the seeded contract: changing it
    # changes every augmented run.
    dev = generator.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    flips = torch.rand(n, generator=generator, device=dev) < 0.5
    return dy, dx, flips


def _source_index(shift: torch.Tensor, size: int, pad: int, pad_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Source index of every output position (n, size) and whether it falls inside the image."""
    idx = shift.view(-1, 1) - pad + torch.arange(size, device=shift.device)
    inside = (idx >= 0) & (idx < size)
    if pad_mode == "reflect":  # torch's "reflect": -1 -> 1, size -> size - 2 (the edge is not repeated)
        idx = torch.where(idx < 0, -idx, idx)
        idx = torch.where(idx >= size, 2 * (size - 1) - idx, idx)
        inside = torch.ones_like(inside)
    return idx.clamp(0, size - 1), inside


def _apply_augment(images, dy, dx, flips, pad: int, pad_mode: str) -> torch.Tensor:
    n, c, h, w = images.shape
    rows, row_in = _source_index(dy, h, pad, pad_mode)
    cols, col_in = _source_index(dx, w, pad, pad_mode)
    # Flipping the crop = reading its columns right to left, so crop and flip are one gather.
    cols = torch.where(flips.view(n, 1), cols.flip(1), cols)
    col_in = torch.where(flips.view(n, 1), col_in.flip(1), col_in)
    flat = (rows.view(n, h, 1) * w + cols.view(n, 1, w)).view(n, 1, h * w).expand(n, c, h * w)
    out = images.reshape(n, c, h * w).gather(2, flat).view(n, c, h, w)
    if pad_mode == "zero":
        out = out * (row_in.view(n, 1, h, 1) & col_in.view(n, 1, 1, w)).to(out.dtype)
    return out


def augment_batch(images: torch.Tensor, generator: torch.Generator, *, pad: int = 4,
                  pad_mode: str = "reflect", flip: bool = True) -> torch.Tensor:
    """Random crop after padding by ``pad`` (``"reflect"`` or ``"zero"``) and a random horizontal flip.

    The standard CIFAR augmentation of the ResNet papers (pad 4, crop 32, flip with p = 1/2), as one
    batched gather on ``images``' device and dtype (uint8 before normalisation: zero padding is then
    black, as in torchvision's ``RandomCrop(32, padding=4)``; reflect padding commutes with
    normalisation). Random numbers come from ``generator`` on its own device, so one seeded CPU
    generator gives the same crops whether the images are on the CPU or a GPU.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W; got shape {tuple(images.shape)}")
    pad = check_int("pad", pad, min_value=0, max_value=min(images.shape[2:]) - 1)
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a seeded torch.Generator; got {type(generator).__name__}")
    dy, dx, flips = _draw_augment(images.shape[0], generator, pad)
    if not flip:
        flips = torch.zeros_like(flips)
    dev = images.device
    return _apply_augment(images, dy.to(dev), dx.to(dev), flips.to(dev), pad, pad_mode)


def iterate_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, mean: torch.Tensor,
                    std: torch.Tensor, *, shuffle: bool = False, generator: torch.Generator | None = None,
                    augment: bool = False, pad_mode: str = "reflect", pad: int = 4, drop_last: bool = False,
                    dtype: torch.dtype = torch.float32, channels_last: bool = False,
                    shard: tuple[int, int] | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalised ``(images, labels)`` batches on ``images``' device; shuffling/augmenting use ``generator``.

    Every random number of the epoch (the permutation, then each batch's crops and flips in the
    order ``augment_batch`` draws them) is drawn up front on the generator's device and moved to
    the data's device in one copy: a per-batch host-to-GPU copy would synchronise the stream and
    let the GPU run dry. The values equal those of per-batch draws, so results do not depend on
    where the data lives. Augmentation works on uint8 and normalisation comes last, which for
    reflect padding gives bit-for-bit what normalising first would.

    ``shard=(rank, world_size)`` (data-parallel training) yields only rank's part of every batch:
    the batch's indices are split into ``world_size`` contiguous parts (``torch.tensor_split``:
    sizes differ by at most one), after the same draws as without ``shard``, so the ranks' parts
    of a batch together are exactly the one-process batch, augmentations included.
    """
    batch_size = check_int("batch_size", batch_size, min_value=1)
    pad_mode = check_choice("pad_mode", pad_mode, PAD_MODES)
    if (shuffle or augment) and generator is None:
        raise ValueError("generator must be a seeded torch.Generator when shuffle or augment is set; got None")
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images and labels must have the same length; got {images.shape[0]} and {labels.shape[0]}")
    if shard is not None:
        if (not isinstance(shard, tuple) or len(shard) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                or not 0 <= shard[0] < shard[1]):
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size; got {shard!r}")
    dev, n = images.device, images.shape[0]
    stop = n - n % batch_size if drop_last else n
    starts = range(0, stop, batch_size)
    order = (torch.randperm(n, generator=generator, device=generator.device) if shuffle
             else torch.arange(n)).to(dev)
    if augment:
        pad = check_int("pad", pad, min_value=0, max_value=min(images.shape[2:]) - 1)
        draws = [_draw_augment(min(batch_size, n - s), generator, pad) for s in starts]
        dy, dx, flips = (torch.cat([d[k] for d in draws]).to(dev) if draws else None for k in range(3))
    mean, std = mean.to(dev), std.to(dev)
    # bf16/fp16 cannot hold x/255 exactly; normalise in float32 and round once.
    work = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    for start in starts:
        idx = order[start:start + batch_size]
        lo, hi = start, start + idx.shape[0]
        if shard is not None:
            rank, world = shard
            # Part boundaries of torch.tensor_split(idx, world), computed on the host: no device sync.
            size, extra = divmod(idx.shape[0], world)
            lo = start + rank * size + min(rank, extra)
            hi = lo + size + (rank < extra)
            idx = order[lo:hi]
        x = images[idx]
        if augment:
            sl = slice(lo, hi)
            x = _apply_augment(x, dy[sl], dx[sl], flips[sl], pad, pad_mode)
        x = normalize(x, mean, std, work).to(dtype)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels[idx]
