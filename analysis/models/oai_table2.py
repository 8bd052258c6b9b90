"""The nets of the simulation of Sec. 5.3 / Table 2 of Li et al., "Optimization Algorithm Inspired
Deep Neural Network Structure Design" (2018), papers/002_605766797e3c4bb5.txt.

Dense (MLP) nets whose layers follow the x-space recurrences (7), (11)-(14) of
``analysis.theory.oai`` with one W_k per layer; trained by ``experiments/reproduce/oai_table2.py``
(claim OAI-table2). They are not image classifiers, so they are not in the model registry.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from analysis.theory.oai import nesterov_h_weights, nesterov_momentum
from analysis.validation import check_choice, check_int, check_real

__all__ = ["TABLE2_METHODS", "Table2Net"]

TABLE2_METHODS = ("admm", "gd", "hb", "agd", "agd2")


class Table2Net(nn.Module):
    """The nets of Sec. 5.3 / Table 2: ``depth`` layers, one W_k (and bias b_k) per layer.

    Each layer applies phi(W_k x + b_k) (phi = sigmoid) inside the recurrence of its method:

    - ``gd``: x_{k+1} = phi(W_k x_k), eq (7);
    - ``hb``: x_{k+1} = phi(W_k x_k) + beta (x_k - x_{k-1}), eq (11), beta = 0.3 (Sec. 5.3);
    - ``agd``: x_{k+1} = phi(W_k (x_k + beta_k (x_k - x_{k-1}))), eq (12), theta schedule of (3);
    - ``agd2``: x_{k+1} = x_k - sum_{j<=k} h_{k+1,j} (x_j - phi(W_j x_j)), eq (13) with h of (5).
      Reading: the "gradient" x_j - phi(W_j x_j) is computed once, at layer j, with layer j's
      weights (the algorithm evaluates each gradient once), then reused by later layers;
    - ``admm``: eq (14) with W_k shared by the two paths at layer k (one W per layer like
      the others; in the theory both paths use the same W), x'_0 = x_0; returns the x path.

    ``copies`` independent nets are stored side by side (weights of shape (copies, n, n)) and
    applied to inputs of shape (copies, batch, n): training them on the sum of their losses
    with an elementwise optimiser (Adam) is exactly training each alone, faster on a CPU.
    Biases: the paper writes W x; we keep nn.Linear's bias (``bias=False`` drops it).
    Initialisation: nn.Linear's default, U(-1/sqrt(n), 1/sqrt(n)), drawn from ``generators``
    (one per copy) so that every method starts from the same weights for the same seed.
    """

    def __init__(self, method: str, depth: int, width: int = 100, *, copies: int = 1,
                 beta: float = 0.3, bias: bool = True, generators=None,
                 dtype=None, device=None):
        super().__init__()
        self.method = check_choice("method", method, TABLE2_METHODS)
        self.depth = check_int("depth", depth, min_value=1)
        self.width = check_int("width", width, min_value=1)
        self.copies = check_int("copies", copies, min_value=1)
        self.beta = check_real("beta", beta)
        dtype = torch.float32 if dtype is None else dtype
        if generators is not None and len(generators) != self.copies:
            raise ValueError(f"generators must have one generator per copy ({self.copies}); got {len(generators)}")
        bound = 1.0 / np.sqrt(width)

        def draw(shape):
            if generators is None:
                t = torch.rand((self.copies, *shape), dtype=torch.float64)
            else:
                t = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in generators])
            return ((2 * t - 1) * bound).to(dtype=dtype, device=device)

        self.weight = nn.ParameterList(nn.Parameter(draw((width, width))) for _ in range(depth))
        self.bias = (nn.ParameterList(nn.Parameter(draw((1, width))) for _ in range(depth))
                     if bias else None)
        self.register_buffer("momentum", torch.tensor(nesterov_momentum(depth), dtype=dtype, device=device))
        self.register_buffer("h", torch.tensor(nesterov_h_weights(depth), dtype=dtype, device=device))

    def layer(self, k: int, x):
        """T_k(x) = phi(W_k x + b_k) for x of shape (copies, batch, n)."""
        pre = torch.bmm(x, self.weight[k].transpose(1, 2))
        if self.bias is not None:
            pre = pre + self.bias[k]
        return torch.sigmoid(pre)

    def forward(self, x):
        if x.dim() != 3 or x.shape[0] != self.copies or x.shape[2] != self.width:
            raise ValueError(f"x must have shape (copies={self.copies}, batch, width={self.width}); "
                             f"got {tuple(x.shape)}")
        m = self.method
        if m == "gd":
            for k in range(self.depth):
                x = self.layer(k, x)
            return x
        if m == "hb":
            prev = x
            for k in range(self.depth):
                x, prev = self.layer(k, x) + self.beta * (x - prev), x
            return x
        if m == "agd":
            prev = x
            for k in range(self.depth):
                x, prev = self.layer(k, x + self.momentum[k] * (x - prev)), x
            return x
        if m == "agd2":
            grads = []
            for k in range(self.depth):
                grads.append(x - self.layer(k, x))
                x = x - torch.einsum("j,j...->...", self.h[k + 1, : k + 1], torch.stack(grads))
            return x
        xp, s = x, torch.zeros_like(x)
        for k in range(self.depth):
            xp_new = (self.layer(k, xp) + x - s) / 2
            x = (self.layer(k, x) + xp_new + s) / 2
            xp = xp_new
            s = s + xp - x
        return x
