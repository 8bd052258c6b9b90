"""CIFAR ResNet-18/34 and the Newton-ResNets of "Newton Residual Learning" (NRL, papers/000).

Registered models (32x32 inputs, any class count):

==========================  ==============  ==============================  ==========  =============
name                        blocks/stage    paper                           paper #par  ours (C10)
==========================  ==============  ==============================  ==========  =============
``resnet18``                [2, 2, 2, 2]    NRL Tables 1, 2, 5 baseline     11.2M       11.17M
``resnet34``                [3, 4, 6, 3]    NRL Tables 1, 4 baseline        21.3M       21.28M
``newton_resnet_2211``      [2, 2, 1, 1]    Table 1                          6.0M        6.01M
``newton_resnet_3322``      [3, 3, 2, 2]    Table 1                         13.0M       12.98M
``newton_resnet_3432``      [3, 4, 3, 2]    Table 4 (CIFAR-100)             14.7M       14.67M (C100)
``newton_resnet_1111``      [1, 1, 1, 1]    Tables 2, 5 (no activations)     5.3M        5.25M
``newton_resnet_2222``      [2, 2, 2, 2]    Tables 2, 5 (no activations)    11.9M       11.87M
``newton_resnet_3333``      [3, 3, 3, 3]    Tables 2, 5 (no activations)    18.5M       18.49M
==========================  ==============  ==============================  ==========  =============

Every builder takes ``num_classes``, ``width`` (stage widths ``width * (1, 2, 4, 8)``; 64 for the
paper's models, 2 builds a tiny copy for tests), ``in_channels`` and ``activations`` (False replaces
every activation by the identity: the NRL-linear experiments, sec. 4.2). The Newton builders also
take ``x_proj``, ``lin_proj`` (Alg. 1), ``second_order_tanh`` (NRL-fp16, sec. 4.4) and
``alpha_init``.

**Backbone** (the paper only says "ResNet18/34"; its 11.2M / 21.3M pin the CIFAR form): stem a 3x3
conv (stride 1) + BN + ReLU, no max-pool; four stages of post-activation basic blocks (He et al.
2016), widths 64/128/256/512, strides 1/2/2/2; a stage's first block has a projection shortcut
BN(conv1x1, stride 2) when the shape changes; global average pool and a linear head with bias.
Initialisation: PyTorch defaults (the paper keeps "the initializations ... of the original ResNet").

**Newton block** (:class:`NewtonBlock`), eq. (3) in the conv form of CLAIMS.md ("closest public
PyTorch form")::

    f(x)    = BN(conv3x3(phi(BN(conv3x3(x)))))           transformation path, f = C2 phi(C1 x)
    s(x)    = x, or BN(conv1x1(x)) when the shape changes
    x_{t+1} = phi(s(x) + f(x) + alpha * N2(N1(s(x)) * f(x)))

with ``*`` elementwise, ``N1`` = ``x_proj`` 1x1 convs (Alg. 1 line 6), ``N2`` = ``lin_proj`` times
BN(conv1x1) (Alg. 1 line 8), and alpha a learnable scalar initialised to 0, so that a freshly built
Newton block computes exactly the basic block it extends (claim NRL-block). Choices recorded:

- *N1 acts on s(x), not x*: at a stage's first block x has other channels and resolution than f(x);
  the product needs both on the same grid, and s(x) is the block's own map of x to that grid.
- *The shortcut adds the unprojected s(x)*: read literally, Alg. 1 overwrites x_t by its 1x1
  projection (line 6) before the shortcut sum (line 9); we follow eq. (2)-(3) and CLAIMS.md, where
  N1 only feeds the product. Parameter counts are the same either way.
- *phi2 of Alg. 1 is the identity* (the paper calls N1, N2 "normalization operators", linear maps);
  ``second_order_tanh=True`` makes the phi2 after N2 a tanh: "we use a tanh as a normalization for
  the second order term, i.e. the last term of (3)" (sec. 4.4), so the term is alpha * tanh(N2(...)).
  With ``lin_proj=0`` the tanh is applied to the product itself.
- *x_proj per model*: the printed counts decide it. Each 1x1 conv of width w adds w^2 parameters
  per block; the with-activation models of Tables 1 and 4 match with x_proj = lin_proj = 1
  ([2,2,1,1] 6.01M vs 6.0M, [3,3,2,2] 12.98M vs 13.0M, [3,4,3,2] 14.67M vs 14.7M; with x_proj = 0
  they would be 5.64M, 12.26M, 13.87M, 6% off), the no-activation models of Tables 2 and 5 with
  x_proj = 0, lin_proj = 1 ([1,1,1,1] 5.25M vs 5.3M, [2,2,2,2] 11.87M vs 11.9M, [3,3,3,3] 18.49M vs
  18.5M; with x_proj = 1 they would be 5.60M, 12.57M, 19.54M, 5-6% off). These are the registered
  defaults; either can be overridden.
- *No activations* (``activations=False``): every ReLU (stem, inside f, after the sum) becomes the
  identity; batch norm stays (sec. 4.2 removes "all the activation functions" only). In eval mode
  the Newton-ResNet is then a polynomial map of its input of degree at most 2^(number of blocks),
  and ResNet-18/34 an affine one (claim NRL-poly). ``second_order_tanh`` is refused in this mode:
  a tanh is an activation, and the mode promises none.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from analysis.models.blocks import activation_layer, conv1x1, conv3x3
from analysis.models import register_model
from analysis.validation import check_bool, check_int, check_real

__all__ = ["BasicBlock", "NewtonBlock", "CifarResNet", "MODEL_NAMES", "STAGE_BLOCKS"]

NormFactory = Callable[[int], nn.Module]
ActFactory = Callable[[], nn.Module]

#: blocks per stage of every registered model
STAGE_BLOCKS: dict[str, tuple[int, ...]] = {
    "resnet18": (2, 2, 2, 2),
    "resnet34": (3, 4, 6, 3),
    "newton_resnet_2211": (2, 2, 1, 1),
    "newton_resnet_3322": (3, 3, 2, 2),
    "newton_resnet_3432": (3, 4, 3, 2),
    "newton_resnet_1111": (1, 1, 1, 1),
    "newton_resnet_2222": (2, 2, 2, 2),
    "newton_resnet_3333": (3, 3, 3, 3),
}
MODEL_NAMES: tuple[str, ...] = tuple(STAGE_BLOCKS)

# Tables 2 and 5 (no activations) print counts that fit one 1x1 conv per block; Tables 1, 4 two.
_X_PROJ_DEFAULT = {"newton_resnet_1111": 0, "newton_resnet_2222": 0, "newton_resnet_3333": 0}
_TABLE = {
    "newton_resnet_2211": "Table 1", "newton_resnet_3322": "Table 1", "newton_resnet_3432": "Table 4",
    "newton_resnet_1111": "Tables 2, 5", "newton_resnet_2222": "Tables 2, 5", "newton_resnet_3333": "Tables 2, 5",
}


class BasicBlock(nn.Module):
    """Post-activation basic block (He et al. 2016): x_{t+1} = phi(x + f(x)), f = BN C2 phi(BN C1 x).

    This is NRL sec. 3.2's residual block phi(x_t + f_t(x_t)) with the batch norms the paper leaves
    out of its notation. ``shortcut`` is BN(conv1x1) when ``stride != 1`` or the width changes,
    else the identity. ``norm_layer`` / ``act_layer`` are factories (timm's convention).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        norm_layer: NormFactory = nn.BatchNorm2d,
        act_layer: ActFactory = nn.ReLU,
    ) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, min_value=1)
        out_channels = check_int("out_channels", out_channels, min_value=1)
        stride = check_int("stride", stride, min_value=1)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.norm1 = norm_layer(out_channels)
        self.act1 = act_layer()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.norm2 = norm_layer(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = nn.Sequential(conv1x1(in_channels, out_channels, stride), norm_layer(out_channels))
        else:
            self.shortcut = nn.Identity()
        self.act_out = act_layer()

    def transformation(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = BN(conv3x3(phi(BN(conv3x3(x))))), the transformation path C of Fig. 2."""
        return self.norm2(self.conv2(self.act1(self.norm1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act_out(self.shortcut(x) + self.transformation(x))

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}"


class NewtonBlock(BasicBlock):
    """Newton residual block, NRL eq. (3): phi(s + f + alpha * N2(N1(s) * f)) (module docstring).

    Extends :class:`BasicBlock` (same parameter names for the shared layers, so a basic block's
    state dict loads into it) by N1 (``x_proj`` 1x1 convs), N2 (``lin_proj`` BN(conv1x1), then phi2)
    and the learnable scalar ``alpha``. phi2 is the identity, or tanh with ``second_order_tanh``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        x_proj: int = 1,
        lin_proj: int = 1,
        second_order_tanh: bool = False,
        alpha_init: float = 0.0,
        norm_layer: NormFactory = nn.BatchNorm2d,
        act_layer: ActFactory = nn.ReLU,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, norm_layer=norm_layer, act_layer=act_layer)
        self.x_proj = check_int("x_proj", x_proj, min_value=0)
        self.lin_proj = check_int("lin_proj", lin_proj, min_value=0)
        self.second_order_tanh = check_bool("second_order_tanh", second_order_tanh)
        alpha_init = check_real("alpha_init", alpha_init)
        phi2: ActFactory = nn.Tanh if self.second_order_tanh else nn.Identity
        self.n1 = nn.Sequential(*(conv1x1(out_channels, out_channels) for _ in range(self.x_proj)))
        n2: list[nn.Module] = []
        for _ in range(self.lin_proj):
            n2 += [conv1x1(out_channels, out_channels), norm_layer(out_channels), phi2()]
        if not self.lin_proj:
            n2.append(phi2())
        self.n2 = nn.Sequential(*n2)
        self.alpha = nn.Parameter(torch.tensor(alpha_init))

    def second_order(self, s: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """N2(N1(s) * f): the second-order term of eq. (3) before the scaling by alpha."""
        return self.n2(self.n1(s) * f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shortcut(x)
        f = self.transformation(x)
        return self.act_out(s + f + self.alpha * self.second_order(s, f))

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", x_proj={self.x_proj}, lin_proj={self.lin_proj}"
                + (", second_order_tanh=True" if self.second_order_tanh else ""))


class CifarResNet(nn.Module):
    """ResNet for 32x32 inputs with basic or Newton blocks, ``stage_blocks[i]`` blocks in stage i.

    Stem conv3x3-BN-phi (no max-pool), stages of widths ``width * 2**i`` and strides 1, 2, 2, ...,
    global average pool, linear head (module docstring). ``block_options`` go to every
    :class:`NewtonBlock` and must be empty for ``block="basic"``.
    """

    def __init__(
        self,
        stage_blocks: Sequence[int] = (2, 2, 2, 2),
        block: str = "basic",
        num_classes: int = 10,
        width: int = 64,
        in_channels: int = 3,
        activations: bool = True,
        norm_layer: NormFactory = nn.BatchNorm2d,
        **block_options,
    ) -> None:
        super().__init__()
        if isinstance(stage_blocks, (str, bytes)) or not isinstance(stage_blocks, Sequence) or not stage_blocks:
            raise TypeError(f"stage_blocks must be a non-empty sequence of block counts such as (2, 2, 1, 1); "
                            f"got {stage_blocks!r}")
        self.stage_blocks = tuple(check_int(f"stage_blocks[{i}]", n, min_value=1) for i, n in enumerate(stage_blocks))
        if block not in ("basic", "newton"):
            raise ValueError(f"block must be one of 'basic', 'newton'; got {block!r}")
        if block == "basic" and block_options:
            raise TypeError(f"option(s) {', '.join(map(repr, sorted(block_options)))} apply to Newton blocks only; "
                            f"the basic ResNet takes none")
        num_classes = check_int("num_classes", num_classes, min_value=1)
        width = check_int("width", width, min_value=1)
        in_channels = check_int("in_channels", in_channels, min_value=1)
        self.activations = check_bool("activations", activations)
        if not activations and block_options.get("second_order_tanh", False):
            raise ValueError("second_order_tanh=True adds a tanh, but activations=False removes every activation; "
                             "use one or the other")
        self.block, self.num_classes, self.width = block, num_classes, width
        act_layer: ActFactory = activation_layer(self.activations)

        self.stem = nn.Sequential(conv3x3(in_channels, width), norm_layer(width), act_layer())
        layers: list[nn.Module] = []
        channels = width
        for stage, n in enumerate(self.stage_blocks):
            out_channels = width * 2 ** stage
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                if block == "basic":
                    layers.append(BasicBlock(channels, out_channels, stride, norm_layer=norm_layer, act_layer=act_layer))
                else:
                    layers.append(NewtonBlock(channels, out_channels, stride, norm_layer=norm_layer,
                                              act_layer=act_layer, **block_options))
                channels = out_channels
        self.blocks = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))


def _make_resnet(name: str):
    def builder(num_classes: int = 10, width: int = 64, in_channels: int = 3, activations: bool = True) -> CifarResNet:
        return CifarResNet(STAGE_BLOCKS[name], "basic", num_classes=num_classes, width=width,
                           in_channels=in_channels, activations=activations)

    blocks = STAGE_BLOCKS[name]
    builder.__doc__ = f"ResNet-{name[6:]} {list(blocks)}, CIFAR stem (3x3 conv, no max-pool), post-activation basic blocks"
    return builder


def _make_newton(name: str):
    def builder(
        num_classes: int = 10,
        width: int = 64,
        in_channels: int = 3,
        activations: bool = True,
        x_proj: int = _X_PROJ_DEFAULT.get(name, 1),
        lin_proj: int = 1,
        second_order_tanh: bool = False,
        alpha_init: float = 0.0,
    ) -> CifarResNet:
        return CifarResNet(STAGE_BLOCKS[name], "newton", num_classes=num_classes, width=width,
                           in_channels=in_channels, activations=activations, x_proj=x_proj,
                           lin_proj=lin_proj, second_order_tanh=second_order_tanh, alpha_init=alpha_init)

    builder.__doc__ = f"Newton-ResNet {list(STAGE_BLOCKS[name])} of NRL {_TABLE[name]}: eq. (3) blocks on the ResNet-18 backbone"
    return builder


for _name in MODEL_NAMES:
    _builder = _make_newton(_name) if _name.startswith("newton") else _make_resnet(_name)
    _builder.__name__ = _builder.__qualname__ = _name
    register_model(_name, source="code" if _name.startswith("newton") else "ours", paper="NRL (000)")(_builder)
