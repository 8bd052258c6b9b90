"""ResNEsts, A-ResNEsts and DenseNEsts with vector features (RN paper: Chen, Lee, Garudadri, Rao,
NeurIPS 2021, papers/003_39cd59db41b06d3f.txt).

Conventions (samples are ROWS, float64 throughout):

- input ``x``: (N, N_in); residual stream ``x_i``: (N, M); feature ``v_i``: (N, K_i), v_0 = x, K_0 = N_in.
- a block is ``ResidualBlock(G, W)``: eq (1) x_i = x_{i-1} + W_i G_i(x_{i-1}), so with rows
  X_i = X_{i-1} + V_i W_i^T, W_i of shape (M, K_i). The expansion W_0 is (M, N_in): X_0 = x W_0^T.
- eq (2): ResNEst output y = W_{L+1} sum_{i=0}^{L} W_i v_i, W_{L+1} of shape (N_o, M).
- eq (6): A-ResNEst output y = sum_i H_i v_i. The solvers return the stacked coefficient
  ``H`` of shape (D, N_o), D = sum_i K_i, so that y^T = v^T H with v = [v_0; ...; v_L]; the paper's
  H_i is ``H[rows of block i].T``.
- DenseNEst (the paper's Sec. 5, only a block diagram survives in the slides; we use the paper's
  definition): v_0 = x, v_i = G_i([v_0; ...; v_{i-1}]) (each dense block sees the concatenation of
  all earlier features), output y = W_{L+1} [v_0; ...; v_L].

Losses: ``"squared"``: l(y_hat, y) = ||y - y_hat||^2 (the paper's squared loss, no 1/2);
``"cross_entropy"``: l(y_hat, y) = logsumexp(y_hat) - y^T y_hat with ``y`` a probability vector
(one-hot or soft labels), convex in y_hat (Assumption 2). Risks are means over the N samples, eq (5).

The empirical risks: (P_phi) eq (4)-(5) R(W_L, W_{L+1}; phi) with the feature-finding weights
phi = {W_{i-1}, theta_i} fixed, so only x_{L-1} = sum_{i<L} W_i v_i and v_L matter
(``PredictionFeatures``); (PA_phi) eq (7) A(H_0..H_L; phi), convex in H; eq (8)
eps = R(W_L*, W_{L+1}*) - A(H*) >= 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from analysis.validation import AssumptionError, as_matrix, check_choice, check_int, check_real

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "FeatureMap",
    "ResidualBlock",
    "PredictionFeatures",
    "AResNEstSolution",
    "LocalMinimum",
    "EpsilonGap",
    "activation",
    "random_feature_map",
    "random_resnest",
    "resnest_features",
    "resnest_residuals",
    "resnest_forward",
    "a_resnest_forward",
    "prediction_features",
    "least_squares_risk_from_moments",
    "best_linear_risk",
    "a_resnest_risk",
    "a_resnest_risk_curve",
    "loss_value",
    "resnest_prediction_risk",
    "solve_resnest_prediction",
    "epsilon_gap",
    "epsilon_bound_from_gradient",
    "a_resnest_gradient_bound",
    "induced_H",
    "assumption1_holds",
    "assumption3_holds",
    "assumption4_holds",
    "bottleneck_condition_holds",
    "nonconvexity_witness",
    "nonconcavity_witness",
    "constructed_critical_point",
    "densenest_features",
    "densenest_forward",
    "densenest_to_resnest",
]

ACTIVATIONS = ("relu", "tanh", "linear")
LOSSES = ("squared", "cross_entropy")
_EPS = np.finfo(np.float64).eps
_RESTARTS = 4


def single_thread_blas():
    """Limit BLAS to one thread inside the solvers (a context manager).

    Their matrices are small (tens to hundreds of columns): a multi-threaded BLAS only adds
    synchronisation, and on a shared machine an oversubscribed one made L-BFGS ~25x slower in our
    measurements (the streamed cross-entropy fits of ``analysis.probes.risk_gap``: 6x).
    """
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def _lbfgs(fun, x0, gtol: float, max_iter: int, project=None, chunk: int = 300):
    """L-BFGS-B until ||grad||_2 <= gtol, in chunks of ``chunk`` iterations; between chunks the point
    is passed through ``project`` (an objective-preserving map, see ``solve_resnest_prediction``) and
    the curvature memory is reset, which also un-sticks line searches that stall on float64 function
    values. Returns (x, iterations)."""
    x, nit = x0, 0
    opts = {"maxiter": chunk, "gtol": gtol / np.sqrt(x0.size), "ftol": 0.0, "maxcor": 30}
    stalls = 0
    while nit < max_iter:
        res = minimize(fun, x, jac=True, method="L-BFGS-B", options=opts)
        x, nit = res.x, nit + max(int(res.nit), 1)
        if np.linalg.norm(fun(x)[1]) <= gtol:
            break
        stalls = stalls + 1 if res.nit < chunk else 0
        if stalls >= _RESTARTS:
            break
        if project is not None:
            x = project(x)
    return x, nit


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------
def activation(name: str, z: np.ndarray) -> np.ndarray:
    """The block nonlinearity; ``"linear"`` (identity) builds linearly predictable features."""
    check_choice("activation", name, ACTIVATIONS)
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    return z


@dataclass(frozen=True)
class FeatureMap:
    """G_i(x; theta_i): an MLP x -> act(A_k ... act(A_1 x + b_1) ... + b_k).

    The activation follows every layer, the last included: v_i = G_i(x_{i-1}) is the block's
    nonlinear feature, and the block's last linear map is W_i (eq (1)). ``layers`` holds
    (A, b) with A of shape (out, in).
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
            h = activation(self.activation, h @ a.T + b)
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
    v = _stack_features(features)
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
def _stack_features(features) -> np.ndarray:
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


def _check_targets(Y, n: int, loss: str) -> np.ndarray:
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


def _check_prediction_features(features, n_rows: int | None = None) -> PredictionFeatures:
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


# ----------------------------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------------------------
def _loss_and_grad(y_hat: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, np.ndarray]:
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
    y = _check_targets(Y, y_hat.shape[0], loss)
    if y.shape != y_hat.shape:
        raise ValueError(f"y_hat and Y must have the same shape; got {y_hat.shape} and {y.shape}")
    return _loss_and_grad(y_hat, y, loss)[0]


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
    v = _stack_features(V)
    y = _check_targets(Y, v.shape[0], "squared")
    return least_squares_risk_from_moments(v.T @ v, v.T @ y, float(np.sum(y * y)), v.shape[0], rcond)


def _smallest_positive_eig(gram: np.ndarray, n: int) -> float:
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


def a_resnest_risk(features, Y, loss: str = "squared", *, gtol: float = 1e-6, max_iter: int = 5000,
                   rcond=None) -> AResNEstSolution:
    """A* = min over H of (PA_phi), eq (7), with a certificate.

    ``features``: the list v_0..v_L (or the stacked (N, D) matrix). Squared loss: the closed form of
    ``least_squares_risk_from_moments``. Cross-entropy: L-BFGS from H = 0 until the gradient norm
    (Frobenius) is below ``gtol``; ``suboptimality_bound`` is the duality gap risk - (dual lower bound),
    which bounds risk - A* whether or not the infimum is attained.
    """
    check_choice("loss", loss, LOSSES)
    v = _stack_features(features)
    y = _check_targets(Y, v.shape[0], loss)
    n, d = v.shape
    gtol = check_real("gtol", gtol, min_value=0.0, include_min=False)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    if loss == "squared":
        gram = v.T @ v
        risk, h = least_squares_risk_from_moments(gram, v.T @ y, float(np.sum(y * y)), n, rcond)
        grad = 2.0 * v.T @ (v @ h - y) / n
        gnorm = float(np.linalg.norm(grad))
        mu = 2.0 * _smallest_positive_eig(gram, n) / n
        bound = gnorm**2 / (2.0 * mu) if mu > 0 else 0.0
        return AResNEstSolution(risk, h, gnorm, 1, True, bound, loss)

    n_o = y.shape[1]

    def fun(flat):
        h = flat.reshape(d, n_o)
        val, gy = _loss_and_grad(v @ h, y, loss)
        return val, (v.T @ gy).ravel()

    with single_thread_blas():
        flat, nit = _lbfgs(fun, np.zeros(d * n_o), gtol, max_iter)
    h = flat.reshape(d, n_o)
    val, g = fun(flat)
    gnorm = float(np.linalg.norm(g))
    gap = max(val - _ce_dual_lower_bound(v, y, v @ h), 0.0)
    return AResNEstSolution(val, h, gnorm, nit, gnorm <= gtol, gap, loss)


def a_resnest_risk_curve(features, Y, loss: str = "squared", **solver_options) -> np.ndarray:
    """A(H_0*, ..., H_i*, 0, ..., 0) for i = 0..L: the A-ResNEst risk using blocks 0..i only.

    Remark 2 (i) / Question 2 eq (9): the risk the first i blocks' features allow; non-increasing in
    i because the feasible sets are nested.
    """
    if isinstance(features, np.ndarray):
        raise TypeError("features must be the list v_0..v_L (the curve needs the block boundaries)")
    feats = list(features)
    _stack_features(feats)
    return np.array([a_resnest_risk(feats[: i + 1], Y, loss, **solver_options).risk for i in range(len(feats))])


# ----------------------------------------------------------------------------------------------
# (P_phi): the ResNEst's prediction-weight problem
# ----------------------------------------------------------------------------------------------
def _shapes(pf: PredictionFeatures, W_L, W_out):
    m, k = pf.x_prev.shape[1], pf.v_last.shape[1]
    w_l = as_matrix("W_L", W_L, (m, k))
    w_o = as_matrix("W_out", W_out, (None, m))
    return w_l, w_o


def _risk_grad(pf: PredictionFeatures, y: np.ndarray, w_l, w_o, loss):
    x_l = pf.x_prev + pf.v_last @ w_l.T
    val, gy = _loss_and_grad(x_l @ w_o.T, y, loss)
    return val, w_o.T @ gy.T @ pf.v_last, gy.T @ x_l


def resnest_prediction_risk(W_L, W_out, features, Y, loss: str = "squared") -> tuple[float, np.ndarray, np.ndarray]:
    """(P_phi) eq (4)-(5): R(W_L, W_{L+1}; phi) and its gradients (dR/dW_L, dR/dW_{L+1}).

    y_hat = W_{L+1} (x_{L-1} + W_L v_L); with G = dR/dy_hat (rows), dR/dW_L = W_{L+1}^T G^T V_L and
    dR/dW_{L+1} = G^T X_L.
    """
    check_choice("loss", loss, LOSSES)
    pf = _check_prediction_features(features)
    w_l, w_o = _shapes(pf, W_L, W_out)
    y = _check_targets(Y, pf.x_prev.shape[0], loss)
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


def solve_resnest_prediction(features, Y, loss: str = "squared", *, starts: int = 4, seed: int = 0,
                             gtol: float = 1e-6, max_iter: int = 20000, init_scale: float = 1.0) -> list[LocalMinimum]:
    """L-BFGS on (W_L, W_{L+1}) with phi fixed, from ``starts`` Gaussian random starts.

    The default ``gtol`` = 1e-6 sits just above what a line search on float64 function values can
    resolve (a gradient of size g changes R by ~g^2 / (2 L), invisible below eps * R: g ~ sqrt(2 L eps R),
    about 1e-7 for curvatures L ~ 1e2); tolerances downstream come from the actual final gradient.

    Stops when the Frobenius norm of the full gradient is below ``gtol`` (scipy's projected-gradient
    test is on the max entry, so it is given gtol / sqrt(#params)); ``converged`` reports whether the
    final gradient norm met ``gtol``. Entries of the start are N(0, init_scale^2 / fan_in).
    """
    check_choice("loss", loss, LOSSES)
    pf = _check_prediction_features(features)
    y = _check_targets(Y, pf.x_prev.shape[0], loss)
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
            flat, nit = _lbfgs(fun, x0, gtol, max_iter, project if n_o < m else None)
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
    _stack_features(feats)
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
        v = _stack_features(features)
        lam = _smallest_positive_eig(v.T @ v, v.shape[0])
        return float("inf") if lam <= 0 else g * g * v.shape[0] / (4.0 * lam)
    if a_star is None:
        raise ValueError("a_star (the AResNEstSolution of (PA_phi)) is required for loss='cross_entropy'")
    h_ind = induced_H(W_prev, W_L, W_out)
    # softmax ignores a common shift of the logits: H_s + c 1^T is as good as H_s for every c, so
    # compare with the closest such copy (remove the row means of the difference)
    delta = h_ind - a_star.H
    delta = delta - delta.mean(axis=1, keepdims=True)
    return g * float(np.linalg.norm(delta)) + a_star.suboptimality_bound


# ----------------------------------------------------------------------------------------------
# Assumptions
# ----------------------------------------------------------------------------------------------
def assumption1_holds(v_last, Y, rtol: float = 1e-10) -> bool:
    """Assumption 1: sum_n v_L y^T != 0 and sum_n v_L v_L^T is full rank (relative to rtol)."""
    v = as_matrix("v_last", v_last)
    y = _check_targets(Y, v.shape[0], "squared")
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
    pf = _check_prediction_features(features)
    y = _check_targets(Y, pf.x_prev.shape[0], "squared")
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
    pf = _check_prediction_features(features)
    y = _check_targets(Y, pf.x_prev.shape[0], "squared")
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
    pf = _check_prediction_features(features)
    y = _check_targets(Y, pf.x_prev.shape[0], "squared")
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


# ----------------------------------------------------------------------------------------------
# DenseNEsts (Prop. 3, 4)
# ----------------------------------------------------------------------------------------------
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
