"""RN models with vector features: ResNEst blocks, their features and forward passes (eq (1)-(3), (6)).

Conventions (rows are samples) are those of the package docstring, ``analysis.theory.rn``. The
validation helpers ``stack_features`` and ``check_prediction_features`` are shared by the risk
solvers of this package.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from analysis.theory.activations import NAMES as ACTIVATIONS
from analysis.theory.activations import activation
from analysis.validation import as_matrix

__all__ = [
    "ACTIVATIONS",
    "FeatureMap",
    "ResidualBlock",
    "PredictionFeatures",
    "activation",
    "random_feature_map",
    "random_resnest",
    "resnest_residuals",
    "resnest_features",
    "resnest_forward",
    "a_resnest_forward",
    "prediction_features",
    "stack_features",
    "check_prediction_features",
]


@dataclass(frozen=True)
class FeatureMap:
    """G_i(x; theta_i): an MLP x -> act(A_k ... act(A_1 x + b_1) ... + b_k).

    The activation follows every layer, the last included: v_i = G_i(x_{i-1}) is the block's
    nonlinear feature, and the block's last linear map is W_i (eq (1)). ``layers`` holds
    (A, b) with A of shape (out, in). ``activation`` names act, one of ``ACTIVATIONS`` (the shared
    switch ``analysis.theory.activations``); ``"linear"`` (identity) builds linearly predictable features.
    """

    layers: tuple[tuple[np.ndarray, np.ndarray], ...]
    activation: str = "relu"

    @property
    def in_dim(self) -> int:
        return self.layers[0][0].shape[1]

    @property
    def out_dim(self) -> int:
        return self.layers[-1][0].shape[0]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = x
        for a, b in self.layers:
            h = activation(self.activation)(h @ a.T + b)
        return h


@dataclass(frozen=True)
class ResidualBlock:
    """One residual block of eq (1): the feature map G_i and its expansion W_i (M, K_i)."""

    G: FeatureMap
    W: np.ndarray


@dataclass(frozen=True)
class PredictionFeatures:
    """What a fixed phi hands to (P_phi): x_{L-1} = sum_{i<L} W_i v_i (N, M) and v_L (N, K_L)."""

    x_prev: np.ndarray
    v_last: np.ndarray


def random_feature_map(rng: np.random.Generator, in_dim: int, out_dim: int, hidden: Sequence[int] = (),
                       act: str = "relu") -> FeatureMap:
    """A Gaussian MLP (He scaling, small biases) for tests and demonstrations."""
    sizes = [in_dim, *hidden, out_dim]
    layers = tuple(
        (rng.standard_normal((o, i)) * np.sqrt(2.0 / i), 0.1 * rng.standard_normal(o))
        for i, o in zip(sizes[:-1], sizes[1:])
    )
    return FeatureMap(layers, act)


def random_resnest(rng: np.random.Generator, n_in: int, width: int, feature_widths: Sequence[int],
                   act: str = "relu", hidden: Sequence[int] = ()) -> tuple[np.ndarray, list[ResidualBlock]]:
    """(W_0, blocks) of a random L-block ResNEst; ``feature_widths`` = (K_1, ..., K_L).

    W_0 and the W_i are Gaussian with 1/sqrt(fan-in) scaling; with width >= sum_{i<L} K_i they have
    full column rank almost surely (Assumption 4 holds generically under the bottleneck condition).
    """
    w0 = rng.standard_normal((width, n_in)) / np.sqrt(n_in)
    blocks = [
        ResidualBlock(random_feature_map(rng, width, k, hidden, act), rng.standard_normal((width, k)) / np.sqrt(k))
        for k in feature_widths
    ]
    return w0, blocks


def _check_blocks(blocks, width: int) -> None:
    for i, blk in enumerate(blocks, start=1):
        if not isinstance(blk, ResidualBlock):
            raise TypeError(f"blocks[{i - 1}] must be a ResidualBlock(G, W); got {type(blk).__name__}")
        if blk.G.in_dim != width:
            raise ValueError(
                f"block {i}: G_{i} must read the residual stream of width M = {width}; its first layer "
                f"expects {blk.G.in_dim} inputs"
            )
        if blk.W.shape != (width, blk.G.out_dim):
            raise ValueError(
                f"block {i}: W_{i} must have shape (M, K_{i}) = ({width}, {blk.G.out_dim}); got {blk.W.shape}"
            )


def resnest_residuals(x, blocks: Sequence[ResidualBlock], W0=None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(features v_0..v_L, residual representations x_0..x_L) of eq (1) and (3)."""
    x = as_matrix("x", x)
    w0 = np.eye(x.shape[1]) if W0 is None else as_matrix("W0", W0, (None, x.shape[1]))
    _check_blocks(blocks, w0.shape[0])
    feats, stream = [x], [x @ w0.T]
    for blk in blocks:
        v = blk.G(stream[-1])
        feats.append(v)
        stream.append(stream[-1] + v @ blk.W.T)
    return feats, stream


def resnest_features(x, blocks: Sequence[ResidualBlock], W0=None) -> list[np.ndarray]:
    """The features v_0 = x, v_i = G_i(x_{i-1}) of eq (3); W0 defaults to the identity (no expansion)."""
    return resnest_residuals(x, blocks, W0)[0]


def resnest_forward(x, blocks: Sequence[ResidualBlock], W_out, W0=None) -> np.ndarray:
    """Eq (2): y = W_{L+1} x_L = W_{L+1} sum_i W_i v_i, as an (N, N_o) array."""
    _, stream = resnest_residuals(x, blocks, W0)
    w_out = as_matrix("W_out", W_out, (None, stream[-1].shape[1]))
    return stream[-1] @ w_out.T


def a_resnest_forward(features: Sequence[np.ndarray], H) -> np.ndarray:
    """Eq (6): y = sum_i H_i v_i with the stacked H (D, N_o)."""
    v = stack_features(features)
    h = as_matrix("H", H, (v.shape[1], None))
    return v @ h


def prediction_features(x, blocks: Sequence[ResidualBlock], W0=None) -> PredictionFeatures:
    """x_{L-1} and v_L: everything (P_phi) needs once phi is fixed."""
    feats, stream = resnest_residuals(x, blocks, W0)
    if len(blocks) < 1:
        raise ValueError("blocks must hold at least one residual block (L >= 1) for (P_phi)")
    return PredictionFeatures(stream[-2], feats[-1])


# ----------------------------------------------------------------------------------------------
# Validation helpers
# ----------------------------------------------------------------------------------------------
def stack_features(features) -> np.ndarray:
    """The stacked (N, D) feature matrix [v_0, ..., v_L] from a list of (N, K_i) features or an (N, D) matrix.

    Raises when the list is empty or its features are evaluated on different numbers of samples.
    """
    if isinstance(features, np.ndarray) and features.ndim == 2:
        return as_matrix("features", features)
    feats = [as_matrix(f"features[{i}]", f) for i, f in enumerate(features)]
    if not feats:
        raise ValueError("features must hold at least v_0; got an empty list")
    n = feats[0].shape[0]
    for i, f in enumerate(feats):
        if f.shape[0] != n:
            raise ValueError(
                f"features[{i}] has {f.shape[0]} samples (rows) but features[0] has {n}; every feature "
                f"v_i must be evaluated on the same N samples"
            )
    return np.hstack(feats)


def check_prediction_features(features, n_rows: int | None = None) -> PredictionFeatures:
    """``features`` (a ``PredictionFeatures`` or a pair (x_{L-1}, v_L)) as checked float64 matrices with equal rows."""
    if isinstance(features, PredictionFeatures):
        xp, vl = features.x_prev, features.v_last
    else:
        try:
            xp, vl = features
        except (TypeError, ValueError):
            raise TypeError(
                "features must be a PredictionFeatures(x_prev, v_last) or a pair (x_{L-1}, v_L); "
                f"got {type(features).__name__}"
            ) from None
    xp = as_matrix("features.x_prev", xp)
    vl = as_matrix("features.v_last", vl)
    if xp.shape[0] != vl.shape[0]:
        raise ValueError(
            f"features.x_prev has {xp.shape[0]} samples but features.v_last has {vl.shape[0]}; both must "
            "be evaluated on the same N samples"
        )
    return PredictionFeatures(xp, vl)

