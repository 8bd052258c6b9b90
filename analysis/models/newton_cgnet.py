"""Newton-CGNets of "Newton design" (ND, papers/001, sec. 3.4, Alg. 2, sec. 4.1.2) and their ResNet baselines.

Registered models (32x32 inputs, any class count):

==========================  ================  ===================================  ==========  ==========
name                        CG blocks         paper                                paper #par  ours (C10)
==========================  ================  ===================================  ==========  ==========
``newton_cgnet10``          10-{1, 1, 2}      Table 3                              0.29M       0.277M
``newton_cgnet16``          16-{2, 2, 3}      Table 3                              0.48M       0.472M
``newton_cgnet22``          22-{3, 3, 4}      Table 3                              0.68M       0.666M
``newton_cgnet28``          28-{4, 4, 5}      Table 3                              0.87M       0.860M
``newton_cgnet56``          56-{9, 9, 9}      Tables 3, 4                          1.70M       1.685M
``newton_cgnet82``          82-{13, 13, 14}   Tables 3, 4                          2.62M       2.610M
``newton_cgnet110``         110-{18, 18, 18}  Table 4, Fig. 3(b)                   3.45M       3.435M
``resnet32``                6n+2, n = 5       Table 3 baseline                     0.46M       0.467M
``resnet164``               6n+2, n = 27      Tables 3, 4 baseline ("ResNet [4]")  2.62M       2.605M
``resnet164_bottleneck``    9n+2, n = 18      Table 4 "ResNet (pre-activation)"    (2.62M)     1.703M
==========================  ================  ===================================  ==========  ==========

**Depth** (sec. 4.1.2): "L-{N1, N2, N3}" is a net of 3 Newton-CG blocks (one per stage, widths
16/32/64, as in the authors' code) holding N1, N2, N3 CG blocks; "each CG Block is 2-layer deep
using 4 convolution kernels" (sec. 3.4), so L = 2 (N1 + N2 + N3) + 2 (the stem conv and the
linear head), like a ResNet's 6n + 2. All seven printed configurations satisfy it.

**Newton-CG block** (:class:`NewtonCGBlock`, Alg. 2), with the gradient module of the authors' code
(CLAIMS.md, "Public implementations"; :class:`CGGradientBranches`, Fig. 2(b))::

    y_0     = x_k
    g_t     = y_t + b1(y_t) + b2(y_t) + b3(y_t)                     Alg. 2 lines 3-6
              b1 = BN(Dropout(W1 * y))                              g^(1) = Dropout(W1 * y)
              b2 = BN(W2 * Dropout(y))                              g^(2) = W2 * Dropout(y)
              b3 = BN(W4 * Dropout(ReLU(BN(W3 * y))))               g^(3) = W4 * Dropout(W3 * y)
    d_0     = -g_0;  d_t = -g_t + beta_{t-1} d_{t-1}                lines 7-11
    y_{t+1} = y_t + alpha_t d_t                                     line 12
    x_{k+1} = ReLU(x_k + y_N)                                       line 14

Choices the paper leaves open or that deviate from it, and why:

- *The ReLU inside b3* is the paper's own addition ("We add an ReLU after conv3 of each CG Block to
  supplement some nonlinearity", footnote 3); Alg. 2 has none. ``branch_act_layer`` controls it
  separately from the block's final ReLU, so that the structural check can remove it alone.
- *BN after every convolution* (sec. 4.1.2), placed where the authors' code puts it: after the
  dropout in b1, after the conv in b2 and b3, and between W3 and the ReLU.
- *Dropout*: three independent ``nn.Dropout`` layers at the three places of Alg. 2, rate 0.2 (the
  paper's C10+/C100+ value; 0.4 on C10/C100, 0.3 on SVHN). In the derivation all three stand for
  the *same* mask Diag[Phi'(Ax_k)] (eq. (17)), but a dropout layer draws its own mask, as the
  authors' code does; the masks act on tensors of different shapes at a stage's first block anyway.
- *The "-b" term of eq. (17)*: Alg. 2 line 6 drops it ("b can be simply viewed as a threshold").
  Here the batch norms' shifts are the only bias: the sum of the BN biases of b1, b2, b3 (and W4
  applied to the inner BN's shift) is a learnable per-channel constant added to g_t, i.e. a
  threshold that does not depend on x_k, whereas the true b = U^T (Phi(Ax_k) - x_k) does. With BN
  replaced by the identity the block is Alg. 2 exactly (CG on Q y = 0); with a BN whose shift is
  -b for one fixed x_k it reproduces Alg. 1 on Q y = b (tests/test_models_newton_cgnet.py).
- *alpha_t, beta_t* are learnable scalars initialised to 1.0 ("All the learnable scalars are
  initialized as 1.0"), one alpha per CG block, one beta per CG block but the first (Theta_k of
  sec. 3.4); the authors exclude them from weight decay: ``no_weight_decay()`` returns their names.
- *A stage's first Newton-CG block* changes width and resolution. Its first CG block's W1, W2, W3
  map the input width to the output width with stride 2, W4 keeps the output width; the additions
  that need x_k or y_0 at the new shape (g_0 = y_0 + ..., y_1 = y_0 + alpha_0 d_0 and
  x_{k+1} = ReLU(x_k + y_N)) use one projection P(x) = BN(conv1x1(x), stride 2) ("we perform a
  linear projection to match the dimensions for addition operation whenever in need, with a 1x1
  convolution kernel", sec. 4.1.2); since y_0 = x_k, P(y_0) = P(x_k) is computed once.
- *Stem*: conv3x3 (3 -> 16) + BN + ReLU, post-activation like the ResNets of [4] the architecture is
  "based on" and because the Newton-CG block's input x_k is a ReLU output (C = {x >= 0}, sec. 3).
  *Head*: global average pool and a linear layer with bias (Xavier-uniform, as the paper says); convs
  He-normal (fan_out), BN weight 1 and bias 0.

*Fused branches* (``fuse_branches=True``, the default): W1 and W3 read the same y, so they run as
one convolution with stacked filters (and W2 too when its dropout is the identity: eval mode or rate
0). Same parameters, same dropout draws in the same order, the same function up to float rounding;
``fuse_branches=False`` runs the three branches literally (tests check both agree).

**Initialisation caveat.** With every alpha_t, beta_t at 1.0 the direct path x_k -> x_{k+1} has
weight 1 + c_N with c_{t+1} = c_t - c_{t-1}, c_0 = 1, c_1 = 0 (period 6): it vanishes for N = 2, 3,
8, 9, ... (all three blocks of Newton-CGNet-56), and at N = 2 a stage's projection gets exactly zero
gradient until the scalars move. This follows from the paper's init, not from a choice made here.

**Parameter counts.** The gaps between consecutive Table 3 counts match 4 full 3x3 convolutions
per CG block exactly (e.g. 56 -> 82: +0.92M printed and computed), but every printed count sits
about 12k above ours (0.29M vs 0.277M for Newton-CGNet-10, 4.4% off; <= 2.2% for all the others).
No reading consistent with sec. 4.1.2 closes it: a 3x3 projection would add 20k (then -10, -16 are
2.5% high), putting W1..W3 of every first CG block at full width adds 69k (+19% for -10).

**Baselines.** ``resnet32`` and ``resnet164`` are the pre-activation CIFAR ResNets of
``analysis.models.resnest_family`` (basic blocks, depth 6n + 2) with an ``activations`` switch.
ND pairs Newton-CGNet-82 (2.62M) with a "ResNet-164" of 2.62M (Tables 3, 4); a basic-block ResNet
of depth 164 (n = 27) has 2.605M, whereas the bottleneck pre-activation ResNet-164 of He et al.
(2016b), whose errors (5.46 / 24.33) ND's Table 4 quotes under "ResNet (pre-activation) 164
2.62M", has 1.70M: the 2.62M printed on that row is a copying slip. ``resnet164`` is therefore the
equal-parameter basic-block net that Table 3's comparison needs; ``resnet164_bottleneck`` is He
et al.'s model (:class:`PreActBottleneck`).

Every builder takes ``num_classes``, ``width`` (stage widths ``width * (1, 2, 4)``; 16 for the
paper's models, 2 builds a tiny copy for tests), ``in_channels`` and ``activations`` (False
replaces every ReLU by the identity; batch norm and dropout stay, so the model in eval mode is an
affine map of its input). The Newton-CGNet builders also take ``dropout``.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from analysis.models.blocks import activation_layer, conv1x1, conv3x3, init_weights_
from analysis.models import register_model
from analysis.models.resnest_family import CifarResNEst
from analysis.validation import check_bool, check_int, check_real

__all__ = [
    "CGGradientBranches",
    "NewtonCGBlock",
    "NewtonCGNet",
    "PreActBottleneck",
    "PreActBottleneckResNet",
    "CG_BLOCKS",
    "newton_cgnet_depth",
]

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]

#: L -> (N1, N2, N3) of every registered Newton-CGNet (sec. 4.1.3 and 4.1.4)
CG_BLOCKS: dict[int, tuple[int, int, int]] = {
    10: (1, 1, 2), 16: (2, 2, 3), 22: (3, 3, 4), 28: (4, 4, 5),
    56: (9, 9, 9), 82: (13, 13, 14), 110: (18, 18, 18),
}
_PAPER_PARAMS = {10: "0.29M", 16: "0.48M", 22: "0.68M", 28: "0.87M", 56: "1.70M", 82: "2.62M", 110: "3.45M"}


def newton_cgnet_depth(cg_blocks_per_stage: Sequence[int]) -> int:
    """L of "L-{N1, N2, N3}": 2 layers per CG block plus the stem conv and the linear head."""
    return 2 * sum(cg_blocks_per_stage) + 2


def _check_dropout(dropout) -> float:
    return check_real("dropout", dropout, min_value=0.0, max_value=1.0, include_max=False)


def _conv(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=kernel_size // 2, bias=False)


class CGGradientBranches(nn.Module):
    """The three branches of the CG gradient module, Alg. 2 lines 3-5 / Fig. 2(b).

    ``forward(y)`` returns g^(1) + g^(2) + g^(3) with (module docstring)
    g^(1) = BN(Dropout(W1 * y)), g^(2) = BN(W2 * Dropout(y)), g^(3) = BN(W4 * Dropout(act(BN(W3 * y)))).
    W1, W2, W3 map ``in_channels`` to ``out_channels`` with ``stride``; W4 keeps ``out_channels``.
    ``kernel_size`` 1 turns every W into a per-pixel linear map (the dense reading of Alg. 2).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        dropout: float = 0.2,
        kernel_size: int = 3,
        norm_layer: NormFactory = nn.BatchNorm2d,
        branch_act_layer: ActFactory = nn.ReLU,
        fuse: bool = True,
    ) -> None:
        super().__init__()
        self.fuse = check_bool("fuse", fuse)
        self.conv1 = _conv(in_channels, out_channels, kernel_size, stride)
        self.drop1 = nn.Dropout(dropout)
        self.norm1 = norm_layer(out_channels)

        self.drop2 = nn.Dropout(dropout)
        self.conv2 = _conv(in_channels, out_channels, kernel_size, stride)
        self.norm2 = norm_layer(out_channels)

        self.conv3 = _conv(in_channels, out_channels, kernel_size, stride)
        self.norm3 = norm_layer(out_channels)
        self.act3 = branch_act_layer()
        self.drop3 = nn.Dropout(dropout)
        self.conv4 = _conv(out_channels, out_channels, kernel_size, 1)
        self.norm4 = norm_layer(out_channels)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if self.fuse:
            return self._fused_forward(y)
        g1 = self.norm1(self.drop1(self.conv1(y)))
        g2 = self.norm2(self.conv2(self.drop2(y)))
        g3 = self.norm4(self.conv4(self.drop3(self.act3(self.norm3(self.conv3(y))))))
        return g1 + g2 + g3

    def _fused_forward(self, y: torch.Tensor) -> torch.Tensor:
        # The same function as the unfused forward with the same parameters, but the convolutions that
        # read the same tensor run as ONE convolution with stacked filters: W1 and W3 always read y, and W2
        # reads y too when its dropout is the identity (eval mode or rate 0). One wide convolution keeps a
        # GPU busier than two or three narrow ones at CIFAR widths (16-64 channels).
        c = self.conv1.out_channels
        conv2_on_y = not (self.training and self.drop2.p > 0)
        weights = [self.conv1.weight, self.conv3.weight] + ([self.conv2.weight] if conv2_on_y else [])
        stacked = F.conv2d(y, torch.cat(weights), stride=self.conv1.stride, padding=self.conv1.padding)
        # drop1 draws before drop2, as in the unfused order, so a seed gives the same masks.
        g1 = self.norm1(self.drop1(stacked[:, :c]))
        g2 = self.norm2(stacked[:, 2 * c:] if conv2_on_y else self.conv2(self.drop2(y)))
        w3y = stacked[:, c:2 * c]
        g3 = self.norm4(self.conv4(self.drop3(self.act3(self.norm3(w3y)))))
        return g1 + g2 + g3


class NewtonCGBlock(nn.Module):
    """Newton-CG block, ND Alg. 2: N CG blocks from y_0 = x_k, then x_{k+1} = act(x_k + y_N).

    Parameters
    ----------
    in_channels, out_channels, stride:
        Shapes; at a shape change the first CG block's W1..W3 are strided and the additions use
        the projection P = BN(conv1x1) (module docstring).
    num_cg_blocks:
        N, the number of CG steps unrolled.
    dropout:
        Rate of the three dropout layers of each CG block (0 turns them off).
    kernel_size:
        Of W1..W4 (odd; 3 in the paper, 1 for the dense reading of Alg. 2).
    norm_layer, act_layer, branch_act_layer:
        Factories: the norm after every conv, the final activation of line 14, the activation the
        paper adds after W3 (footnote 3).
    fuse_branches:
        Run the branch convolutions that read the same tensor as one convolution with stacked
        filters (``CGGradientBranches``); the same function and parameters, faster on a GPU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        num_cg_blocks: int,
        stride: int = 1,
        *,
        dropout: float = 0.2,
        kernel_size: int = 3,
        norm_layer: NormFactory = nn.BatchNorm2d,
        act_layer: ActFactory = nn.ReLU,
        branch_act_layer: ActFactory = nn.ReLU,
        fuse_branches: bool = True,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, min_value=1)
        out_channels = check_int("out_channels", out_channels, min_value=1)
        num_cg_blocks = check_int("num_cg_blocks", num_cg_blocks, min_value=1)
        stride = check_int("stride", stride, min_value=1)
        dropout = _check_dropout(dropout)
        kernel_size = check_int("kernel_size", kernel_size, min_value=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd so that 'same' padding keeps the grid; got {kernel_size}")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.num_cg_blocks, self.dropout, self.kernel_size = num_cg_blocks, dropout, kernel_size

        if stride != 1 or in_channels != out_channels:
            self.projection: nn.Module | None = nn.Sequential(conv1x1(in_channels, out_channels, stride),
                                                              norm_layer(out_channels))
        else:
            self.projection = None
        self.cg_blocks = nn.ModuleList(
            CGGradientBranches(in_channels if t == 0 else out_channels, out_channels, stride if t == 0 else 1,
                               dropout=dropout, kernel_size=kernel_size, norm_layer=norm_layer,
                               branch_act_layer=branch_act_layer, fuse=fuse_branches)
            for t in range(num_cg_blocks))
        self.alphas = nn.Parameter(torch.ones(num_cg_blocks))
        if num_cg_blocks > 1:
            self.betas: nn.Parameter | None = nn.Parameter(torch.ones(num_cg_blocks - 1))
        else:
            self.register_parameter("betas", None)
        self.act = act_layer()

    def no_weight_decay(self) -> set[str]:
        """Names (relative to this block) of the learnable CG scalars, kept out of weight decay."""
        return {"alphas"} | ({"betas"} if self.betas is not None else set())

    def _unroll(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x_hat = x if self.projection is None else self.projection(x)
        y, ys, d = x, [x], x_hat
        for t, gradient_branches in enumerate(self.cg_blocks):
            # y_t at the output shape: only y_0 can differ from it, and P(y_0) = P(x_k).
            y_same = x_hat if t == 0 else y
            g = y_same + gradient_branches(y)
            d = -g if t == 0 else -g + self.betas[t - 1] * d
            y = y_same + self.alphas[t] * d
            ys.append(y)
        return x_hat, ys

    def cg_iterates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[y_0, y_1, ..., y_N] of Alg. 2 (y_0 = x_k as given, before any projection)."""
        return self._unroll(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_hat, ys = self._unroll(x)
        return self.act(x_hat + ys[-1])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}->{self.out_channels}, N={self.num_cg_blocks}, stride={self.stride}, "
                f"dropout={self.dropout:g}" + (f", kernel_size={self.kernel_size}" if self.kernel_size != 3 else ""))


class NewtonCGNet(nn.Module):
    """Newton-CGNet L-{N1, N2, N3} for 32x32 inputs (module docstring): stem, 3 Newton-CG blocks, head."""

    def __init__(
        self,
        cg_blocks_per_stage: Sequence[int] = (9, 9, 9),
        num_classes: int = 10,
        *,
        width: int = 16,
        in_channels: int = 3,
        dropout: float = 0.2,
        activations: bool = True,
        fuse_branches: bool = True,
    ) -> None:
        super().__init__()
        blocks = tuple(cg_blocks_per_stage) if isinstance(cg_blocks_per_stage, (list, tuple)) else None
        if blocks is None or len(blocks) != 3:
            raise ValueError("cg_blocks_per_stage must be a sequence of 3 counts (N1, N2, N3), one per stage; "
                             f"got {cg_blocks_per_stage!r}")
        self.cg_blocks_per_stage = tuple(check_int(f"cg_blocks_per_stage[{i}]", n, min_value=1)
                                         for i, n in enumerate(blocks))
        num_classes = check_int("num_classes", num_classes, min_value=1)
        width = check_int("width", width, min_value=1)
        in_channels = check_int("in_channels", in_channels, min_value=1)
        dropout = _check_dropout(dropout)
        self.activations = check_bool("activations", activations)
        self.depth = newton_cgnet_depth(self.cg_blocks_per_stage)
        self.num_classes, self.width = num_classes, width
        act: ActFactory = activation_layer(self.activations)

        self.stem = nn.Sequential(conv3x3(in_channels, width), nn.BatchNorm2d(width), act())
        stages, channels = [], width
        for stage, n in enumerate(self.cg_blocks_per_stage):
            out_channels = width * 2 ** stage
            stages.append(NewtonCGBlock(channels, out_channels, n, 1 if stage == 0 else 2, dropout=dropout,
                                        act_layer=act, branch_act_layer=act,
                                        fuse_branches=check_bool("fuse_branches", fuse_branches)))
            channels = out_channels
        self.stages = nn.ModuleList(stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights_(self)


    def no_weight_decay(self) -> set[str]:
        """Full parameter names of every alpha_t, beta_t (the authors put no weight decay on them)."""
        return {f"stages.{i}.{name}" for i, block in enumerate(self.stages) for name in block.no_weight_decay()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.stages:
            x = block(x)
        return self.fc(self.pool(x).flatten(1))


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block (He et al. 2016b), expansion 4:

        a = act(BN(x));  out = s + conv1x1(act(BN(conv3x3(act(BN(conv1x1(a)))))))

    with s = x, or conv1x1(a) (stride, on the pre-activated input) when the shape changes; the 3x3
    conv carries the stride.
    """

    expansion = 4

    def __init__(self, in_channels: int, mid_channels: int, stride: int = 1, *,
                 act_layer: ActFactory = nn.ReLU) -> None:
        super().__init__()
        out_channels = mid_channels * self.expansion
        self.norm1, self.act1 = nn.BatchNorm2d(in_channels), act_layer()
        self.conv1 = conv1x1(in_channels, mid_channels)
        self.norm2, self.act2 = nn.BatchNorm2d(mid_channels), act_layer()
        self.conv2 = conv3x3(mid_channels, mid_channels, stride)
        self.norm3, self.act3 = nn.BatchNorm2d(mid_channels), act_layer()
        self.conv3 = conv1x1(mid_channels, out_channels)
        needs_projection = stride != 1 or in_channels != out_channels
        self.shortcut = conv1x1(in_channels, out_channels, stride) if needs_projection else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.act1(self.norm1(x))
        s = x if self.shortcut is None else self.shortcut(a)
        h = self.conv2(self.act2(self.norm2(self.conv1(a))))
        return s + self.conv3(self.act3(self.norm3(h)))


class PreActBottleneckResNet(nn.Module):
    """CIFAR pre-activation bottleneck ResNet of depth 9n + 2 (He et al. 2016b; 164 -> n = 18).

    Stem conv3x3 (no BN/ReLU after it), three stages of n bottlenecks with inner widths
    ``width * (1, 2, 4)`` and outputs 4x those, strides 1, 2, 2; final BN-ReLU-pool-linear.
    """

    def __init__(self, depth: int = 164, num_classes: int = 10, *, width: int = 16, in_channels: int = 3,
                 activations: bool = True) -> None:
        super().__init__()
        depth = check_int("depth", depth, min_value=11)
        if (depth - 2) % 9:
            raise ValueError(f"depth must be 9n+2 (164, 1001, ...) for a bottleneck ResNet; got {depth}")
        num_classes = check_int("num_classes", num_classes, min_value=1)
        width = check_int("width", width, min_value=1)
        in_channels = check_int("in_channels", in_channels, min_value=1)
        act: ActFactory = activation_layer(activations)
        self.depth, n = depth, (depth - 2) // 9
        self.stem = conv3x3(in_channels, width)
        blocks, channels = [], width
        for stage in range(3):
            mid = width * 2 ** stage
            for i in range(n):
                blocks.append(PreActBottleneck(channels, mid, 2 if (stage > 0 and i == 0) else 1, act_layer=act))
                channels = mid * PreActBottleneck.expansion
        self.blocks = nn.Sequential(*blocks)
        self.final = nn.Sequential(nn.BatchNorm2d(channels), act())
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.final(self.blocks(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _make_cgnet_builder(depth: int):
    cg_blocks = CG_BLOCKS[depth]

    def builder(num_classes: int = 10, width: int = 16, in_channels: int = 3, dropout: float = 0.2,
                activations: bool = True, fuse_branches: bool = True) -> NewtonCGNet:
        return NewtonCGNet(cg_blocks, num_classes, width=width, in_channels=in_channels, dropout=dropout,
                           activations=activations, fuse_branches=fuse_branches)

    name = f"newton_cgnet{depth}"
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = (f"Newton-CGNet-{depth}: {depth}-{{{', '.join(map(str, cg_blocks))}}} CG blocks "
                       f"(ND Alg. 2; paper {_PAPER_PARAMS[depth]} params)")
    return name, builder


for _depth in CG_BLOCKS:
    _name, _builder = _make_cgnet_builder(_depth)
    register_model(_name, source="code", paper="ND (001)")(_builder)


def _resnest_standard(depth: int, num_classes: int, width: int, in_channels: int, activations: bool) -> CifarResNEst:
    act: ActFactory = activation_layer(activations)
    return CifarResNEst(depth=depth, variant="standard", num_classes=num_classes, width=width,
                        in_channels=in_channels, act_layer=act)


@register_model(source="code", paper="ND (001)")
def resnet32(num_classes: int = 10, width: int = 16, in_channels: int = 3, activations: bool = True) -> nn.Module:
    """pre-activation ResNet-32 (basic blocks, n = 5): ND Table 3 baseline, paper 0.46M params"""
    return _resnest_standard(32, num_classes, width, in_channels, activations)


@register_model(source="ours", paper="ND (001)")
def resnet164(num_classes: int = 10, width: int = 16, in_channels: int = 3, activations: bool = True) -> nn.Module:
    """pre-activation ResNet-164 with basic blocks (n = 27): the 2.62M baseline of ND Tables 3-4"""
    return _resnest_standard(164, num_classes, width, in_channels, activations)


@register_model(source="paper", paper="ND (001)")
def resnet164_bottleneck(num_classes: int = 10, width: int = 16, in_channels: int = 3,
                         activations: bool = True) -> nn.Module:
    """pre-activation bottleneck ResNet-164 of He et al. 2016b (1.70M; ND Table 4 prints 2.62M)"""
    return PreActBottleneckResNet(164, num_classes, width=width, in_channels=in_channels, activations=activations)
