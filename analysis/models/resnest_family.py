"""CIFAR ResNets of depth 6n+2 in the four variants of the ResNEst paper (RN, 003, "Empirical results").

Architecture facts follow the authors' public code (CLAIMS.md, "Public implementations"):

- stem: a plain 3x3 conv from the input channels to ``width``; no BN or ReLU after it;
- three stages of n pre-activation basic blocks (``analysis.models.blocks.PreActBasicBlock``) with widths
  ``width, 2*width, 4*width`` (16/32/64 for the paper's models) and strides 1, 2, 2; the first block
  of stages 2 and 3 has a 1x1 projection shortcut on its pre-activated input;
- heads:
  ``standard``   final BN-ReLU-global-average-pool-linear (pre-activation ResNet);
  ``resnest``    pool-linear on the raw residual stream x_L (RN eq. (2): W_{L+1} on x_L);
  ``bn_resnest`` final BN-pool-linear (no ReLU);
  ``a_resnest``  RN eq. (6): logits = H_0 pool(x) + sum_k H_k pool(v_k), one linear map per feature,
                 with the last block's second conv and the final head dropped (nothing reads them).

Every builder takes ``activations: bool = True``; ``False`` passes ``act_layer=nn.Identity``, so no
ReLU remains (the head's too) and the model in eval mode is affine in its input (the linear experiments).

Every model exposes ``pooled_block_features(x) -> [pool(x), pool(v_1), ..., pool(v_L)]`` (the
features the A-ResNEst heads see, v_0 = the input image) and ``forward_with_block_features(x)``
returning ``(logits, features)`` from one forward pass.

Choices not fixed by the paper or the code notes, recorded here: every linear head has a bias
(``nn.Linear`` default; for the A-ResNEst the L+1 biases are redundant but harmless); BN
uses PyTorch defaults; convs are He-normal (fan_out) initialised, BN weight 1 / bias 0, linear
heads PyTorch default. Parameter counts: ResNet-20 standard 0.272M (paper 0.27M), ResNet-110 1.730M
(paper 1.7M), A-ResNEst-20 0.239M (paper 0.24M).
"""
from __future__ import annotations

import torch
from torch import nn

from analysis.models.blocks import PreActBasicBlock, activation_layer, checked_block, conv3x3
from analysis.models import register_model
from analysis.validation import check_choice, check_int

__all__ = ["CifarResNEst", "VARIANTS"]

VARIANTS = ("standard", "resnest", "bn_resnest", "a_resnest")


class CifarResNEst(nn.Module):
    """Pre-activation CIFAR ResNet of depth 6n+2 with one of the four RN heads (module docstring)."""

    def __init__(
        self,
        depth: int = 20,
        variant: str = "standard",
        num_classes: int = 10,
        width: int = 16,
        in_channels: int = 3,
        norm_layer=nn.BatchNorm2d,
        act_layer=nn.ReLU,
        block=None,
    ) -> None:
        super().__init__()
        depth = check_int("depth", depth, min_value=8)
        if (depth - 2) % 6:
            raise ValueError(f"depth must be 6n+2 (20, 56, 110, ...); got {depth}")
        self.variant = check_choice("variant", variant, VARIANTS)
        num_classes = check_int("num_classes", num_classes, min_value=1)
        width = check_int("width", width, min_value=1)
        in_channels = check_int("in_channels", in_channels, min_value=1)
        self.depth, self.num_classes, self.width = depth, num_classes, width
        n = (depth - 2) // 6
        widths = (width, 2 * width, 4 * width)

        # ``block``: another residual block in this skeleton (analysis.models.skeleton): a factory
        # ``block(in_channels, out_channels, stride) -> nn.Module``, checked by ``checked_block``.
        if block is not None and self.variant != "standard":
            raise ValueError(f"a user block goes into the standard skeleton only; got variant {self.variant!r}")
        self.custom_blocks = block is not None

        self.stem = conv3x3(in_channels, width)
        blocks: list[nn.Module] = []
        channels, block_widths = width, []
        for stage, out_channels in enumerate(widths):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                last = stage == 2 and i == n - 1
                if block is None:
                    blocks.append(PreActBasicBlock(
                        channels, out_channels, stride, norm_layer=norm_layer, act_layer=act_layer,
                        mid_feature_only=last and self.variant == "a_resnest"))
                else:
                    blocks.append(checked_block(block, channels, out_channels, stride, index=len(blocks)))
                block_widths.append(out_channels)
                channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        #: widths of [v_0, v_1, ..., v_L] as returned by ``pooled_block_features``
        self.feature_widths: tuple[int, ...] = (in_channels, *block_widths)

        if self.variant == "a_resnest":
            self.heads = nn.ModuleList(nn.Linear(k, num_classes) for k in self.feature_widths)
        else:
            head: list[nn.Module] = []
            if self.variant in ("standard", "bn_resnest"):
                head.append(norm_layer(channels))
            if self.variant == "standard":
                head.append(act_layer())
            self.final = nn.Sequential(*head)
            self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # A user's blocks keep the initialisation their constructor gave them; the skeleton's own
        # layers (stem, head) get the baseline's.
        own = [self.stem, self.final, self.fc] if self.custom_blocks else [self]
        for m in (m for part in own for m in part.modules()):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _pooled(self, t: torch.Tensor) -> torch.Tensor:
        return self.pool(t).flatten(1)

    def forward_with_block_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One forward pass returning ``(logits, [pool(x), pool(v_1), ..., pool(v_L)])``."""
        if self.custom_blocks:
            lacking = next((b for b in self.blocks if not hasattr(b, "forward_with_feature")), None)
            if lacking is not None:
                raise ValueError(f"block features (v_i) need forward_with_feature(x) -> (x_next, v) on every block; "
                                 f"{type(lacking).__name__} has none, so the risk gap (RN Prop. 2) does not apply")
        features = [self._pooled(x)]
        stream = self.stem(x)
        for block in self.blocks:
            nxt, v = block.forward_with_feature(stream)
            features.append(self._pooled(v))
            if nxt is not None:
                stream = nxt
        if self.variant == "a_resnest":
            logits = sum(h(f) for h, f in zip(self.heads, features))
        else:
            logits = self.fc(self._pooled(self.final(stream)))
        return logits, features

    def pooled_block_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[pool(x), pool(v_1), ..., pool(v_L)]``: the globally pooled features the A-ResNEst heads see."""
        return self.forward_with_block_features(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.variant == "a_resnest":
            return self.forward_with_block_features(x)[0]
        stream = self.stem(x)
        for block in self.blocks:
            stream = block(stream)
        return self.fc(self._pooled(self.final(stream)))


_DESCRIPTIONS = {
    "standard": "pre-activation ResNet-{d} (final BN-ReLU-pool-linear)",
    "resnest": "ResNEst-{d}: pool-linear on the raw residual stream",
    "bn_resnest": "BN-ResNEst-{d}: final BN-pool-linear, no ReLU",
    "a_resnest": "A-ResNEst-{d}: sum of linear heads on pooled input and mid-block features",
}
_PREFIX = {"standard": "resnet", "resnest": "resnest", "bn_resnest": "bn_resnest", "a_resnest": "a_resnest"}


def _make_builder(depth: int, variant: str):
    def builder(num_classes: int = 10, width: int = 16, in_channels: int = 3,
                activations: bool = True) -> CifarResNEst:
        return CifarResNEst(depth=depth, variant=variant, num_classes=num_classes, width=width,
                            in_channels=in_channels, act_layer=activation_layer(activations))

    name = f"{_PREFIX[variant]}{depth}"
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = _DESCRIPTIONS[variant].format(d=depth)
    return name, builder


for _depth in (20, 56, 110):
    for _variant in VARIANTS:
        _name, _builder = _make_builder(_depth, _variant)
        register_model(_name, source="code", paper="RN (003)")(_builder)


# --- Wide ResNets (WRN-d-k) in the four variants --------------------------------------------------
# The RN authors' code builds WRN-16-8 / WRN-40-4 with the same ResNet class as ResNet-20/110
# (stages of n = (d-4)/6 blocks, widths 16k/32k/64k) and a stem conv straight from the input to 16k
# channels, unlike Zagoruyko & Komodakis' 16-channel stem (which saves ~0.13M on WRN-16-8). So a
# WRN-d-k is ``CifarResNEst(depth=d-2, width=16k)``: WRN's depth d = 6n + 4 also counts the two
# projection shortcuts, CifarResNEst's 6n + 2 does not; its ``depth`` attribute is therefore d - 2.
# Counts: WRN-16-8 11.09M (paper 11M), A-ResNEst 8.74M (8.7M); WRN-40-4 8.98M (9.0M), A-ResNEst 8.41M (8.4M);
# with 100 classes A-ResNEst 8.91M (8.9M) and 8.66M (8.7M).
# ``activations=False`` replaces every ReLU by the identity (the linear experiments).

_WRN = {"wrn16_8": (16, 8), "wrn40_4": (40, 4)}


def _make_wrn_builder(tag: str, depth: int, widen: int, variant: str):
    def builder(num_classes: int = 10, width: int = 16 * widen, in_channels: int = 3,
                activations: bool = True) -> CifarResNEst:
        return CifarResNEst(depth=depth - 2, variant=variant, num_classes=num_classes, width=width,
                            in_channels=in_channels, act_layer=activation_layer(activations))

    prefix = "" if variant == "standard" else f"{variant}_"
    name = f"{prefix}{tag}"
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = _DESCRIPTIONS[variant].format(d=depth).replace(f"-{depth}", f" WRN-{depth}-{widen}", 1)
    return name, builder


for _tag, (_depth, _widen) in _WRN.items():
    for _variant in VARIANTS:
        _name, _builder = _make_wrn_builder(_tag, _depth, _widen, _variant)
        register_model(_name, source="code", paper="RN (003)")(_builder)
