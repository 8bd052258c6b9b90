"""The all-convolutional identity ResNet of Hardt & Ma, "Identity Matters in Deep Learning" (IM, 004, Experiments).

What the review (our source, 004) states: a standard TensorFlow CIFAR ResNet tweaked to have
convolutions of constant size, **no batch norm**, a smaller weight initialisation, and **a fixed
random projection as the last layer**, "therefore all parameters are in the convolutions";
~13.6M parameters; the same net for CIFAR-10 and CIFAR-100. Everything else is our reading,
recorded here:

- Layout (the original paper's CIFAR table, which the review's 13.6M matches): a 3x3 stem conv
  3 -> 16, three stages of 9 residual units with widths 64 / 128 / 256 and strides 1 / 2 / 2
  (55 convolutions), global average pooling, then the fixed projection 256 -> classes.
  ``width`` scales the stages (w, 2w, 4w), ``stem_width`` the stem.
- Residual unit, ``preactivation=True`` (default): x + conv2(relu(conv1(relu(x)) + b)), the
  TensorFlow pre-activation unit (BN-ReLU-conv-BN-ReLU-conv) with its two BNs removed, as the review's
  "tweaked a standard ResNet ... no batch norm" says. ``preactivation=False`` gives the unit of the
  theory, IM eq. (1): h(x) = x + V relu(U x + b) (one ReLU, between the two maps). In both, the
  bias b sits on the first conv (eq. (1)'s b_j) and nowhere else. With ``preactivation=True`` a
  final ReLU precedes the pooling (the TF net's last BN-ReLU without its BN).
- Shortcut when the shape changes: parameter-free, average pooling by the stride and zero
  channels padded evenly on both sides (the TensorFlow CIFAR ResNet's shortcut), so every unit is
  the identity when its weights are zero: the identity parametrisation the paper is about.
- Initialisation: conv weights N(0, 1/fan_in) (LeCun normal, half the variance of He's 2/fan_in:
  our reading of "smaller weight initialization", whose footnote the review drops), biases 0.
- The projection: a buffer (not a parameter: it gets no gradient and no optimiser ever sees it)
  with N(0, 1/C) entries, C = 4 * width; drawn from ``projection_seed`` when given, else from
  torch's global generator. It is saved in the state dict so a checkpoint reproduces it.

Parameter count: 13.54M at the default sizes (paper/review: 13.5M / ~13.6M).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from analysis.models.blocks import activation_layer, conv3x3
from analysis.models import register_model
from analysis.models.oai_nets import ZeroPadShortcut
from analysis.validation import check_int

__all__ = ["IdentityResidualUnit", "IdentityResNet"]


class IdentityResidualUnit(nn.Module):
    """x + conv2(act(conv1(act(x)) + b)) (``preactivation``) or x + conv2(act(conv1(x) + b)) (IM eq. (1))."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, preactivation: bool = True,
                 act_layer=nn.ReLU) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, min_value=1)
        out_channels = check_int("out_channels", out_channels, min_value=in_channels)
        stride = check_int("stride", stride, min_value=1)
        self.pre_act = act_layer() if preactivation else nn.Identity()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=True)
        self.act = act_layer()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else ZeroPadShortcut(in_channels, out_channels, stride, pool="avg", symmetric=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.conv2(self.act(self.conv1(self.pre_act(x))))


class IdentityResNet(nn.Module):
    """Hardt & Ma's CIFAR net: no batch norm, residual units, a fixed random last layer (module docstring)."""

    def __init__(self, num_classes: int = 10, width: int = 64, stem_width: int = 16, blocks_per_stage: int = 9, *,
                 preactivation: bool = True, in_channels: int = 3, projection_seed: int | None = None,
                 act_layer=nn.ReLU) -> None:
        super().__init__()
        num_classes = check_int("num_classes", num_classes, min_value=1)
        width = check_int("width", width, min_value=1)
        stem_width = check_int("stem_width", stem_width, min_value=1, max_value=width)
        n = check_int("blocks_per_stage", blocks_per_stage, min_value=1)
        in_channels = check_int("in_channels", in_channels, min_value=1)
        self.stem = conv3x3(in_channels, stem_width)
        units, channels = [], stem_width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                units.append(IdentityResidualUnit(channels, out_channels, stride, preactivation=preactivation,
                                                  act_layer=act_layer))
                channels = out_channels
        self.units = nn.Sequential(*units)
        self.final_act = act_layer() if preactivation else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                nn.init.normal_(m.weight, std=1.0 / math.sqrt(fan_in))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        gen = None
        if projection_seed is not None:
            gen = torch.Generator().manual_seed(check_int("projection_seed", projection_seed, min_value=0))
        proj = torch.randn(channels, num_classes, generator=gen) / math.sqrt(channels)
        self.register_buffer("projection", proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.pool(self.final_act(self.units(self.stem(x)))).flatten(1)
        return features @ self.projection.to(features.dtype)


@register_model(source="paper", paper="IM (004)")
def identity_resnet(num_classes: int = 10, width: int = 64, stem_width: int = 16, blocks_per_stage: int = 9,
                    activations: bool = True, preactivation: bool = True, projection_seed: int | None = None,
                    in_channels: int = 3) -> IdentityResNet:
    """Hardt & Ma's all-convolutional ResNet: no batch norm, fixed random final projection (IM-cifar)."""
    return IdentityResNet(num_classes, width, stem_width, blocks_per_stage, preactivation=preactivation,
                          in_channels=in_channels, projection_seed=projection_seed,
                          act_layer=activation_layer(activations))
