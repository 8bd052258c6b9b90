"""BatchNorm in a landscape is an explicit choice, ``bn``.

``"eval"``         the trained running statistics at every point (the model as deployed);
``"recalibrate"``  at every point the statistics PyTorch would hold after ``reset_running_stats()``,
                   ``momentum=None`` and a train-mode pass over ``recalibration_data`` (per-batch mean
                   and unbiased variance, averaged with equal weight per batch), then evaluation with
                   them.
``"perturbed"``    the running statistics move with the weights: directions carry entries for every
                   ``running_mean`` / ``running_var`` (``random_directions(..., bn_statistics_too=True)``),
                   and a point uses ``stat + alpha d1 + beta d2``. Choice: each statistic's direction is
                   a Gaussian vector rescaled as ONE vector to the statistic's norm (the 1-D rule of
                   ``ignore="none"``), whatever ``ignore`` says for the parameters, because zeroing them
                   (``"biasbn"``) would make the mode identical to ``"eval"``; a moved variance below zero
                   is clamped at 0 (the layer then divides by sqrt(eps): a large but finite loss, not
                   NaN). The statistics are drawn after all parameter entries, so a seed's parameter
                   directions are the same with or without them.

A model in train mode that has BatchNorm layers and no ``bn`` raises: its output would depend on the
batch, and silently choosing either mode changes the picture. A model in eval mode defaults to
``"eval"``. Models with ``track_running_stats=False`` always use batch statistics. How the batched
engines run BatchNorm under vmap: ``analysis.probes.batches``.
"""
from __future__ import annotations

import torch
from torch import nn

from analysis.probes.batches import has_batchnorm
from analysis.validation import check_choice

__all__ = ["BN_CHOICES", "bn_statistics", "is_statistic", "resolve_bn"]

BN_CHOICES = ("eval", "recalibrate", "perturbed")


def bn_statistics(model: nn.Module) -> dict[str, torch.Tensor]:
    """The BatchNorm running statistics of ``model``: ``"<layer>.running_mean"`` / ``".running_var"`` -> tensor.

    The buffers that ``bn="perturbed"`` moves along the directions (layers with
    ``track_running_stats=False`` have none).
    """
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_mean is not None:
            prefix = f"{name}." if name else ""
            out[prefix + "running_mean"] = m.running_mean.detach()
            out[prefix + "running_var"] = m.running_var.detach()
    return out


def is_statistic(name: str) -> bool:
    """Whether a state-dict key names a BatchNorm running statistic (``running_mean`` / ``running_var``)."""
    return name.endswith(".running_mean") or name.endswith(".running_var") or name in ("running_mean", "running_var")


def resolve_bn(model: nn.Module, bn: str | None) -> str:
    """The BatchNorm choice to use: validates ``bn`` and refuses a train-mode BN model without one."""
    if bn is not None:
        check_choice("bn", bn, BN_CHOICES)
    if not has_batchnorm(model):
        return "none"
    if bn is None:
        if model.training:
            raise ValueError(
                "model is in train mode and has BatchNorm layers, so its output depends on the batch; "
                "choose bn='eval' (the trained running statistics), bn='recalibrate' (statistics "
                "recomputed at every point) or bn='perturbed' (statistics moved along the directions too), "
                "or call model.eval() first"
            )
        return "eval"
    return bn
