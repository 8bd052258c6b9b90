"""What the probes share: the data as validated batches, and the model as a copy that runs under vmap.

``as_batches`` turns one ``(inputs, targets)`` pair or an iterable of them (a DataLoader) into a
list of batches on the model's device and dtype, refusing non-finite values. ``functional_copy``
deep-copies a model and replaces every BatchNorm layer by ``FunctionalBatchNorm``, an explicit
affine form with the same parameter and buffer names that runs under ``torch.func.vmap`` (the
landscape's batched grid points, the curvature's batched Hessian-vector products); the caller's
model is never modified.

How BatchNorm runs under vmap: every ``_BatchNorm`` becomes a module whose forward is the explicit
affine form ``(x - mean) * rsqrt(var + eps) * weight + bias`` (a *functional form*, not folded into
the convolutions: folding would need the conv that precedes each BN, and the pre-activation blocks
of the zoo put BN *before* their convs). This runs under vmap on every backend (cuDNN's BatchNorm
raises "NYI: querying is_contiguous inside of vmap"), and its ``"collect"`` mode returns the batch
statistics that the landscape's ``bn="recalibrate"`` needs as ordinary outputs of the vmapped
function, so recalibration is batched over grid points too.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["as_batches", "per_sample_cross_entropy", "has_batchnorm", "FunctionalBatchNorm", "functional_copy"]


def as_batches(name: str, data, device, dtype) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``data`` (one ``(inputs, targets)`` pair of tensors or an iterable of such pairs) as a list of
    batches on ``device``, floating inputs cast to ``dtype``.

    ``name`` is the parameter's name in the error messages. Raises TypeError for anything but such
    pairs, ValueError for no batch at all or for NaN or infinite inputs (or float targets).
    """
    if (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        data = [data]
    try:
        items = list(data)
    except TypeError:
        raise TypeError(f"{name} must be an (inputs, targets) pair of tensors or an iterable of such "
                        f"pairs (a DataLoader); got {type(data).__name__}") from None
    if not items:
        raise ValueError(f"{name} is empty; pass at least one (inputs, targets) batch")
    batches = []
    for i, item in enumerate(items):
        if not (isinstance(item, (tuple, list)) and len(item) >= 2):
            raise TypeError(f"{name}[{i}] must be an (inputs, targets) pair; got {type(item).__name__}")
        x, y = item[0], item[1]
        x = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
        y = y.to(device)
        # A NaN or Inf input (or float target) turns every loss it touches into NaN, which a grid or
        # a Hessian would report as a result; checked after the cast, so an overflow to Inf counts.
        for part, t in (("inputs", x), ("targets", y)):
            if t.is_floating_point() or t.is_complex():
                bad = int(t.numel() - torch.isfinite(t).sum())
                if bad:
                    raise ValueError(
                        f"{name}[{i}] {part} must be finite; got {bad} NaN or infinite entries of {t.numel()} "
                        f"(as {t.dtype}). Remove or repair those samples before computing the loss")
        batches.append((x, y))
    return batches


def per_sample_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The probes' default loss: cross entropy of every sample, shape (N,) (no reduction)."""
    return F.cross_entropy(logits, targets, reduction="none")


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has any BatchNorm layer (``torch.nn.modules.batchnorm._BatchNorm``)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


class FunctionalBatchNorm(nn.Module):
    """A ``_BatchNorm`` stand-in with the same parameter/buffer names, runnable under vmap.

    ``mode``: ``"eval"`` normalises with the running statistics; ``"batch"`` with the batch's own
    (biased) statistics; ``"collect"`` like ``"batch"`` and also records the batch mean and
    unbiased variance (what PyTorch's running-stat update would add) in ``self.collected``.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm) -> None:
        super().__init__()
        self.eps = bn.eps
        self.num_features = bn.num_features
        if bn.affine:
            self.weight, self.bias = bn.weight, bn.bias
        else:
            self.weight = self.bias = None
        self.tracks = bn.track_running_stats and bn.running_mean is not None
        if self.tracks:
            self.register_buffer("running_mean", bn.running_mean)
            self.register_buffer("running_var", bn.running_var)
            self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.mode = "eval"
        self.collected: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.mode == "eval" and self.tracks:
            mean, var = self.running_mean, self.running_var
        else:
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dim=dims)
            var = (x - mean.reshape(shape)).square().mean(dim=dims)
            if self.mode == "collect":
                n = x.numel() // x.shape[1]
                self.collected = (mean, var * (n / max(n - 1, 1)))
        y = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.weight is not None:
            y = y * self.weight.reshape(shape) + self.bias.reshape(shape)
        return y


def functional_copy(model: nn.Module) -> tuple[nn.Module, list[tuple[str, FunctionalBatchNorm]]]:
    """A deep copy of ``model`` in eval mode with every BatchNorm replaced by ``FunctionalBatchNorm``.

    Returns the copy and its ``(qualified name, FunctionalBatchNorm)`` pairs; ``model`` is untouched.
    """
    clone = copy.deepcopy(model)
    replaced = []
    for name, module in list(clone.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                fbn = FunctionalBatchNorm(child)
                setattr(module, child_name, fbn)
                replaced.append((f"{name}.{child_name}" if name else child_name, fbn))
    clone.eval()
    return clone, replaced
