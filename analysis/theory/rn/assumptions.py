"""RN's assumptions as checks, and the landscape of (P_phi) under the squared loss (Prop. 1, Thm 4).

Assumption 1: sum v_L y^T != 0 and sum v_L v_L^T full rank; Assumption 3: M >= N_o; Assumption 4:
x_{L-1} = sum_{i<L} W_i v_i has a unique solution, which needs the bottleneck condition (10). The
witnesses of Prop. 1 (i) and the constructed critical points of Thm 4 follow.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from analysis.theory.rn.features import PredictionFeatures, check_prediction_features
from analysis.theory.rn.risk import check_targets
from analysis.validation import AssumptionError, as_matrix, check_int, check_real

__all__ = [
    "assumption1_holds",
    "assumption3_holds",
    "assumption4_holds",
    "bottleneck_condition_holds",
    "nonconvexity_witness",
    "nonconcavity_witness",
    "constructed_critical_point",
]

_EPS = np.finfo(np.float64).eps


def assumption1_holds(v_last, Y, rtol: float = 1e-10) -> bool:
    """Assumption 1: sum_n v_L y^T != 0 and sum_n v_L v_L^T is full rank (relative to rtol)."""
    v = as_matrix("v_last", v_last)
    y = check_targets(Y, v.shape[0], "squared")
    scale = float(np.linalg.norm(v) * np.linalg.norm(y))
    cross_ok = float(np.linalg.norm(v.T @ y)) > rtol * scale
    s = np.linalg.svd(v, compute_uv=False)
    rank_ok = v.shape[0] >= v.shape[1] and s.size > 0 and s[-1] > np.sqrt(rtol) * s[0]
    return bool(cross_ok and rank_ok)


def assumption3_holds(width: int, n_out: int) -> bool:
    """Assumption 3: M >= N_o."""
    return check_int("width", width, min_value=1) >= check_int("n_out", n_out, min_value=1)


def assumption4_holds(W_prev: Sequence[np.ndarray], rtol: float | None = None) -> bool:
    """Assumption 4: x_{L-1} = sum_{i<L} W_i v_i has a unique solution (v_0..v_{L-1}), i.e. the stacked
    B = [W_0, ..., W_{L-1}] (M, sum K_i) has full column rank: s_min(B) > rtol * s_max(B), rtol
    defaulting to max(M, sum K) * eps (lstsq's rank cutoff)."""
    w = [as_matrix(f"W_prev[{i}]", x) for i, x in enumerate(W_prev)]
    if not w:
        raise ValueError("W_prev must hold W_0..W_(L-1); got an empty list")
    m = w[0].shape[0]
    for i, x in enumerate(w):
        if x.shape[0] != m:
            raise ValueError(f"W_prev[{i}] must have M = {m} rows (the residual width); got {x.shape[0]}")
    b = np.hstack(w)
    if b.shape[1] > m:
        return False
    s = np.linalg.svd(b, compute_uv=False)
    tol = max(b.shape) * _EPS if rtol is None else check_real("rtol", rtol, min_value=0.0)
    return bool(s[-1] > tol * s[0])


def bottleneck_condition_holds(width: int, widths_before_last: Sequence[int]) -> bool:
    """Eq (10): M >= sum_{i=0}^{L-1} K_i, with ``widths_before_last`` = (K_0 = N_in, K_1, ..., K_{L-1}).

    Necessary for Assumption 4 (B = [W_0..W_{L-1}] has sum K_i columns in R^M); with no expansion
    (M = N_in = K_0) it fails as soon as L > 1.
    """
    m = check_int("width", width, min_value=1)
    ks = [check_int(f"widths_before_last[{i}]", k, min_value=1) for i, k in enumerate(widths_before_last)]
    if not ks:
        raise ValueError("widths_before_last must hold at least K_0 = N_in")
    return m >= sum(ks)


# ----------------------------------------------------------------------------------------------
# Prop. 1 and Thm 4: landscape witnesses and constructed critical points (squared loss)
# ----------------------------------------------------------------------------------------------
def _require_assumption1(pf: PredictionFeatures, y: np.ndarray) -> None:
    if not assumption1_holds(pf.v_last, y):
        raise AssumptionError(
            "features.v_last and Y must satisfy Assumption 1 of RN (sum v_L y^T != 0 and sum v_L v_L^T "
            "full rank)"
        )


def nonconvexity_witness(features, Y) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Two points p = (W_L, W_{L+1}), q = -p of (P_phi) whose midpoint (0, 0) lies ABOVE the chord.

    Prop. 1 (i). With (a, b) the top singular pair of Y^T V_L (nonzero by Assumption 1) put
    W_{L+1} = delta a e_1^T, W_L = (s / delta) e_1 b^T, so W_{L+1} W_L = s a b^T. Then
    (R(p) + R(q)) / 2 = (||Y - s V_L b a^T||^2 + delta^2 ||X_{L-1} e_1||^2) / N, and with
    s = a^T Y^T V_L b / ||V_L b||^2 the first term is ||Y||^2 - sigma_1^2 / ||V_L b||^2 < ||Y||^2 = N R(0, 0);
    delta is chosen so the second term uses a quarter of that margin.
    """
    pf = check_prediction_features(features)
    y = check_targets(Y, pf.x_prev.shape[0], "squared")
    _require_assumption1(pf, y)
    u, sig, vt = np.linalg.svd(y.T @ pf.v_last)
    a, b = u[:, 0], vt[0]
    vb = pf.v_last @ b
    s = sig[0] / float(vb @ vb)
    margin = sig[0] ** 2 / float(vb @ vb)
    m = pf.x_prev.shape[1]
    e1 = np.zeros(m)
    e1[0] = 1.0
    xe = float(np.sum(pf.x_prev[:, 0] ** 2))
    delta = 1.0 if xe == 0 else min(1.0, np.sqrt(0.25 * margin / xe))
    w_out = delta * np.outer(a, e1)
    w_l = (s / delta) * np.outer(e1, b)
    return (w_l, w_out), (-w_l, -w_out)


def nonconcavity_witness(features, Y, seed: int = 0):
    """Two points (W_L, W), (W_L, -W) of (P_phi) whose midpoint (W_L, 0) lies BELOW the chord.

    R is a convex quadratic in W_{L+1}: (R(p) + R(q)) / 2 - R(mid) = ||X_L W^T||^2 / N > 0 whenever
    X_L W^T != 0, which a random W achieves almost surely once X_L != 0 (true under Assumption 1).
    """
    pf = check_prediction_features(features)
    y = check_targets(Y, pf.x_prev.shape[0], "squared")
    _require_assumption1(pf, y)
    rng = np.random.default_rng(seed)
    m, k = pf.x_prev.shape[1], pf.v_last.shape[1]
    w_l = rng.standard_normal((m, k))
    w_o = rng.standard_normal((y.shape[1], m))
    return (w_l, w_o), (w_l, -w_o)


def constructed_critical_point(features, Y, rank: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A critical point (W_L, W_{L+1}) of (P_phi), squared loss, with rank(W_{L+1}) = ``rank`` < N_o.

    The Baldi-Hornik construction for the coupled linear model y_hat = Theta z, z = [x_{L-1}; v_L],
    Theta = W_{L+1} [I, W_L]. Let Z = [X_{L-1}, V_L], P_Z its column-space projector and Q (N_o, r) r
    orthonormal eigenvectors of Sigma = Y^T P_Z Y (here: those of the r largest eigenvalues). Aim for
    Theta = Q Q^T Theta_LS (Theta_LS the minimum-norm least-squares fit), whose residual satisfies
    E^T Z = (I - Q Q^T) Y^T Z. Put W_{L+1} = Q R with R = Q^T Theta_LS[:, :M]; then
    dR/dW_L = -(2/N) R^T Q^T E^T V_L = 0, and dR/dW_{L+1} = 0 needs
      (I - Q Q^T) Y^T (X_{L-1} + V_L W_L^T) = 0   and   R W_L = Q^T Theta_LS[:, M:]
    (the second makes W_{L+1}[I, W_L] = Theta). These are linear in W_L and consistent exactly
    because Q spans an invariant subspace of Sigma, provided R has rank r (so r <= rank X_{L-1}); we solve them by least squares and raise if the
    residual is not at round-off level (e.g. K_L too small for the (N_o - r) M equations).
    The point is a saddle, not a minimum, when the discarded eigenvalues of Sigma are positive
    (Thm 4); it is never a local maximum (Prop. 1 (ii)).
    """
    pf = check_prediction_features(features)
    y = check_targets(Y, pf.x_prev.shape[0], "squared")
    n_o = y.shape[1]
    r = check_int("rank", rank, min_value=0, max_value=n_o - 1)
    m, k = pf.x_prev.shape[1], pf.v_last.shape[1]
    z = np.hstack([pf.x_prev, pf.v_last])
    theta_ls = np.linalg.lstsq(z, y, rcond=None)[0].T  # (N_o, M + K_L)
    py = z @ np.linalg.lstsq(z, y, rcond=None)[0]
    lam, vec = np.linalg.eigh(y.T @ py)
    q = vec[:, ::-1][:, :r]
    qperp = vec[:, ::-1][:, r:]
    rmat = q.T @ theta_ls[:, :m]  # (r, M)
    # Unknown w = vec(W_L^T) (K_L x M, column-major). vec(A X B) = (B^T kron A) vec(X).
    s = qperp.T @ y.T @ pf.v_last  # (N_o - r, K_L): s W_L^T = -Qperp^T Y^T X_{L-1}
    rhs1 = -(qperp.T @ y.T @ pf.x_prev)
    eq1 = np.kron(np.eye(m), s)
    eq2 = np.kron(rmat, np.eye(k))  # W_L^T R^T = Theta_LS[:, M:]^T Q
    rhs2 = theta_ls[:, m:].T @ q
    lhs = np.vstack([eq1, eq2])
    rhs = np.concatenate([rhs1.ravel(order="F"), rhs2.ravel(order="F")])
    w, *_ = np.linalg.lstsq(lhs, rhs, rcond=None)
    resid = float(np.linalg.norm(lhs @ w - rhs))
    if resid > 1e-8 * max(1.0, float(np.linalg.norm(rhs))):
        raise AssumptionError(
            f"rank: no critical point with rank(W_out) = {r} for these features (linear system residual "
            f"{resid:.3g}); K_L = {k} may be too small for the (N_o - r) * M = {(n_o - r) * m} equations"
        )
    w_l = w.reshape((k, m), order="F").T
    return w_l, q @ rmat
