"""(P_phi) of RN: the ResNEst's prediction-weight problem, its local minima and the gap eps, eq (4), (5), (8).

With the feature-finding weights phi fixed, only x_{L-1} = sum_{i<L} W_i v_i and v_L matter
(``PredictionFeatures``); the prediction weights are (W_L, W_{L+1}). ``solve_resnest_prediction``
finds local minimisers from random starts; ``epsilon_gap`` compares their risk with A* of
(PA_phi) (``rn.risk``), and ``epsilon_bound_from_gradient`` turns a near-critical point's gradient
into a bound on eps (Theorem 1's certificate).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import minimize

from analysis.theory.rn.features import PredictionFeatures, check_prediction_features, stack_features
from analysis.theory.rn.risk import (
    LOSSES,
    AResNEstSolution,
    a_resnest_risk,
    check_targets,
    lbfgs_minimize,
    loss_and_gradient,
    single_thread_blas,
    smallest_positive_eigenvalue,
)
from analysis.validation import as_matrix, check_choice, check_int, check_real

__all__ = [
    "LocalMinimum",
    "EpsilonGap",
    "resnest_prediction_risk",
    "solve_resnest_prediction",
    "epsilon_gap",
    "induced_H",
    "a_resnest_gradient_bound",
    "epsilon_bound_from_gradient",
]


def _shapes(pf: PredictionFeatures, W_L, W_out):
    m, k = pf.x_prev.shape[1], pf.v_last.shape[1]
    w_l = as_matrix("W_L", W_L, (m, k))
    w_o = as_matrix("W_out", W_out, (None, m))
    return w_l, w_o


def _risk_grad(pf: PredictionFeatures, y: np.ndarray, w_l, w_o, loss):
    x_l = pf.x_prev + pf.v_last @ w_l.T
    val, gy = loss_and_gradient(x_l @ w_o.T, y, loss)
    return val, w_o.T @ gy.T @ pf.v_last, gy.T @ x_l


def resnest_prediction_risk(W_L, W_out, features, Y, loss: str = "squared") -> tuple[float, np.ndarray, np.ndarray]:
    """(P_phi) eq (4)-(5): R(W_L, W_{L+1}; phi) and its gradients (dR/dW_L, dR/dW_{L+1}).

    y_hat = W_{L+1} (x_{L-1} + W_L v_L); with G = dR/dy_hat (rows), dR/dW_L = W_{L+1}^T G^T V_L and
    dR/dW_{L+1} = G^T X_L.
    """
    check_choice("loss", loss, LOSSES)
    pf = check_prediction_features(features)
    w_l, w_o = _shapes(pf, W_L, W_out)
    y = check_targets(Y, pf.x_prev.shape[0], loss)
    if y.shape[1] != w_o.shape[0]:
        raise ValueError(f"W_out must have N_o = {y.shape[1]} rows (the width of Y); got {w_o.shape[0]}")
    return _risk_grad(pf, y, w_l, w_o, loss)


@dataclass(frozen=True)
class LocalMinimum:
    """A point reached by the local solver on (P_phi), with its first-order certificate."""

    W_L: np.ndarray
    W_out: np.ndarray
    risk: float
    grad_norm: float
    iterations: int
    converged: bool
    grad_W_L: np.ndarray
    grad_W_out: np.ndarray


_POLISH_ITER = 300


def _newton_polish(fun, x: np.ndarray, gtol: float, budget: int) -> tuple[np.ndarray, int]:
    """Trust-region Newton-CG from an L-BFGS point that stalled above ``gtol`` (the point if it does no better).

    On ill-conditioned valleys L-BFGS can stall for 2e4 iterations at ||grad|| ~ 1e-3 (a thorough-profile
    draw: cond [x_{L-1}, v_L] ~ 900, N_o = 4, M = 11) where Newton-CG with negative-curvature steps reaches
    1e-7 in ~100. Hessian-vector products are central differences of the exact gradient, step h =
    sqrt(eps) (1 + ||x||): error ~ h^2 ||D^3 R|| + eps ||g|| / h, relative ~1e-8, and the trust region
    accepts a step only on the risk's actual decrease. Returns (point, iterations).
    """
    scale = float(np.sqrt(np.finfo(float).eps)) * (1.0 + float(np.linalg.norm(x)))

    def hessp(point, direction):
        norm = float(np.linalg.norm(direction))
        if norm == 0.0:
            return np.zeros_like(direction)
        h = scale / norm
        return (fun(point + h * direction)[1] - fun(point - h * direction)[1]) / (2.0 * h)

    before = float(np.linalg.norm(fun(x)[1]))
    res = minimize(fun, x, jac=True, method="trust-ncg", hessp=hessp,
                   options={"gtol": gtol, "maxiter": max(1, min(_POLISH_ITER, budget))})
    after = float(np.linalg.norm(fun(res.x)[1]))
    if after < before and fun(res.x)[0] <= fun(x)[0] + 4 * np.finfo(float).eps * abs(fun(x)[0]):
        return res.x, max(int(res.nit), 1)
    return x, max(int(res.nit), 1)


def solve_resnest_prediction(features, Y, loss: str = "squared", *, starts: int = 4, seed: int = 0,
                             gtol: float = 1e-6, max_iter: int = 20000, init_scale: float = 1.0,
                             polish: bool = True) -> list[LocalMinimum]:
    """L-BFGS on (W_L, W_{L+1}) with phi fixed, from ``starts`` Gaussian random starts.

    The default ``gtol`` = 1e-6 sits just above what a line search on float64 function values can
    resolve (a gradient of size g changes R by ~g^2 / (2 L), invisible below eps * R: g ~ sqrt(2 L eps R),
    about 1e-7 for curvatures L ~ 1e2); tolerances downstream come from the actual final gradient.

    Stops when the Frobenius norm of the full gradient is below ``gtol`` (scipy's projected-gradient
    test is on the max entry, so it is given gtol / sqrt(#params)); ``converged`` reports whether the
    final gradient norm met ``gtol``. Entries of the start are N(0, init_scale^2 / fan_in). A start that
    L-BFGS leaves above ``gtol`` (``max_iter`` spent or stalled) gets up to ``_POLISH_ITER`` more
    iterations of trust-region Newton-CG (``_newton_polish``), counted in ``iterations``; ``polish=False``
    leaves L-BFGS's point as it is.
    """
    check_choice("loss", loss, LOSSES)
    pf = check_prediction_features(features)
    y = check_targets(Y, pf.x_prev.shape[0], loss)
    starts = check_int("starts", starts, min_value=1)
    gtol = check_real("gtol", gtol, min_value=0.0, include_min=False)
    m, k, n_o = pf.x_prev.shape[1], pf.v_last.shape[1], y.shape[1]
    rng = np.random.default_rng(seed)
    split = m * k

    def fun(flat):
        w_l, w_o = flat[:split].reshape(m, k), flat[split:].reshape(n_o, m)
        val, g_l, g_o = _risk_grad(pf, y, w_l, w_o, loss)
        return val, np.concatenate([g_l.ravel(), g_o.ravel()])

    out = []
    def project(flat):
        # R depends on W_L only through W_{L+1} W_L, so the component of W_L in null(W_{L+1}) is a flat
        # direction; left alone it can grow to ~1e3 and make the curvature in W_{L+1} (which sees
        # X_L = X_{L-1} + V_L W_L^T) explode, stalling L-BFGS at eps ~ 1e-2. Removing it leaves R unchanged.
        w_l, w_o = flat[:split].reshape(m, k), flat[split:].reshape(n_o, m)
        w_l = np.linalg.pinv(w_o) @ (w_o @ w_l)
        return np.concatenate([w_l.ravel(), w_o.ravel()])

    with single_thread_blas():
        for _ in range(starts):
            x0 = np.concatenate([rng.standard_normal(split) * init_scale / np.sqrt(k),
                                 rng.standard_normal(n_o * m) * init_scale / np.sqrt(m)])
            flat, nit = lbfgs_minimize(fun, x0, gtol, max_iter, project if n_o < m else None)
            if polish and np.linalg.norm(fun(flat)[1]) > gtol:
                flat, more = _newton_polish(fun, flat, gtol, _POLISH_ITER)
                nit += more
            w_l, w_o = flat[:split].reshape(m, k), flat[split:].reshape(n_o, m)
            val, g_l, g_o = _risk_grad(pf, y, w_l, w_o, loss)
            gn = float(np.sqrt(np.sum(g_l**2) + np.sum(g_o**2)))
            out.append(LocalMinimum(w_l, w_o, val, gn, nit, gn <= gtol, g_l, g_o))
    return out


@dataclass(frozen=True)
class EpsilonGap:
    """eq (8): eps = R(W_L, W_{L+1}) - A*, with A*'s certificate."""

    eps: float
    resnest_risk: float
    a_star: float
    a_star_bound: float


def epsilon_gap(W_L, W_out, features: Sequence[np.ndarray], W_prev: Sequence[np.ndarray], Y,
                loss: str = "squared") -> EpsilonGap:
    """eps(W_L, W_{L+1}; phi) = R(W_L, W_{L+1}; phi) - A(H*; phi), eq (8).

    ``features`` = v_0..v_L, ``W_prev`` = W_0..W_{L-1} (so x_{L-1} = sum_{i<L} v_i W_i^T).
    A* carries its own certificate: the true eps lies in [eps, eps + a_star_bound].
    """
    feats = list(features)
    stack_features(feats)
    w_prev = [as_matrix(f"W_prev[{i}]", w) for i, w in enumerate(W_prev)]
    if len(w_prev) != len(feats) - 1:
        raise ValueError(f"W_prev must hold W_0..W_(L-1): {len(feats) - 1} matrices for {len(feats)} features; "
                         f"got {len(w_prev)}")
    x_prev = _residual_from(feats[:-1], w_prev)
    r, _, _ = resnest_prediction_risk(W_L, W_out, PredictionFeatures(x_prev, feats[-1]), Y, loss)
    sol = a_resnest_risk(feats, Y, loss)
    return EpsilonGap(r - sol.risk, r, sol.risk, sol.suboptimality_bound)


def _residual_from(feats, w_prev):
    m = w_prev[0].shape[0]
    for i, (f, w) in enumerate(zip(feats, w_prev)):
        if w.shape != (m, f.shape[1]):
            raise ValueError(f"W_prev[{i}] must have shape (M, K_{i}) = ({m}, {f.shape[1]}); got {w.shape}")
    return sum(f @ w.T for f, w in zip(feats, w_prev))


def induced_H(W_prev: Sequence[np.ndarray], W_L, W_out) -> np.ndarray:
    """The A-ResNEst coefficients (D, N_o) that reproduce a ResNEst: H_i = W_{L+1} W_i, stacked as H_i^T.

    Eq (2) is eq (6) with H_i = W_{L+1} W_i, so R(W_L, W_{L+1}) = A(H_induced) for every point.
    """
    w_prev = [as_matrix(f"W_prev[{i}]", w) for i, w in enumerate(W_prev)]
    w_o = as_matrix("W_out", W_out)
    return np.vstack([w.T @ w_o.T for w in [*w_prev, as_matrix("W_L", W_L)]])


def a_resnest_gradient_bound(W_prev: Sequence[np.ndarray], W_L, W_out, grad_W_L, grad_W_out) -> float:
    """Bound on ||grad A(H_induced)||_F from the (P_phi) gradients alone, any loss.

    With G = dR/dY_hat (N, N_o), U = [v_0..v_{L-1}], B = [W_0..W_{L-1}] (X_{L-1} = U B^T), W = W_{L+1}:
      dR/dW_L = W^T G^T V_L            =>  ||G^T V_L|| <= ||dR/dW_L|| / s_min(W) =: b   (W full row rank)
      dR/dW = G^T X_{L-1} + G^T V_L W_L^T
                                        =>  ||G^T U|| <= (||dR/dW|| + b ||W_L||_2) / s_min(B) =: a
    (B full column rank: Assumption 4), and grad_H A = V^T G = [U^T G; V_L^T G], so ||grad A|| <= sqrt(a^2 + b^2).
    This is Theorem 1's argument made quantitative. inf when W_{L+1} is rank-deficient or Assumption 4 fails.
    """
    w_prev = [as_matrix(f"W_prev[{i}]", w) for i, w in enumerate(W_prev)]
    w_l, w_o = as_matrix("W_L", W_L), as_matrix("W_out", W_out)
    g_l = as_matrix("grad_W_L", grad_W_L, w_l.shape)
    g_o = as_matrix("grad_W_out", grad_W_out, w_o.shape)
    b_mat = np.hstack(w_prev)
    if w_o.shape[0] > w_o.shape[1] or b_mat.shape[1] > b_mat.shape[0]:
        return float("inf")
    s_w = float(np.linalg.svd(w_o, compute_uv=False)[-1])
    s_b = float(np.linalg.svd(b_mat, compute_uv=False)[-1])
    if s_w <= 0 or s_b <= 0:
        return float("inf")
    b = float(np.linalg.norm(g_l)) / s_w
    a = (float(np.linalg.norm(g_o)) + b * float(np.linalg.norm(w_l, 2))) / s_b
    return float(np.hypot(a, b))


def epsilon_bound_from_gradient(features: Sequence[np.ndarray], W_prev: Sequence[np.ndarray], W_L, W_out,
                                grad_W_L, grad_W_out, loss: str = "squared",
                                a_star: AResNEstSolution | None = None) -> float:
    """Upper bound on eps = R(W_L, W_{L+1}) - A* at a near-critical point of (P_phi): Thm 1's certificate.

    With g the bound of ``a_resnest_gradient_bound`` on ||grad A(H_induced)||:
    - squared loss: (PA_phi) is a convex quadratic whose Hessian has smallest nonzero eigenvalue
      mu = 2 lambda_min^+(V^T V) / N and the gradient lies in its range, so the Polyak-Lojasiewicz
      inequality gives eps = A(H_induced) - A* <= g^2 / (2 mu) = g^2 N / (4 lambda_min^+).
    - cross-entropy: by convexity A(H_ind) - A(H_s) <= <grad A(H_ind), H_ind - H_s> <= g ||H_ind - H_s||
      for the solver's H_s (``a_star``, required), and A(H_s) - A* <= its duality gap, so
      eps <= g ||H_ind - H_s|| + gap.
    """
    check_choice("loss", loss, LOSSES)
    g = a_resnest_gradient_bound(W_prev, W_L, W_out, grad_W_L, grad_W_out)
    if not np.isfinite(g):
        return float("inf")
    if loss == "squared":
        v = stack_features(features)
        lam = smallest_positive_eigenvalue(v.T @ v, v.shape[0])
        return float("inf") if lam <= 0 else g * g * v.shape[0] / (4.0 * lam)
    if a_star is None:
        raise ValueError("a_star (the AResNEstSolution of (PA_phi)) is required for loss='cross_entropy'")
    h_ind = induced_H(W_prev, W_L, W_out)
    # softmax ignores a common shift of the logits: H_s + c 1^T is as good as H_s for every c, so
    # compare with the closest such copy (remove the row means of the difference)
    delta = h_ind - a_star.H
    delta = delta - delta.mean(axis=1, keepdims=True)
    return g * float(np.linalg.norm(delta)) + a_star.suboptimality_bound
