"""Float16 headroom of Newton blocks (claim NRL-fp16): how large the second-order term gets.

NRL sec. 4.4 reports that the second-order term of eq. (3), ``alpha * N2(N1(s) * f)``, "might cause
numeric overflow in float16" and adds a tanh after N2 (``second_order_tanh=True``). Where can it
overflow? float16's largest finite value is 65504, and inside the term three tensors can exceed it:

- ``product``: ``N1(s) * f``, an elementwise product of two activations (its magnitude is roughly the
  product of theirs, so activations of ~256 already reach 65504);
- ``term``: ``N2(product)`` (after the tanh when there is one, so at most 1 in magnitude then);
- ``output``: the block's output ``phi(s + f + alpha * term)``.

The tanh sits *after* N2, so it bounds ``term`` and what the block adds to the residual stream,
but not ``product``: a product that overflows is already inf before the tanh sees it.
``second_order_peaks`` measures the three magnitudes of every :class:`NewtonBlock` of a model on
given inputs, in float32 (true magnitudes, never clipped to inf), so a run that did not overflow
still says how close it came: ``headroom = 65504 / peak``.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from analysis.models.newton_resnet import NewtonBlock

__all__ = ["FP16_MAX", "second_order_peaks"]

FP16_MAX = float(torch.finfo(torch.float16).max)  # 65504
_KINDS = ("product", "term", "output")


@torch.no_grad()
def second_order_peaks(model: nn.Module, images: torch.Tensor, *, batch_size: int = 512) -> dict:
    """Largest |value| of each Newton block's ``product``, ``term`` and ``output`` on ``images``.

    ``images``: a float tensor (N, C, H, W), already normalised as the model expects. The model
    runs in eval mode (its running BatchNorm statistics) in float32 and is left in the mode it had.
    Returns ``{"blocks": {name: {"product": p, "term": t, "output": o}}, "peak": {kind: max over
    blocks}, "headroom": {kind: FP16_MAX / peak}, "fp16_max": 65504, "samples": N,
    "tanh": [names of blocks with second_order_tanh]}``. Raises ``ValueError`` for a model without
    Newton blocks or bad inputs.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.ndim != 4:
        raise ValueError("images must be a float tensor of shape (N, C, H, W), normalised as the model expects; got "
                         + (f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor)
                            else type(images).__name__))
    if images.shape[0] == 0:
        raise ValueError("images is empty: need at least one image")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    blocks = {name: m for name, m in model.named_modules() if isinstance(m, NewtonBlock)}
    if not blocks:
        raise ValueError(f"{type(model).__name__} has no Newton blocks (NewtonBlock): nothing to measure")
    device = next(model.parameters()).device
    peaks = {name: {k: 0.0 for k in _KINDS} for name in blocks}

    def record(name: str, kind: str, tensor: torch.Tensor) -> None:
        value = float(tensor.detach().abs().amax()) if tensor.numel() else 0.0
        peaks[name][kind] = max(peaks[name][kind], value) if math.isfinite(value) else math.inf

    handles = []
    for name, block in blocks.items():
        handles.append(block.n2.register_forward_pre_hook(lambda _m, inp, n=name: record(n, "product", inp[0])))
        handles.append(block.n2.register_forward_hook(lambda _m, _i, out, n=name: record(n, "term", out)))
        handles.append(block.register_forward_hook(lambda _m, _i, out, n=name: record(n, "output", out)))
    was_training = model.training
    model.eval()
    try:
        for start in range(0, images.shape[0], batch_size):
            model(images[start:start + batch_size].to(device=device, dtype=torch.float32))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    overall = {k: max(p[k] for p in peaks.values()) for k in _KINDS}
    return {"blocks": peaks, "peak": overall,
            "headroom": {k: (FP16_MAX / v if v > 0 else math.inf) for k, v in overall.items()},
            "fp16_max": FP16_MAX, "samples": int(images.shape[0]),
            "tanh": [name for name, b in blocks.items() if b.second_order_tanh]}
