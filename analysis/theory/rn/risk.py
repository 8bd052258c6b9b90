"""(PA_phi) of RN: the A-ResNEst's convex risk and the best linear predictor, eq (5), (7), (11).

Losses (``LOSSES``): ``"squared"`` l(y_hat, y) = ||y - y_hat||^2 (the paper's, no 1/2) and
``"cross_entropy"`` l(y_hat, y) = logsumexp(y_hat) - y^T y_hat with ``y`` a probability vector,
convex in y_hat (Assumption 2). Risks are means over the N samples, eq (5). The squared loss has a
closed form from moments (least squares); cross-entropy is solved by L-BFGS with a Fenchel-duality
certificate. ``check_targets``, ``loss_and_gradient``, ``lbfgs_minimize``,
``smallest_positive_eigenvalue`` and ``single_thread_blas`` are shared with ``rn.prediction``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax
from threadpoolctl import threadpool_limits

from analysis.theory.rn.features import stack_features
from analysis.validation import as_matrix, check_choice, check_int, check_real

__all__ = [
    "LOSSES",
    "AResNEstSolution",
    "single_thread_blas",
    "lbfgs_minimize",
    "check_targets",
    "loss_and_gradient",
    "loss_value",
    "least_squares_risk_from_moments",
    "best_linear_risk",
    "smallest_positive_eigenvalue",
    "a_resnest_risk",
    "a_resnest_risk_curve",
]

LOSSES = ("squared", "cross_entropy")
_EPS = np.finfo(np.float64).eps
_RESTARTS = 4


def single_thread_blas():
    """Limit BLAS to one thread inside the solvers (a context manager).

    Their matrices are small (tens to hundreds of columns): a multi-threaded BLAS only adds
    synchronisation, and on a shared machine an oversubscribed one made L-BFGS ~25x slower in our
    measurements (the streamed cross-entropy fits of ``analysis.probes.risk_gap``: 6x).
    """
    return threadpool_limits(limits=1, user_api="blas")


def lbfgs_minimize(fun, x0, gtol: float, max_iter: int, project=None, chunk: int = 300):
    """Minimise ``fun(x) -> (value, gradient)`` by L-BFGS-B until ||grad||_2 <= gtol, in chunks of ``chunk`` iterations; between chunks the point
    is passed through ``project`` (an objective-preserving map, see ``solve_resnest_prediction``) and
    the curvature memory is reset, which also un-sticks line searches that stall on float64 function
    values. A point that meets gtol is projected too, and accepted only if its projection still meets
    gtol: the projection keeps the objective but not the gradient, so a point that is near-critical
    only because it drifted along a flat direction (e.g. ||W_L|| ~ 1e3 in null(W_{L+1}), where the
    curvature explodes and L-BFGS's steps vanish) is not returned as converged. Returns (x, iterations)."""
    x, nit = x0, 0
    opts = {"maxiter": chunk, "gtol": gtol / np.sqrt(x0.size), "ftol": 0.0, "maxcor": 30}
    stalls = 0
    while nit < max_iter:
        # never past max_iter: a chunk is cut to the iterations left
        res = minimize(fun, x, jac=True, method="L-BFGS-B", options={**opts, "maxiter": min(chunk, max_iter - nit)})
        x, nit = res.x, nit + max(int(res.nit), 1)
        if np.linalg.norm(fun(x)[1]) <= gtol:
            if project is None:
                break
            x = project(x)
            if np.linalg.norm(fun(x)[1]) <= gtol:
                break
            stalls = 0
            continue
        stalls = stalls + 1 if res.nit < opts["maxiter"] else 0
        if stalls >= _RESTARTS:
            break
        if project is not None:
            x = project(x)
    return x, nit


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------
def check_targets(Y, n: int, loss: str) -> np.ndarray:
    """Targets ``Y`` as an (n, N_o) float64 matrix; for cross-entropy its rows must be probability vectors."""
    y = as_matrix("Y", Y)
    if y.shape[0] != n:
        raise ValueError(f"Y must have one row per sample: expected {n} rows (as the features); got {y.shape[0]}")
    if loss == "cross_entropy":
        if np.any(y < 0) or not np.allclose(y.sum(axis=1), 1.0, atol=1e-9):
            raise ValueError(
                "Y must hold probability vectors (rows >= 0 summing to 1) for loss='cross_entropy'; "
                "one-hot encode integer labels with np.eye(n_classes)[labels]"
            )
    return y


def loss_and_gradient(y_hat: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, np.ndarray]:
    """Mean loss over rows and its gradient with respect to y_hat (already divided by N)."""
    n = y.shape[0]
    if loss == "squared":
        r = y_hat - y
        return float(np.sum(r * r) / n), 2.0 * r / n
    lse = logsumexp(y_hat, axis=1)
    value = float(np.sum(lse - np.sum(y * y_hat, axis=1)) / n)
    return value, (softmax(y_hat, axis=1) - y) / n


def loss_value(y_hat, Y, loss: str = "squared") -> float:
    """Eq (5)'s empirical risk (1/N) sum_n l(y_hat^n, y^n) of a given prediction."""
    check_choice("loss", loss, LOSSES)
    y_hat = as_matrix("y_hat", y_hat)
    y = check_targets(Y, y_hat.shape[0], loss)
    if y.shape != y_hat.shape:
        raise ValueError(f"y_hat and Y must have the same shape; got {y_hat.shape} and {y.shape}")
    return loss_and_gradient(y_hat, y, loss)[0]


# ----------------------------------------------------------------------------------------------
# (PA_phi): the A-ResNEst's convex problem and the best linear predictor
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AResNEstSolution:
    """A solution of (PA_phi) with its certificate.

    ``suboptimality_bound`` bounds risk - A* (A* the infimum of (PA_phi)): for the squared loss the
    Polyak-Lojasiewicz bound ||grad||^2 / (2 mu) with mu the smallest nonzero Hessian eigenvalue;
    for cross-entropy the Fenchel duality gap (see ``a_resnest_risk``).
    """

    risk: float
    H: np.ndarray
    grad_norm: float
    iterations: int
    converged: bool
    suboptimality_bound: float
    loss: str


def _default_rcond(n: int, d: int) -> float:
    # Forming V^T V in float64 perturbs each entry by about n * eps * ||V||_2^2 (summation over n
    # rows), so eigenvalues of the Gram matrix below max(n, d) * eps * lambda_max are round-off
    # and are cut; this matches lstsq's singular-value cutoff max(n, d) * eps in intent, on the
    # squared scale where the Gram matrix lives.
    return max(n, d) * _EPS


def _input_eps(value) -> float:
    """Machine epsilon of the precision ``value`` was computed in (float64 unless it is a float array)."""
    dtype = getattr(value, "dtype", None)
    return float(np.finfo(dtype).eps) if dtype is not None and np.issubdtype(dtype, np.floating) else _EPS


def _check_gram(g: np.ndarray, n: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Refuse a ``gram`` that is not a Gram matrix V^T V (symmetric, PSD) beyond round-off; eigh of it.

    Tolerances are precision-aware, as scikit-learn's PSD checks are, but derived from the
    accumulation rather than fixed: each entry of V^T V is a sum of n products, so its rounding
    error is at most about n * eps * sqrt(G_ii G_jj) <= n * eps * max |G| (eps of the dtype the
    moments came in: a float32 array gets float32's; max |G| = max_i G_ii for a Gram matrix, by
    Cauchy-Schwarz). G_ij and G_ji are rounded independently, so their gap stays below
    2 * max(n, D) * eps * max |G|; an entrywise error of that size moves an eigenvalue by at most D
    times it (||E||_2 <= D max |E_ij|), so an eigenvalue above -2 * D * max(n, D) * eps * max |G| is
    round-off of a PSD matrix. Anything beyond is not a Gram matrix: symmetrising it or dropping its
    negative eigenvalues would return the risk of some other problem without a word.
    """
    d = g.shape[0]
    scale = float(np.max(np.abs(g))) if d else 0.0
    sym_tol = 2.0 * max(n, d) * eps * scale
    gap = float(np.max(np.abs(g - g.T))) if d else 0.0
    if gap > sym_tol:
        raise ValueError(
            f"gram must be symmetric (it is V^T V): max |G - G^T| = {gap:.3g} (relative {gap / scale:.3g} of "
            f"max |G| = {scale:.3g}), above the round-off tolerance {sym_tol:.3g}; accumulate it as V.T @ V"
        )
    lam, q = np.linalg.eigh((g + g.T) / 2)
    neg_tol = d * sym_tol
    if d and lam[0] < -neg_tol:
        raise ValueError(
            f"gram must be positive semi-definite (it is V^T V): smallest eigenvalue {lam[0]:.3g} (relative "
            f"{lam[0] / scale:.3g} of max |G| = {scale:.3g}), below the round-off tolerance -{neg_tol:.3g}; "
            "accumulate it as V.T @ V"
        )
    return lam, q


def least_squares_risk_from_moments(gram, cross, target_sq, n, rcond=None) -> tuple[float, np.ndarray]:
    """The best linear predictor's squared-loss risk (1/n) sum ||y - H^T v||^2 from moments.

    ``gram`` = V^T V (D, D), ``cross`` = V^T Y (D, N_o), ``target_sq`` = sum_n ||y^n||^2, ``n`` the
    sample count: the sufficient statistics a streaming tool accumulates batch by batch. Solves the
    normal equations V^T V H = V^T Y by an eigendecomposition of the Gram matrix, keeping eigenvalues
    > rcond * lambda_max (default ``max(n, D) * eps``, see ``_default_rcond``) and returning the
    minimum-norm H (as lstsq does). The risk is (target_sq - sum_k (q_k^T cross)^2 / lambda_k) / n,
    clipped at 0 since only round-off can make it negative. A ``gram`` that is not symmetric or not
    positive semi-definite beyond round-off raises ValueError (``_check_gram``).
    """
    g = as_matrix("gram", gram)
    if g.shape[0] != g.shape[1]:
        raise ValueError(f"gram must be the square matrix V^T V; got shape {g.shape}")
    c = as_matrix("cross", cross)
    if c.shape[0] != g.shape[0]:
        raise ValueError(f"cross must be V^T Y with {g.shape[0]} rows (as gram); got shape {c.shape}")
    n = check_int("n", n, min_value=1)
    ysq = check_real("target_sq", target_sq, min_value=0.0)
    tol = _default_rcond(n, g.shape[0]) if rcond is None else check_real("rcond", rcond, min_value=0.0)
    lam, q = _check_gram(g, n, _input_eps(gram))
    keep = lam > tol * max(float(lam[-1]), 0.0) if lam.size else np.zeros(0, bool)
    keep &= lam > 0
    qk = q[:, keep]
    proj = qk.T @ c
    h = qk @ (proj / lam[keep][:, None])
    risk = max((ysq - float(np.sum(proj * proj / lam[keep][:, None]))) / n, 0.0)
    return risk, h


def best_linear_risk(V, Y, rcond=None) -> tuple[float, np.ndarray]:
    """min_H (1/N) sum ||y - H^T v||^2 over linear predictors of the rows of V (no bias), with H.

    The right-hand side of Cor. 3, eq (11), when V = x; A* of (PA_phi) when V = [v_0, ..., v_L].
    """
    v = stack_features(V)
    y = check_targets(Y, v.shape[0], "squared")
    return least_squares_risk_from_moments(v.T @ v, v.T @ y, float(np.sum(y * y)), v.shape[0], rcond)


def smallest_positive_eigenvalue(gram: np.ndarray, n: int) -> float:
    """lambda_min^+ of the Gram matrix V^T V of n samples: its smallest eigenvalue above the round-off cut
    (``_default_rcond``), 0 if none is."""
    lam = np.linalg.eigvalsh((gram + gram.T) / 2)
    pos = lam[lam > _default_rcond(n, gram.shape[0]) * max(lam[-1], 0.0)]
    return float(pos[0]) if pos.size else 0.0


def _ce_dual_lower_bound(v: np.ndarray, y: np.ndarray, z: np.ndarray) -> float:
    """A lower bound on A* for cross-entropy by Fenchel duality.

    With g_n(z) = lse(z) - y_n^T z, g_n*(s) = sum_k q_k log q_k at q = s + y_n in the simplex, so for any
    Q with rows in the simplex and V^T Q = V^T Y, A* >= (1/N) sum_n entropy(q_n). We take
    Q = softmax(Z) (optimal at the minimiser), restore V^T Q = V^T Y by removing the projection of
    Q - Y onto col(V) (keeps row sums 1), and if that leaves negative entries mix toward Y, which is
    feasible and non-negative.
    """
    p = softmax(z, axis=1)
    corr, *_ = np.linalg.lstsq(v, p - y, rcond=None)
    q = p - v @ corr
    t = 0.0
    neg = q < 0
    if np.any(neg):
        # smallest t with (1 - t) q + t y >= 0 entrywise
        t = float(np.max(-q[neg] / (y[neg] - q[neg])))
        q = (1.0 - t) * q + t * y
    q = np.clip(q, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.sum(np.where(q > 0, q * np.log(q), 0.0), axis=1)
    return float(np.mean(ent))


_POLISH_ROUNDS = 3
_POLISH_ITER = 200  # trust-region Newton-CG iterations a polish round may take


def _ce_hessp(v: np.ndarray, flat: np.ndarray, direction: np.ndarray, n_o: int) -> np.ndarray:
    """The Hessian of the mean cross-entropy of V H at H (flat) times a direction E (flat): V^T (P . U - P rowsum(P . U)) / N,
    U = V E, P = softmax(V H) (the softmax Jacobian diag(p) - p p^T applied row by row)."""
    d = v.shape[1]
    p = softmax(v @ flat.reshape(d, n_o), axis=1)
    u = v @ direction.reshape(d, n_o)
    pu = p * u
    return (v.T @ (pu - p * np.sum(pu, axis=1, keepdims=True)) / v.shape[0]).ravel()


def a_resnest_risk(features, Y, loss: str = "squared", *, gtol: float = 1e-6, max_iter: int = 5000,
                   rcond=None, gap_tol: float = 1e-6) -> AResNEstSolution:
    """A* = min over H of (PA_phi), eq (7), with a certificate.

    ``features``: the list v_0..v_L (or the stacked (N, D) matrix). Squared loss: the closed form of
    ``least_squares_risk_from_moments``. Cross-entropy: L-BFGS from H = 0 until the gradient norm
    (Frobenius) is below ``gtol``, then, while the duality gap exceeds ``gap_tol``, up to
    ``_POLISH_ROUNDS`` rounds of trust-region Newton-CG, each to a 100x smaller gradient from the last
    point (the point with the smallest gap is returned);
    ``suboptimality_bound`` is the duality gap risk - (dual lower bound), which bounds risk - A* whether
    or not the infimum is attained.
    """
    check_choice("loss", loss, LOSSES)
    v = stack_features(features)
    y = check_targets(Y, v.shape[0], loss)
    n, d = v.shape
    gtol = check_real("gtol", gtol, min_value=0.0, include_min=False)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    gap_tol = check_real("gap_tol", gap_tol, min_value=0.0)
    if loss == "squared":
        gram = v.T @ v
        risk, h = least_squares_risk_from_moments(gram, v.T @ y, float(np.sum(y * y)), n, rcond)
        grad = 2.0 * v.T @ (v @ h - y) / n
        gnorm = float(np.linalg.norm(grad))
        mu = 2.0 * smallest_positive_eigenvalue(gram, n) / n
        bound = gnorm**2 / (2.0 * mu) if mu > 0 else 0.0
        return AResNEstSolution(risk, h, gnorm, 1, True, bound, loss)

    n_o = y.shape[1]

    def fun(flat):
        h = flat.reshape(d, n_o)
        val, gy = loss_and_gradient(v @ h, y, loss)
        return val, (v.T @ gy).ravel()

    with single_thread_blas():
        flat, nit = lbfgs_minimize(fun, np.zeros(d * n_o), gtol, max_iter)
        val, g = fun(flat)
        gap = max(val - _ce_dual_lower_bound(v, y, v @ flat.reshape(d, n_o)), 0.0)
        # Polish: the dual point is softmax(Z) mixed toward Y by t ~ |V corr| / min y with corr ~ the gradient,
        # so soft targets with tiny entries can leave a gap far above the gradient norm (4.9e-4 at
        # ||g|| = 3.7e-7, 3 classes, min y = 4.5e-7). Warm-started L-BFGS cannot go on from there (its
        # first step has unit length and its line search stalls on rounding), so trust-region Newton-CG
        # with the exact Hessian-vector products, at a 100x smaller gradient a round. The dual bound need not
        # shrink with the gradient (0.0395 -> 0.0408 -> 8.6e-8 on a thorough draw), so every round goes on from
        # the last point and the point with the smallest gap is kept.
        target, rounds, point = gtol, 0, flat
        while gap > gap_tol and rounds < _POLISH_ROUNDS and nit < max_iter:
            target, rounds = target / 100.0, rounds + 1
            res = minimize(fun, point, jac=True, method="trust-ncg", hessp=lambda x, e: _ce_hessp(v, x, e, n_o),
                           options={"gtol": target, "maxiter": max(1, min(_POLISH_ITER, max_iter - nit))})
            nit += max(int(res.nit), 1)
            point = res.x
            p_val, p_g = fun(point)
            p_gap = max(p_val - _ce_dual_lower_bound(v, y, v @ point.reshape(d, n_o)), 0.0)
            if p_gap < gap:
                flat, val, g, gap = point, p_val, p_g, p_gap
    h = flat.reshape(d, n_o)
    gnorm = float(np.linalg.norm(g))
    return AResNEstSolution(val, h, gnorm, nit, gnorm <= gtol, gap, loss)


def a_resnest_risk_curve(features, Y, loss: str = "squared", **solver_options) -> np.ndarray:
    """A(H_0*, ..., H_i*, 0, ..., 0) for i = 0..L: the A-ResNEst risk using blocks 0..i only.

    Remark 2 (i) / Question 2 eq (9): the risk the first i blocks' features allow; non-increasing in
    i because the feasible sets are nested.
    """
    if isinstance(features, np.ndarray):
        raise TypeError("features must be the list v_0..v_L (the curve needs the block boundaries)")
    feats = list(features)
    stack_features(feats)
    return np.array([a_resnest_risk(feats[: i + 1], Y, loss, **solver_options).risk for i in range(len(feats))])
