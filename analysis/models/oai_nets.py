"""The CIFAR nets of the OAI paper (002, Li, Yang, Chen, Lin 2018, Sec. 6): HB-Net (16), AGD-Net (18)/(21),
and the ADMM / DMRNet two-path block (20).

No public code exists; everything below is read from the paper's text. Each choice the paper leaves
open is recorded with its reason.

**HB-Net, eq (16) / Sec. 6.1.** x_{k+1} = T(x_k) + beta1 x_k + beta2 x_{k-1}; the experiments use
beta = 1 in HB (2), i.e. beta1 = 1, beta2 = -1: x_{k+1} = T(x_k) + x_k - x_{k-1}. ResNet is beta2 = 0
(Table 3).

- T is "two weight layers", conv-BN-ReLU then conv-BN, "according to the residual structure in
  ResNet" (He et al. 2016a, post-activation), down-sampling by a stride-2 first conv at the first
  block of a stage.
- No activation after the sum (``relu_after_sum=False``, default): (16) and Sec. 6.1 as printed,
  and the paper's own ResNet formula x_{k+1} = T(x_k) + x_k. The post-activation reading (He et
  al.'s ReLU after the addition, which T ending in BN also suggests) is ``relu_after_sum=True``.
  Measured at initialisation (HB-Net-110, train-mode BN, float64): a 0.4% relative input
  perturbation moves the output by 10% with the ReLU after the sum, by 1.8% without, and by 1.3%
  for ResNet-110; bf16 autocast errors are 19% / 2% / 2%. beta = 1 sits on the boundary of heavy
  ball's stable range (0 <= beta < 1), and the ReLU reading makes that visible. The Table 4
  baselines ``postact_resnet56`` / ``postact_resnet110`` are He et al.'s ResNet (beta2 = 0 and
  ``relu_after_sum=True``); ``hbnet18(beta2=0.0)`` is the literal x + T(x) net.
- x_{-1} = x_0 at the first block of the net: the algorithm's zero initial velocity (z_{-1} = z_0,
  as in ``analysis.theory.oai.heavy_ball_z`` / ``hb_structure``). With beta1 + beta2 = 0 the first block
  therefore has no skip term (x_1 = act(T(x_0))).
- Stage transitions: the state carried between blocks is the pair (x_k, x_{k-1}), and a block
  that changes the shape maps *both* by the same parameter-free shortcut P (He et al.'s option A:
  spatial subsampling by the stride, zero-padding of the new channels). So x_{k-1} at a stage's
  first block is P(previous block's input), and the next block receives P(x_k) as its x_{k-1}.
  P is linear, so the velocity x_k - x_{k-1} is carried across the transition, not reset. Option A
  keeps the count at ResNet-56/110's 0.85M/1.7M (He et al. 2016a, Table 6).
- Stem: conv3x3-BN-ReLU (post-activation ResNet); head: global average pool, linear.
- beta1, beta2 are fixed constants (Sec. 6.1 fixes beta = 1; (16) allows learning them, not used).

**AGD-Net, eq (21) / Sec. 6.2.** In a dense block,
z_{k+1} = sum_{j=0}^k alpha_{k+1}^j T(z_j) + beta (z_k - sum_{j=0}^k h_{k+1}^j z_j),
alpha learnable (initialised to 1: the net starts as DenseNet plus the momentum term), h of eq (5),
beta = 0.1 fixed (Sec. 6.2).

- T(z_j) is the DenseNet layer's BN-ReLU-conv3x3 restricted to z_j's channels: "each preceding layer
  z_j produces its own output first" and (18) with alpha = 1, beta = 0 is DenseNet (Table 3). BN and
  ReLU act channel-wise, so sum_j alpha^j conv_j(relu(bn_j(z_j))) is one conv over
  relu(bn(concat z)) whose weight slice for z_j is scaled by alpha^j: that is how it is computed.
- z_0 (the block input) is wider than the layer outputs z_1.. (growth rate channels), so the
  momentum term needs a reading. With h of eq (5), h_1^0 = 1 and h_{k+1}^0 = 0 for k >= 1, so z_0
  never enters it: at k = 0 it is z_0 - z_0 = 0, later it involves z_1..z_k only (all of width k).
  The formula is implemented exactly, without a width mismatch.
- h restarts in every dense block (Sec. 6 "Block Based Structure": the formulas are used in each
  block). The block output is the concatenation [z_0, ..., z_L], as in DenseNet.
- Everything else is DenseNet (Huang et al. 2017, k = 12, L = 40 / 52, no bottleneck, no
  compression): stem conv3x3 to 16 channels; 3 dense blocks of (L - 4) / 3 layers; transitions
  BN-ReLU-conv1x1 (same width)-avgpool2; head BN-ReLU-pool-linear; dropout (default 0, DenseNet
  used 0.2 without augmentation) after each conv.

**ADMM / DMRNet, eq (20).** Two paths: x'_{k+1} = T'(x'_k) + m_k, x_{k+1} = T(x_k) + m_k with
m_k = sum_{t<=k} alpha_{k+1}^t x'_t + sum_{t<=k} beta_{k+1}^t x_t (sums from t = 0 and coefficients
depending on the step: the reading of ``analysis.theory.oai.admm_structure``; DMRNet is
alpha_{k+1}^k = beta_{k+1}^k = 1/2, all others 0). T, T' as in HB-Net with separate weights; no
activation after the sum by default (literal (20)). The paper trains no conv ADMM net, so only the
block and a same-width stage are provided.

Initialisation (Sec. 7 "Training details"): convs He-normal (fan_out, as DenseNet's code), BN
weight 1 / bias 0, the linear head Xavier-uniform with zero bias.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from analysis.models.blocks import activation_layer, conv1x1, conv3x3, init_weights_
from analysis.models import register_model
from analysis.theory.oai import nesterov_h_weights
from analysis.validation import check_int, check_real

__all__ = [
    "ZeroPadShortcut",
    "HBBlock",
    "HBNet",
    "AGDDenseLayer",
    "AGDDenseBlock",
    "AGDNet",
    "ADMMBlock",
    "ADMMStage",
]




class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut: spatial subsampling by ``stride`` then zero channels appended.

    ``pool="subsample"`` keeps every stride-th pixel (He et al. 2016a, option A);
    ``pool="avg"`` averages stride x stride windows (the TensorFlow CIFAR ResNet). New channels are
    zero-padded, split evenly before and after (``symmetric=True``) or all after.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, pool: str = "subsample",
                 symmetric: bool = False) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, min_value=1)
        self.out_channels = check_int("out_channels", out_channels, min_value=self.in_channels)
        self.stride = check_int("stride", stride, min_value=1)
        if pool not in ("subsample", "avg"):
            raise ValueError(f"pool must be 'subsample' or 'avg'; got {pool!r}")
        self.pool = pool
        extra = self.out_channels - self.in_channels
        self.pad = (extra // 2, extra - extra // 2) if symmetric else (0, extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            s = self.stride
            x = x[:, :, ::s, ::s] if self.pool == "subsample" else F.avg_pool2d(x, s, s)
        if self.pad != (0, 0):
            x = F.pad(x, (0, 0, 0, 0, *self.pad))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}->{self.out_channels}, stride={self.stride}, pool={self.pool}"


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ZeroPadShortcut(in_channels, out_channels, stride)


class _TwoLayerT(nn.Module):
    """T(x) = BN(conv3x3(act(BN(conv3x3(x))))): the ResNet residual branch of Sec. 6.1."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm_layer, act_layer) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_channels, out_channels, stride)
        self.bn1 = norm_layer(out_channels)
        self.act = act_layer()
        self.conv2 = conv3x3(out_channels, out_channels)
        self.bn2 = norm_layer(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class HBBlock(nn.Module):
    """One step of HB-Net, eq (16): x_{k+1} = act(T(x_k) + beta1 P(x_k) + beta2 P(x_{k-1})).

    ``forward(x, x_prev)`` returns the next HB state ``(x_{k+1}, P(x_k))``; ``x_prev=None`` means
    x_{-1} = x_k (zero initial velocity). P is the identity, or the parameter-free
    ``ZeroPadShortcut`` when the block changes the shape. ``act`` is the identity (default, (16) as
    printed) or ``act_layer()`` when ``relu_after_sum``. See the module docstring for the choices.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, beta1: float = 1.0,
                 beta2: float = -1.0, relu_after_sum: bool = False, norm_layer=nn.BatchNorm2d,
                 act_layer=nn.ReLU) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, min_value=1)
        out_channels = check_int("out_channels", out_channels, min_value=in_channels)
        stride = check_int("stride", stride, min_value=1)
        self.beta1 = check_real("beta1", beta1)
        self.beta2 = check_real("beta2", beta2)
        self.T = _TwoLayerT(in_channels, out_channels, stride, norm_layer, act_layer)
        self.shortcut = _shortcut(in_channels, out_channels, stride)
        self.act = act_layer() if relu_after_sum else nn.Identity()

    def forward(self, x: torch.Tensor, x_prev: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        px = self.shortcut(x)
        px_prev = px if x_prev is None else self.shortcut(x_prev)
        # The sum runs in the state's dtype, not T's: under bf16 autocast T returns bfloat16, and
        # beta1 x_k + beta2 x_{k-1} (= x_k - x_{k-1} in HB-Net) cancels catastrophically there.
        x_next = self.act(self.T(x).to(px.dtype) + self.beta1 * px + self.beta2 * px_prev)
        return x_next, px

    def extra_repr(self) -> str:
        return f"beta1={self.beta1:g}, beta2={self.beta2:g}"


class HBNet(nn.Module):
    """HB-Net (OAI Sec. 6.1): CIFAR ResNet-(6n+2) layout with HB blocks (16); see the module docstring.

    ``beta2=0, relu_after_sum=True`` is the post-activation ResNet of He et al. (2016a) with
    option-A shortcuts, the paper's Table 4 baseline (``postact_resnet56`` / ``postact_resnet110``).
    """

    def __init__(self, blocks_per_stage: int = 18, num_classes: int = 10, width: int = 16, *,
                 beta1: float = 1.0, beta2: float = -1.0, relu_after_sum: bool = False, in_channels: int = 3,
                 norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU) -> None:
        super().__init__()
        n = check_int("blocks_per_stage", blocks_per_stage, min_value=1)
        num_classes = check_int("num_classes", num_classes, min_value=1)
        width = check_int("width", width, min_value=1)
        in_channels = check_int("in_channels", in_channels, min_value=1)
        self.stem = nn.Sequential(conv3x3(in_channels, width), norm_layer(width), act_layer())
        blocks, channels = [], width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                blocks.append(HBBlock(channels, out_channels, stride, beta1=beta1, beta2=beta2,
                                      relu_after_sum=relu_after_sum, norm_layer=norm_layer, act_layer=act_layer))
                channels = out_channels
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The HB state (x_k, x_{k-1}) is kept in the parameters' dtype (float32 under autocast): in
        # bfloat16 the velocity x_k - x_{k-1} partly cancels (measured on HB-Net-110 at init, bf16
        # autocast: 3.9% output error with a bf16 state, 2.1% with this). Convs still run in bf16.
        x, x_prev = self.stem(x).to(self.fc.weight.dtype), None
        for block in self.blocks:
            x, x_prev = block(x, x_prev)
        return self.fc(self.pool(x).flatten(1))


class AGDDenseLayer(nn.Module):
    """sum_{j=0}^k alpha_{k+1}^j T(z_j), the first term of eq (21), T = BN-ReLU-conv3x3 (DenseNet).

    ``input_widths`` are the channel counts of z_0..z_k. Computed as one conv over
    relu(bn(concat z)) with the weight slice of z_j scaled by alpha^j (exact: BN and ReLU act per
    channel and the conv is linear in its weight). ``learn_alpha=False`` fixes alpha = 1 (DenseNet).
    """

    def __init__(self, input_widths: Sequence[int], growth: int, *, drop_rate: float = 0.0,
                 learn_alpha: bool = True, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU) -> None:
        super().__init__()
        widths = [check_int("input_widths[i]", w, min_value=1) for w in input_widths]
        if not widths:
            raise ValueError("input_widths must name at least one input (z_0)")
        growth = check_int("growth", growth, min_value=1)
        self.drop_rate = check_real("drop_rate", drop_rate, min_value=0.0, max_value=1.0, include_max=False)
        total = sum(widths)
        self.norm = norm_layer(total)
        self.act = act_layer()
        self.conv = conv3x3(total, growth)
        ones = torch.ones(len(widths))
        if learn_alpha:
            self.alpha = nn.Parameter(ones)
        else:
            self.register_buffer("alpha", ones)
        group = torch.repeat_interleave(torch.arange(len(widths)), torch.tensor(widths))
        self.register_buffer("channel_group", group, persistent=False)

    def forward(self, zs: Sequence[torch.Tensor]) -> torch.Tensor:
        a = self.act(self.norm(torch.cat(list(zs), 1)))
        scale = self.alpha[self.channel_group].to(self.conv.weight.dtype).view(1, -1, 1, 1)
        out = F.conv2d(a, self.conv.weight * scale, padding=1)
        return F.dropout(out, self.drop_rate, self.training) if self.drop_rate > 0 else out


class AGDDenseBlock(nn.Module):
    """A dense block of AGD-Net, eq (21): z_{k+1} = sum_j alpha_{k+1}^j T(z_j) + beta (z_k - sum_j h_{k+1}^j z_j).

    h is eq (5) (``analysis.theory.oai.nesterov_h_weights``), restarted in each block. The j = 0 term of
    the momentum sum vanishes exactly (module docstring), so it runs over z_1..z_k. Returns the
    concatenation [z_0, ..., z_L].
    """

    def __init__(self, in_channels: int, num_layers: int, growth: int, *, beta: float = 0.1,
                 drop_rate: float = 0.0, learn_alpha: bool = True, norm_layer=nn.BatchNorm2d,
                 act_layer=nn.ReLU) -> None:
        super().__init__()
        in_channels = check_int("in_channels", in_channels, min_value=1)
        num_layers = check_int("num_layers", num_layers, min_value=1)
        growth = check_int("growth", growth, min_value=1)
        self.beta = check_real("beta", beta)
        H = nesterov_h_weights(num_layers)
        # h_{k+1}^j as Python floats: fixed constants of the architecture, not tensors to move or cast.
        self.h: list[list[float]] = [[float(H[k + 1, j]) for j in range(k + 1)] for k in range(num_layers)]
        self.layers = nn.ModuleList(
            AGDDenseLayer([in_channels] + [growth] * k, growth, drop_rate=drop_rate, learn_alpha=learn_alpha,
                          norm_layer=norm_layer, act_layer=act_layer)
            for k in range(num_layers))
        self.out_channels = in_channels + num_layers * growth

    def momentum(self, k: int, zs: Sequence[torch.Tensor]) -> torch.Tensor | None:
        """z_k - sum_{j=1}^k h_{k+1}^j z_j (None at k = 0, where z_0 - h_1^0 z_0 = 0)."""
        if k == 0:
            return None
        out = zs[k]
        for j in range(1, k + 1):
            out = out - self.h[k][j] * zs[j]
        return out

    def forward(self, z0: torch.Tensor) -> torch.Tensor:
        zs = [z0]
        for k, layer in enumerate(self.layers):
            z = layer(zs)
            m = self.momentum(k, zs) if self.beta != 0 else None
            zs.append(z if m is None else z + self.beta * m)
        return torch.cat(zs, 1)


class AGDNet(nn.Module):
    """AGD-Net (OAI Sec. 6.2) in DenseNet's CIFAR layout (k, L); ``beta=0, learn_alpha=False`` is DenseNet."""

    def __init__(self, depth: int = 40, growth: int = 12, num_classes: int = 10, *, beta: float = 0.1,
                 drop_rate: float = 0.0, learn_alpha: bool = True, stem_width: int | None = None,
                 in_channels: int = 3, norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU) -> None:
        super().__init__()
        depth = check_int("depth", depth, min_value=7)
        if (depth - 4) % 3:
            raise ValueError(f"depth must be 3n+4 (40, 52, 100, ...) for three dense blocks of n layers; got {depth}")
        growth = check_int("growth", growth, min_value=1)
        num_classes = check_int("num_classes", num_classes, min_value=1)
        stem_width = 16 if stem_width is None else check_int("stem_width", stem_width, min_value=1)
        in_channels = check_int("in_channels", in_channels, min_value=1)
        self.depth, self.growth = depth, growth
        n = (depth - 4) // 3
        self.stem = conv3x3(in_channels, stem_width)
        stages: list[nn.Module] = []
        channels = stem_width
        for b in range(3):
            block = AGDDenseBlock(channels, n, growth, beta=beta, drop_rate=drop_rate, learn_alpha=learn_alpha,
                                  norm_layer=norm_layer, act_layer=act_layer)
            stages.append(block)
            channels = block.out_channels
            if b < 2:
                transition = [norm_layer(channels), act_layer(), conv1x1(channels, channels)]
                if drop_rate > 0:
                    transition.append(nn.Dropout(drop_rate))
                stages.append(nn.Sequential(*transition, nn.AvgPool2d(2)))
        self.features = nn.Sequential(*stages)
        self.final = nn.Sequential(norm_layer(channels), act_layer())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.final(self.features(self.stem(x)))).flatten(1))


def _coefficient_row(name: str, value, step: int, default_last: float) -> list[float]:
    if value is None:
        return [0.0] * step + [default_last]
    row = [check_real(f"{name}[{t}]", v) for t, v in enumerate(value)]
    if len(row) != step + 1:
        raise ValueError(f"{name} must have step + 1 = {step + 1} entries (t = 0..{step}); got {len(row)}")
    return row


class ADMMBlock(nn.Module):
    """Step k of the ADMM structure, eq (20), two paths sharing the mixing term m_k:

    x'_{k+1} = act(T'(x'_k) + m_k),  x_{k+1} = act(T(x_k) + m_k),
    m_k = sum_{t=0}^k alpha[t] x'_t + sum_{t=0}^k beta[t] x_t.

    ``alpha``, ``beta``: the k + 1 coefficients alpha_{k+1}^t, beta_{k+1}^t; default DMRNet,
    1/2 at t = k and 0 elsewhere. ``act`` is the identity unless ``relu_after_sum``.
    """

    def __init__(self, channels: int, step: int, alpha: Sequence[float] | None = None,
                 beta: Sequence[float] | None = None, *, relu_after_sum: bool = False,
                 norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU) -> None:
        super().__init__()
        channels = check_int("channels", channels, min_value=1)
        self.step = check_int("step", step, min_value=0)
        self.alpha = _coefficient_row("alpha", alpha, self.step, 0.5)
        self.beta = _coefficient_row("beta", beta, self.step, 0.5)
        self.T_prime = _TwoLayerT(channels, channels, 1, norm_layer, act_layer)
        self.T = _TwoLayerT(channels, channels, 1, norm_layer, act_layer)
        self.act = act_layer() if relu_after_sum else nn.Identity()

    def forward(self, xs_prime: Sequence[torch.Tensor],
                xs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        k = self.step
        if len(xs_prime) != k + 1 or len(xs) != k + 1:
            raise ValueError(f"step {k} needs the states x'_0..x'_{k} and x_0..x_{k}; "
                             f"got {len(xs_prime)} and {len(xs)}")
        mix = None
        for t in range(k + 1):
            for c, state in ((self.alpha[t], xs_prime[t]), (self.beta[t], xs[t])):
                if c != 0:  # DMRNet has two nonzero coefficients out of 2(k + 1): skip the rest.
                    mix = c * state if mix is None else mix + c * state
        xp_next = self.T_prime(xs_prime[k])
        x_next = self.T(xs[k])
        if mix is not None:
            xp_next, x_next = xp_next + mix, x_next + mix
        return self.act(xp_next), self.act(x_next)


class ADMMStage(nn.Module):
    """``depth`` ADMM blocks of one width, eq (20); ``alpha``, ``beta`` of shape (depth, depth) hold
    alpha_{k+1}^t at [k, t] (t <= k read). Default DMRNet. ``forward(x, x_prime=None)`` returns
    (x'_depth, x_depth), with x'_0 = x_0 unless given."""

    def __init__(self, channels: int, depth: int, alpha=None, beta=None, *, relu_after_sum: bool = False,
                 norm_layer=nn.BatchNorm2d, act_layer=nn.ReLU) -> None:
        super().__init__()
        depth = check_int("depth", depth, min_value=1)
        alpha = None if alpha is None else torch.as_tensor(alpha, dtype=torch.float64)
        beta = None if beta is None else torch.as_tensor(beta, dtype=torch.float64)
        for name, m in (("alpha", alpha), ("beta", beta)):
            if m is not None and tuple(m.shape) != (depth, depth):
                raise ValueError(f"{name} must have shape (depth, depth) = ({depth}, {depth}); got {tuple(m.shape)}")
        self.blocks = nn.ModuleList(
            ADMMBlock(channels, k, None if alpha is None else alpha[k, : k + 1].tolist(),
                      None if beta is None else beta[k, : k + 1].tolist(), relu_after_sum=relu_after_sum,
                      norm_layer=norm_layer, act_layer=act_layer)
            for k in range(depth))

    def forward(self, x: torch.Tensor, x_prime: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        xps, xs = [x if x_prime is None else x_prime], [x]
        for block in self.blocks:
            xp, x = block(xps, xs)
            xps.append(xp)
            xs.append(x)
        return xps[-1], xs[-1]


# --- registry ------------------------------------------------------------------------------------

_PAPER = "OAI (002)"


def _hbnet(n: int, num_classes: int, width: int, activations: bool, beta1: float, beta2: float,
           relu_after_sum: bool, in_channels: int) -> HBNet:
    return HBNet(n, num_classes, width, beta1=beta1, beta2=beta2, relu_after_sum=relu_after_sum,
                 in_channels=in_channels, act_layer=activation_layer(activations))


@register_model(source="paper", paper=_PAPER)
def hbnet9(num_classes: int = 10, width: int = 16, activations: bool = True, beta1: float = 1.0,
           beta2: float = -1.0, relu_after_sum: bool = False, in_channels: int = 3) -> HBNet:
    """HB-Net n = 9 (depth 56, widths 16/32/64), eq (16) with beta1 = 1, beta2 = -1 (OAI Table 4)."""
    return _hbnet(9, num_classes, width, activations, beta1, beta2, relu_after_sum, in_channels)


@register_model(source="paper", paper=_PAPER)
def hbnet18(num_classes: int = 10, width: int = 16, activations: bool = True, beta1: float = 1.0,
            beta2: float = -1.0, relu_after_sum: bool = False, in_channels: int = 3) -> HBNet:
    """HB-Net n = 18 (depth 110, widths 16/32/64), eq (16) with beta1 = 1, beta2 = -1 (OAI Table 4)."""
    return _hbnet(18, num_classes, width, activations, beta1, beta2, relu_after_sum, in_channels)


@register_model(source="paper", paper=_PAPER)
def postact_resnet56(num_classes: int = 10, width: int = 16, activations: bool = True,
                     in_channels: int = 3) -> HBNet:
    """Post-activation ResNet-56 (option-A shortcuts), HB-Net n = 9 with beta2 = 0: the Table 4 baseline."""
    return _hbnet(9, num_classes, width, activations, 1.0, 0.0, True, in_channels)


@register_model(source="paper", paper=_PAPER)
def postact_resnet110(num_classes: int = 10, width: int = 16, activations: bool = True,
                      in_channels: int = 3) -> HBNet:
    """Post-activation ResNet-110 (option-A shortcuts), HB-Net n = 18 with beta2 = 0: the Table 4 baseline."""
    return _hbnet(18, num_classes, width, activations, 1.0, 0.0, True, in_channels)


def _make_dense_builder(depth: int, agd: bool):
    if agd:
        def builder(num_classes: int = 10, growth: int = 12, activations: bool = True, beta: float = 0.1,
                    drop_rate: float = 0.0, in_channels: int = 3) -> AGDNet:
            return AGDNet(depth, growth, num_classes, beta=beta, drop_rate=drop_rate, learn_alpha=True,
                          in_channels=in_channels, act_layer=activation_layer(activations))
        name = f"agdnet_k12_l{depth}"
        doc = f"AGD-Net (21), growth 12, depth {depth}: DenseNet layout, learnable alpha, beta = 0.1 (OAI Table 4)."
    else:
        def builder(num_classes: int = 10, growth: int = 12, activations: bool = True, drop_rate: float = 0.0,
                    in_channels: int = 3) -> AGDNet:
            return AGDNet(depth, growth, num_classes, beta=0.0, drop_rate=drop_rate, learn_alpha=False,
                          in_channels=in_channels, act_layer=activation_layer(activations))
        name = f"densenet_k12_l{depth}"
        doc = f"DenseNet (k = 12, L = {depth}), AGD-Net (18) with alpha = 1, beta = 0: the Table 4 baseline."
    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = doc
    return name, builder


for _depth in (40, 52):
    for _agd in (True, False):
        _name, _builder = _make_dense_builder(_depth, _agd)
        register_model(_name, source="paper", paper=_PAPER)(_builder)
