"""Residual blocks shared by the model zoo.

Each block is a small ``nn.Module`` whose ``forward`` reads like its paper's equation and that
takes ``norm_layer`` / ``act_layer`` factories (timm's convention), so a zoo variant without batch
norm or with another activation needs no new class.

``PreActBasicBlock`` is the pre-activation basic block of He et al. (2016) as the ResNEst authors'
public code uses it (RN paper, 003, Fig. 4 and the "Public implementations" note of CLAIMS.md):

    a   = act(norm1(x))                       pre-activated input
    v   = act(norm2(conv3x3_1(a)))            mid-block feature, the paper's v_i = G_i(x_{i-1})
    out = shortcut + conv3x3_2(v)             x_i = x_{i-1} + W_i v_i            (RN eq. (1))

with ``shortcut = x`` when the shape is kept and ``shortcut = conv1x1(a)`` (on the *pre-activated*
input, as in the authors' code) when the stride or the width changes. ``conv3x3_2`` is the paper's
W_i; the A-ResNEst reads v_i directly and, for its last block, drops W_i altogether
(``mid_feature_only=True``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from analysis.validation import check_bool, check_int

__all__ = ["conv3x3", "conv1x1", "PreActBasicBlock", "init_weights_", "activation_layer", "checked_block"]

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]


def activation_layer(activations: bool, act_layer: ActFactory = nn.ReLU) -> ActFactory:
    """``act_layer``, or ``nn.Identity`` for ``activations=False`` (the zoo's linear mode)."""
    return act_layer if check_bool("activations", activations) else nn.Identity


def init_weights_(model: nn.Module) -> nn.Module:
    """He-normal (fan_out) convs, BN weight 1 / bias 0, Xavier-uniform linear layers with zero bias."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a following norm layer makes a bias redundant)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    """1x1 projection convolution, no bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block exposing its mid-block feature v (see the module docstring).

    Parameters
    ----------
    in_channels, out_channels, stride:
        Shapes; a 1x1 projection shortcut is used when ``stride != 1`` or the width changes.
    norm_layer, act_layer:
        Factories ``norm_layer(channels)`` and ``act_layer()``; default BatchNorm2d and ReLU.
    mid_feature_only:
        Build only what v needs (no second conv, no shortcut). ``forward`` then returns v, and
        ``forward_with_feature`` returns ``(None, v)``. Used for the last block of an A-ResNEst.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        norm_layer: NormFactory = nn.BatchNorm2d,
        act_layer: ActFactory = nn.ReLU,
        mid_feature_only: bool = False,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, min_value=1)
        out_channels = check_int("out_channels", out_channels, min_value=1)
        stride = check_int("stride", stride, min_value=1)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.mid_feature_only = bool(mid_feature_only)

        self.norm1 = norm_layer(in_channels)
        self.act1 = act_layer()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.norm2 = norm_layer(out_channels)
        self.act2 = act_layer()
        needs_projection = stride != 1 or in_channels != out_channels
        if self.mid_feature_only:
            self.conv2 = None
            self.shortcut = None
        else:
            self.conv2 = conv3x3(out_channels, out_channels)
            self.shortcut = conv1x1(in_channels, out_channels, stride) if needs_projection else None

    def forward_with_feature(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Return ``(x_next, v)``: the block's output and its mid-block feature v."""
        a = self.act1(self.norm1(x))
        v = self.act2(self.norm2(self.conv1(a)))
        if self.conv2 is None:
            return None, v
        identity = x if self.shortcut is None else self.shortcut(a)
        return identity + self.conv2(v), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, v = self.forward_with_feature(x)
        return v if out is None else out

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, stride={self.stride}"
                + (", mid_feature_only=True" if self.mid_feature_only else ""))


def _describe(factory) -> str:
    return getattr(factory, "__qualname__", None) or type(factory).__name__


def checked_block(factory: Callable[[int, int, int], nn.Module], in_channels: int, out_channels: int, stride: int,
                  *, index: int = 0, size: int = 8) -> nn.Module:
    """``factory(in_channels, out_channels, stride)``, checked to fit a ResNet skeleton where the baseline's block sat.

    The block must be an ``nn.Module`` mapping ``(N, in_channels, H, W)`` to
    ``(N, out_channels, H / stride, W / stride)`` with finite values; this is tried once on a
    seeded ``2 x in_channels x size x size`` input in eval mode (so no BatchNorm statistic moves and
    the global RNG is untouched). Every failure names the block, its arguments, what was expected
    and what came back.
    """
    name = _describe(factory)
    call = f"{name}({in_channels}, {out_channels}, {stride})"
    try:
        block = factory(in_channels, out_channels, stride)
    except TypeError as exc:
        raise TypeError(f"block {index}: {call} raised TypeError ({exc}); a block must be built as "
                        "block(in_channels, out_channels, stride), like the baseline's residual block") from None
    if not isinstance(block, nn.Module):
        raise TypeError(f"block {index}: {call} returned a {type(block).__name__}; expected an nn.Module")
    x = torch.randn(2, in_channels, size, size, generator=torch.Generator().manual_seed(index))
    expected = (2, out_channels, size // stride, size // stride)
    was_training = block.training
    block.eval()
    try:
        with torch.no_grad():
            out = block(x)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported with the shapes involved
        raise ValueError(f"block {index}: {call} failed on an input of shape {tuple(x.shape)} (expected output "
                         f"{expected}): {type(exc).__name__}: {exc}") from exc
    finally:
        block.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"block {index}: {call} returned a {type(out).__name__} for an input of shape "
                        f"{tuple(x.shape)}; expected one tensor of shape {expected}")
    if tuple(out.shape) != expected:
        raise ValueError(f"block {index}: {call} maps an input of shape {tuple(x.shape)} to {tuple(out.shape)}; "
                         f"the skeleton expects {expected}, i.e. (N, out_channels, H / stride, W / stride)")
    if not bool(torch.isfinite(out).all()):
        raise ValueError(f"block {index}: {call} returns non-finite values at initialisation (on a seeded "
                         f"N(0, 1) input of shape {tuple(x.shape)})")
    return block
