"""RN's DenseNEsts (Prop. 3, 4): features, forward pass, and the equal wide ResNEst of Prop. 4.

DenseNEst (the paper's Sec. 5; only a block diagram survives in the slides, so we use the paper's
definition): v_0 = x, v_i = G_i([v_0; ...; v_{i-1}]) (each dense block sees the concatenation of all
earlier features), output y = W_{L+1} [v_0; ...; v_L].
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from analysis.theory.rn.features import FeatureMap, ResidualBlock
from analysis.validation import as_matrix, check_int

__all__ = ["densenest_features", "densenest_forward", "densenest_to_resnest"]


def _check_dense_maps(maps: Sequence[FeatureMap], n_in: int) -> list[int]:
    widths = [n_in]
    for i, g in enumerate(maps, start=1):
        if not isinstance(g, FeatureMap):
            raise TypeError(f"maps[{i - 1}] must be a FeatureMap; got {type(g).__name__}")
        if g.in_dim != sum(widths):
            raise ValueError(
                f"dense block {i}: G_{i} must read the concatenation [v_0..v_{i - 1}] of width {sum(widths)}; "
                f"its first layer expects {g.in_dim} inputs"
            )
        widths.append(g.out_dim)
    return widths


def densenest_features(x, maps: Sequence[FeatureMap]) -> list[np.ndarray]:
    """v_0 = x, v_i = G_i([v_0; ...; v_{i-1}]) (each dense block reads all earlier features)."""
    x = as_matrix("x", x)
    _check_dense_maps(maps, x.shape[1])
    feats = [x]
    for g in maps:
        feats.append(g(np.hstack(feats)))
    return feats


def densenest_forward(x, maps: Sequence[FeatureMap], W_out) -> np.ndarray:
    """y = W_{L+1} [v_0; ...; v_L]."""
    v = np.hstack(densenest_features(x, maps))
    w = as_matrix("W_out", W_out, (None, v.shape[1]))
    return v @ w.T


def densenest_to_resnest(maps: Sequence[FeatureMap], W_out, n_in: int
                         ) -> tuple[np.ndarray, list[ResidualBlock], np.ndarray]:
    """Prop. 4: the wide ResNEst with bottleneck blocks equal to a given DenseNEst, as (W_0, blocks, W_{L+1}).

    Residual width M = max(sum_{i<=L} K_i, N_o) (the max keeps Assumption 3). W_i = E_i, the columns
    of the identity that place v_i in its own slot of the stream, so the W_i have mutually orthogonal
    column spaces ("orthogonalities") and x_{i-1} = [v_0; ...; v_{i-1}; 0]. Block i's map is
    G_i composed with the 1x1 "bottleneck" reduction S_{i-1} = [I, 0] that reads the first
    sum_{j<i} K_j coordinates (folded into G_i's first layer). W_{L+1} = [W_dense, 0]. Then
    B = [E_0..E_{L-1}] has orthonormal columns: Assumption 4 and eq (10) hold by construction.
    """
    n_in = check_int("n_in", n_in, min_value=1)
    widths = _check_dense_maps(maps, n_in)
    total = sum(widths)
    w_d = as_matrix("W_out", W_out, (None, total))
    m = max(total, w_d.shape[0])
    offsets = np.cumsum([0, *widths])
    eye = np.eye(m)
    w0 = eye[:, : widths[0]]
    blocks = []
    for i, g in enumerate(maps, start=1):
        used = offsets[i]
        (a1, b1), *rest = g.layers
        a1_wide = np.zeros((a1.shape[0], m))
        a1_wide[:, :used] = a1
        g_res = FeatureMap(((a1_wide, b1), *rest), g.activation)
        blocks.append(ResidualBlock(g_res, eye[:, offsets[i]: offsets[i + 1]]))
    w_out = np.zeros((w_d.shape[0], m))
    w_out[:, :total] = w_d
    return w0, blocks, w_out
