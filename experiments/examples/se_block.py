"""A squeeze-and-excitation residual block (Hu et al., CVPR 2018) for ``blockaudit audit-block``.

The example of a block from outside the audited papers: a pre-activation basic block whose
residual branch is rescaled per channel by a sigmoid gate computed from its pooled features.
``forward_with_feature`` is optional: a block that returns its residual branch is ResNEst-shaped, and
the audit adds the risk-gap check (RN Prop. 2) for it.
"""
from torch import nn


class SEBlock(nn.Module):
    """Pre-activation basic block with squeeze-and-excitation on the residual branch."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False))
        hidden = max(out_channels // 4, 1)
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(out_channels, hidden, 1), nn.ReLU(),
                                nn.Conv2d(hidden, out_channels, 1), nn.Sigmoid())
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))

    def forward(self, x):
        return self.forward_with_feature(x)[0]

    def forward_with_feature(self, x):
        """``(x_next, v)`` with ``v`` the gated residual branch: with it the audit measures the ResNEst risk gap."""
        r = self.body(x)
        v = r * self.se(r)
        return self.shortcut(x) + v, v
