"""Li, Yang, Chen, Lin, "Optimization Algorithm Inspired Deep Neural Network Structure Design" (2018).

The paper's objects in float64 numpy:

- the activations of Table 1 (phi from the shared switch ``analysis.theory.activations``,
  re-exported here as ``activation``) and the objectives Psi with Psi' = phi (``psi``);
- the objective f(z) = ||z||^2/2 - sum_i Psi(U_i^T z) of eq (8), its gradient (9), and the
  change of variables z = U x, U = sqrt(W), of Lemma 1;
- gradient descent (1), heavy ball (2), Nesterov (3) and its equivalent form (4)-(5), and
  linearized ADMM (6), all with unit step on f (footnotes 3 and 7);
- the x-space recurrences they turn into: (7), (11), (12), (13), (14);
- the relaxed structures of Sec. 6, eq (16), (18), (20), in a dense-matrix (MLP) reading, which
  contain ResNet, DenseNet and DMRNet (Table 3);
- the step sizes and momenta under which GD / HB / AGD reach their textbook rates on
  mu-strongly convex, L-smooth quadratics (Sec. 2), and an iteration counter for them.

The trained nets of the simulation of Sec. 5.3 / Table 2 are ``analysis.models.oai_table2.Table2Net``.

Readings of garbled or ambiguous formulas (each is repeated where it is implemented):

- Table 1, ELU: printed Psi(t) = a (e^t - t) for t <= 0 and t^2/2 for t > 0. Its derivative is
  ELU on each side, but it jumps by ``a`` at 0 (the t <= 0 branch is a at 0, the other 0), so it
  is not an antiderivative of ELU on R. ``psi`` uses the continuous a (e^t - t - 1);
  ``psi(..., as_printed=True)`` gives the printed one.
- Table 1, softsign (an extra row, not among the six of the claim): printed "-t - log(t - 1)"
  for t <= 0 takes the log of a negative number; the antiderivative is -t - log(1 - t), i.e.
  |t| - log(1 + |t|), used here.
- Eq (8)-(9): U_i is the i-th *column* of U, so grad f(z) = z - U phi(U^T z); the paper writes
  U phi(U z) using U = U^T. We keep U^T so that a non-symmetric U shows what the symmetry buys.
- Eq (3): beta_k = theta_k (1 - theta_{k-1}) / theta_{k-1} needs theta_{-1}; with z_{-1} = z_0
  the momentum at k = 0 multiplies zero, and theta_0 = 1 makes beta_1 = 0 as well.
- Eq (13): the x of (13) is U^{-1} y (the extrapolated sequence of (3)), while the x of (12) is
  U^{-1} z. Both nets return their last x.
- Eq (14): x' = U^{-1} z and x = U^{-1} y of ADMM (6), lambda_0 = 0 so that
  U^{-1} lambda_k = sum_{t=1}^k (x'_t - x_t).
- Eq (20): the sums run over t = 0..k (not 1..k: DMRNet's first block uses x_0), and the
  coefficients depend on the step, alpha_{k+1}^t, beta_{k+1}^t; with coefficients alpha_t
  independent of k (the literal notation), alpha_t = beta_t = 1/2 would sum over *all* earlier
  states, which is not DMRNet for k >= 1.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import special

from analysis.theory.activations import KINKS, activation, check_activation
from analysis.validation import (
    as_float64_array,
    as_matrix,
    as_vector,
    check_choice,
    check_int,
    check_positive_definite,
    check_real,
    check_square,
)

__all__ = [
    "ACTIVATIONS",
    "TABLE1_ACTIVATIONS",
    "KINKS",
    "activation",
    "psi",
    "lemma1_square_root",
    "objective",
    "objective_gradient",
    "map_back",
    "gradient_descent_z",
    "heavy_ball_z",
    "nesterov_theta",
    "nesterov_momentum",
    "nesterov_h_weights",
    "nesterov_z",
    "nesterov_form4_z",
    "linearized_admm_z",
    "feedforward_x",
    "heavy_ball_x",
    "nesterov_x",
    "nesterov_form4_x",
    "admm_x",
    "hb_structure",
    "agd_structure",
    "admm_structure",
    "RATE_METHODS",
    "tuned_parameters",
    "iterations_to_accuracy",
]

# The six activations of the claim OAI-table1 (Table 1 also lists softplus and softsign).
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish")
TABLE1_ACTIVATIONS = ACTIVATIONS + ("softplus", "softsign")

_ASSUMPTION_L1 = "OAI Lemma 1 needs W symmetric positive definite so that U = sqrt(W) is real and symmetric"
_PI2_6 = np.pi ** 2 / 6


def _check_table1(name: str, alpha: float, a: float) -> tuple[str, float, float]:
    # Lemma 1 needs an objective Psi with Psi' = phi, so only Table 1's activations are accepted.
    return check_activation(check_choice("activation", name, TABLE1_ACTIVATIONS), alpha=alpha, a=a)


def _table1_activation(name: str, alpha: float, a: float) -> Callable[[np.ndarray], np.ndarray]:
    """phi of Table 1 called ``name``, with its checked parameters."""
    name, alpha, a = _check_table1(name, alpha, a)
    return activation(name, alpha=alpha, a=a)


def _neg_dilog_of_neg_exp(u: np.ndarray) -> np.ndarray:
    """-Li2(-e^u) for u <= 0, stably: Li2(x) = spence(1 - x) in scipy's convention."""
    return -special.spence(1.0 + np.exp(u))


def _psi(name: str, t: np.ndarray, alpha: float, a: float, as_printed: bool) -> np.ndarray:
    if name == "sigmoid":
        # Table 1: t + log(e^{-t} + 1) = log(1 + e^t), the softplus.
        return np.logaddexp(0.0, t)
    if name == "tanh":
        # Table 1: t + log(e^{-2t} + 1) = log(e^t + e^{-t}) = log(2 cosh t).
        return np.logaddexp(t, -t)
    if name == "relu":
        return 0.5 * np.maximum(t, 0.0) ** 2
    if name == "leaky_relu":
        return np.where(t > 0, 0.5 * t * t, 0.5 * alpha * t * t)
    if name == "elu":
        tn = np.minimum(t, 0.0)
        # Printed: a (e^t - t), which is a (not 0) at t = 0: a jump of a against the t > 0 branch.
        # The continuous antiderivative subtracts that constant.
        neg = a * (np.exp(tn) - tn) if as_printed else a * (np.expm1(tn) - tn)
        return np.where(t > 0, 0.5 * t * t, neg)
    if name == "swish":
        # Table 1: Psi(t) = t^2/2 + t log(1 + e^{-t}) - Li2(-e^{-t}); d/dt gives
        # t + log(1+e^{-t}) - t (1 - sigma(t)) - log(1+e^{-t}) = t sigma(t).
        # For t < 0, e^{-t} overflows; the inversion formula Li2(-x) = -pi^2/6 - log(x)^2/2 - Li2(-1/x)
        # (x > 0) turns the same function into pi^2/6 + t log(1 + e^t) + Li2(-e^t).
        tp, tn = np.maximum(t, 0.0), np.minimum(t, 0.0)
        pos = 0.5 * tp * tp + tp * np.log1p(np.exp(-tp)) + _neg_dilog_of_neg_exp(-tp)
        neg = _PI2_6 + tn * np.log1p(np.exp(tn)) - _neg_dilog_of_neg_exp(tn)
        return np.where(t >= 0, pos, neg)
    if name == "softplus":
        # Table 1: C - Li2(-e^t) with C = 0; for t > 0 by the same inversion formula.
        tp, tn = np.maximum(t, 0.0), np.minimum(t, 0.0)
        pos = _PI2_6 + 0.5 * tp * tp - _neg_dilog_of_neg_exp(-tp)
        return np.where(t > 0, pos, _neg_dilog_of_neg_exp(tn))
    # softsign: Table 1 prints -t - log(t - 1) for t <= 0 (log of a negative number); the
    # antiderivative of t / (1 - t) there is -t - log(1 - t).
    return np.abs(t) - np.log1p(np.abs(t))


def psi(name: str, t, *, alpha: float = 0.01, a: float = 1.0, as_printed: bool = False) -> np.ndarray:
    """The objective Psi of Table 1 with Psi' = phi, elementwise.

    Every Psi here is continuous on R. ``as_printed=True`` returns Table 1's expression where it
    differs from that by more than a global constant (only ELU: a (e^t - t) for t <= 0, which
    jumps by ``a`` at 0). Swish and softplus use the dilogarithm Li2(x) = scipy.special.spence(1 - x).
    """
    name, alpha, a = _check_table1(name, alpha, a)
    return _psi(name, as_float64_array("t", t), alpha, a, bool(as_printed))


# --- Lemma 1: objective (8), gradient (9), change of variables --------------------------------

def lemma1_square_root(W) -> np.ndarray:
    """U = sqrt(W), the symmetric positive definite square root of Lemma 1 (W = U^2 = U^T U).

    Raises ``AssumptionError`` when W is not symmetric positive definite: a real matrix U has
    U^T U symmetric positive semi-definite, so no other W is U^T U, and the gradient step on (8)
    mapped back is phi(U^T U x) (see ``objective_gradient``).
    """
    W = check_positive_definite("W", W, assumption=_ASSUMPTION_L1)
    eig, q = np.linalg.eigh((W + W.T) / 2)
    U = (q * np.sqrt(eig)) @ q.T
    return (U + U.T) / 2


def _check_U(U) -> np.ndarray:
    return check_square("U", U)


def objective(z, U, activation_name: str, *, alpha: float = 0.01, a: float = 1.0) -> np.ndarray:
    """f(z) = ||z||^2 / 2 - sum_i Psi(U_i^T z), eq (8); ``z`` of shape (n,) or (batch, n)."""
    U = _check_U(U)
    name, alpha, a = _check_table1(activation_name, alpha, a)
    z = as_float64_array("z", z)
    if z.ndim not in (1, 2) or z.shape[-1] != U.shape[0]:
        raise ValueError(f"z must have shape ({U.shape[0]},) or (batch, {U.shape[0]}) to match U; got {z.shape}")
    return 0.5 * np.sum(z * z, axis=-1) - np.sum(_psi(name, z @ U, alpha, a, False), axis=-1)


def _grad(U: np.ndarray, phi: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    # Row-vector convention: for z of shape (..., n), (U phi(U^T z))^T = phi(z U) U^T.
    return lambda z: z - phi(z @ U) @ U.T


def objective_gradient(z, U, activation_name: str, *, alpha: float = 0.01, a: float = 1.0) -> np.ndarray:
    """grad f(z) = z - U phi(U^T z), eq (9) (the paper writes U phi(U z), using U = U^T)."""
    U = _check_U(U)
    phi = _table1_activation(activation_name, alpha, a)
    z = as_float64_array("z", z)
    if z.ndim not in (1, 2) or z.shape[-1] != U.shape[0]:
        raise ValueError(f"z must have shape ({U.shape[0]},) or (batch, {U.shape[0]}) to match U; got {z.shape}")
    return _grad(U, phi)(z)


def map_back(U, zs) -> np.ndarray:
    """x = U^{-1} z (step 3 of Lemma 1) for a sequence ``zs`` of shape (steps, n), by a dense solve."""
    U = _check_U(U)
    zs = as_matrix("zs", zs, shape=(None, U.shape[0]))
    return np.linalg.solve(U, zs.T).T


def _setup_z(z0, U, activation_name, alpha, a, name="z0"):
    U = _check_U(U)
    phi = _table1_activation(activation_name, alpha, a)
    z0 = as_vector(name, z0, dim=U.shape[0])
    return z0, _grad(U, phi)


def _steps(steps: int) -> int:
    return check_int("steps", steps, min_value=0)


# --- z-space algorithms of Sec. 2 on f of eq (8), unit step ---------------------------------

def gradient_descent_z(z0, U, activation_name: str, steps: int, *, alpha: float = 0.01, a: float = 1.0) -> np.ndarray:
    """z_{k+1} = z_k - grad f(z_k), eq (1); returns z_0..z_steps, shape (steps + 1, n)."""
    z, grad = _setup_z(z0, U, activation_name, alpha, a)
    out = [z]
    for _ in range(_steps(steps)):
        z = z - grad(z)
        out.append(z)
    return np.array(out)


def heavy_ball_z(z0, U, activation_name: str, steps: int, beta: float, *, alpha: float = 0.01,
                 a: float = 1.0) -> np.ndarray:
    """z_{k+1} = z_k - grad f(z_k) + beta (z_k - z_{k-1}), eq (2), with z_{-1} = z_0."""
    z, grad = _setup_z(z0, U, activation_name, alpha, a)
    beta = check_real("beta", beta)
    prev, out = z, [z]
    for _ in range(_steps(steps)):
        z, prev = z - grad(z) + beta * (z - prev), z
        out.append(z)
    return np.array(out)


def nesterov_theta(steps: int) -> np.ndarray:
    """theta_0..theta_steps of eq (3): theta_0 = 1, (1 - theta_k) / theta_k^2 = 1 / theta_{k-1}^2.

    Solving the quadratic theta^2 + c theta - c = 0 (c = theta_{k-1}^2) for its root in (0, 1].
    """
    steps = _steps(steps)
    th = np.ones(steps + 1)
    for k in range(1, steps + 1):
        c = th[k - 1] ** 2
        th[k] = 2 * c / (c + np.sqrt(c * c + 4 * c))  # = (-c + sqrt(c^2 + 4c)) / 2 without cancellation
    return th


def nesterov_momentum(steps: int) -> np.ndarray:
    """beta_k = theta_k (1 - theta_{k-1}) / theta_{k-1} for k = 0..steps (beta_0 = 0, see module doc)."""
    th = nesterov_theta(steps)
    beta = np.zeros_like(th)
    beta[1:] = th[1:] * (1 - th[:-1]) / th[:-1]
    return beta


def nesterov_h_weights(steps: int) -> np.ndarray:
    """The weights h_{k+1,j} of eq (5): an array H of shape (steps + 1, steps), H[k+1, j] = h_{k+1,j}.

    Row 0 is unused (zero); entries with j > k are zero. Derived from (3): y_{k+1} = z_{k+1} +
    beta_{k+1} (z_{k+1} - z_k) with z_{k+1} = y_k - g_k gives h_{k+1,k} = 1 + beta_{k+1},
    h_{k+1,k-1} = beta_{k+1} (h_{k,k-1} - 1), h_{k+1,j} = beta_{k+1} h_{k,j}: exactly (5).
    """
    steps = _steps(steps)
    beta = nesterov_momentum(steps)
    H = np.zeros((steps + 1, max(steps, 0)))
    for k in range(steps):
        b = beta[k + 1]
        if k >= 1:
            H[k + 1, : k - 1] = b * H[k, : k - 1]
            H[k + 1, k - 1] = b * (H[k, k - 1] - 1)
        H[k + 1, k] = 1 + b
    return H


def nesterov_z(z0, U, activation_name: str, steps: int, *, alpha: float = 0.01, a: float = 1.0,
               momentum: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eq (3): y_k = z_k + beta_k (z_k - z_{k-1}), z_{k+1} = y_k - grad f(y_k); returns (z, y).

    z has shape (steps + 1, n), y has shape (steps, n) (y_0..y_{steps-1}). ``momentum``
    defaults to ``nesterov_momentum`` (the theta schedule of (3)).
    """
    z, grad = _setup_z(z0, U, activation_name, alpha, a)
    steps = _steps(steps)
    beta = nesterov_momentum(steps) if momentum is None else as_vector("momentum", momentum)
    if beta.shape[0] < steps:
        raise ValueError(f"momentum must have at least steps = {steps} entries; got {beta.shape[0]}")
    prev, zs, ys = z, [z], []
    for k in range(steps):
        y = z + beta[k] * (z - prev)
        z, prev = y - grad(y), z
        zs.append(z)
        ys.append(y)
    return np.array(zs), np.array(ys).reshape(steps, -1)


def nesterov_form4_z(y0, U, activation_name: str, steps: int, *, alpha: float = 0.01, a: float = 1.0) -> np.ndarray:
    """Eq (4): y_{k+1} = y_k - sum_{j<=k} h_{k+1,j} grad f(y_j) with h of eq (5); y_0..y_steps."""
    y, grad = _setup_z(y0, U, activation_name, alpha, a, name="y0")
    steps = _steps(steps)
    H = nesterov_h_weights(steps)
    ys, gs = [y], []
    for k in range(steps):
        gs.append(grad(ys[k]))
        ys.append(ys[k] - H[k + 1, : k + 1] @ np.array(gs))
    return np.array(ys)


def linearized_admm_z(z0, y0, U, activation_name: str, steps: int, *, alpha: float = 0.01,
                      a: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linearized ADMM (6) on min f(z) + f(y) s.t. y - z = 0, penalty 1, lambda_0 = 0.

    Both subproblems are strongly convex quadratics (Hessian 2 I); setting their gradients to zero:
    z_{k+1} = (z_k + y_k - grad f(z_k) - lambda_k) / 2,
    y_{k+1} = (y_k - grad f(y_k) + lambda_k + z_{k+1}) / 2,
    lambda_{k+1} = lambda_k + z_{k+1} - y_{k+1}. Returns (z, y, lambda), each (steps + 1, n).
    """
    z, grad = _setup_z(z0, U, activation_name, alpha, a)
    y = as_vector("y0", y0, dim=z.shape[0])
    lam = np.zeros_like(z)
    zs, ys, ls = [z], [y], [lam]
    for _ in range(_steps(steps)):
        z_new = (z + y - grad(z) - lam) / 2
        y = (y - grad(y) + lam + z_new) / 2
        z = z_new
        lam = lam + z - y
        zs.append(z)
        ys.append(y)
        ls.append(lam)
    return np.array(zs), np.array(ys), np.array(ls)


# --- x-space recurrences (7), (11)-(14) ------------------------------------------------------

def _setup_x(x0, W, activation_name, alpha, a):
    W = check_square("W", W)
    phi = _table1_activation(activation_name, alpha, a)
    x0 = as_vector("x0", x0, dim=W.shape[0])
    return x0, (lambda x: phi(W @ x))


def feedforward_x(x0, W, activation_name: str, steps: int, *, alpha: float = 0.01, a: float = 1.0) -> np.ndarray:
    """x_{k+1} = phi(W x_k), eq (7) with a shared W; returns x_0..x_steps."""
    x, T = _setup_x(x0, W, activation_name, alpha, a)
    out = [x]
    for _ in range(_steps(steps)):
        x = T(x)
        out.append(x)
    return np.array(out)


def heavy_ball_x(x0, W, activation_name: str, steps: int, beta: float, *, alpha: float = 0.01,
                 a: float = 1.0) -> np.ndarray:
    """x_{k+1} = phi(W x_k) + beta (x_k - x_{k-1}), eq (11), with x_{-1} = x_0."""
    x, T = _setup_x(x0, W, activation_name, alpha, a)
    beta = check_real("beta", beta)
    prev, out = x, [x]
    for _ in range(_steps(steps)):
        x, prev = T(x) + beta * (x - prev), x
        out.append(x)
    return np.array(out)


def nesterov_x(x0, W, activation_name: str, steps: int, *, alpha: float = 0.01, a: float = 1.0) -> np.ndarray:
    """x_{k+1} = phi(W (x_k + beta_k (x_k - x_{k-1}))), eq (12), beta_k of eq (3), x_{-1} = x_0."""
    x, T = _setup_x(x0, W, activation_name, alpha, a)
    steps = _steps(steps)
    beta = nesterov_momentum(steps)
    prev, out = x, [x]
    for k in range(steps):
        x, prev = T(x + beta[k] * (x - prev)), x
        out.append(x)
    return np.array(out)


def nesterov_form4_x(x0, W, activation_name: str, steps: int, *, alpha: float = 0.01, a: float = 1.0) -> np.ndarray:
    """x_{k+1} = sum_j h_{k+1,j} phi(W x_j) + x_k - sum_j h_{k+1,j} x_j, eq (13), h of eq (5)."""
    x, T = _setup_x(x0, W, activation_name, alpha, a)
    steps = _steps(steps)
    H = nesterov_h_weights(steps)
    xs, Tx = [x], []
    for k in range(steps):
        Tx.append(T(xs[k]))
        h = H[k + 1, : k + 1]
        xs.append(h @ np.array(Tx) + xs[k] - h @ np.array(xs))
    return np.array(xs)


def admm_x(x0, W, activation_name: str, steps: int, *, x0_prime=None, alpha: float = 0.01,
           a: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Eq (14); returns (x', x), each (steps + 1, n); x'_0 = x_0 unless ``x0_prime`` is given.

    x'_{k+1} = (phi(W x'_k) + x_k - sum_{t=1}^k (x'_t - x_t)) / 2,
    x_{k+1}  = (phi(W x_k) + x'_{k+1} + sum_{t=1}^k (x'_t - x_t)) / 2.
    """
    x, T = _setup_x(x0, W, activation_name, alpha, a)
    xp = x.copy() if x0_prime is None else as_vector("x0_prime", x0_prime, dim=x.shape[0])
    s = np.zeros_like(x)
    xps, xs = [xp], [x]
    for _ in range(_steps(steps)):
        xp_new = (T(xp) + x - s) / 2
        x = (T(x) + xp_new + s) / 2
        xp = xp_new
        s = s + xp - x
        xps.append(xp)
        xs.append(x)
    return np.array(xps), np.array(xs)


# --- Sec. 6 relaxed structures (16), (18), (20), dense (MLP) reading --------------------------

Transform = Callable[[int, np.ndarray], np.ndarray]


def _coeffs(name: str, value, depth: int) -> np.ndarray:
    return as_matrix(name, value, shape=(depth, depth))


def hb_structure(x0, transform: Transform, depth: int, beta1: float, beta2: float) -> np.ndarray:
    """x_{k+1} = T_k(x_k) + beta1 x_k + beta2 x_{k-1}, eq (16), x_{-1} = x_0; returns x_0..x_depth.

    ``transform(k, x)`` is T_k. HB (11) is beta1 = beta, beta2 = -beta with T_k = phi(W x);
    ResNet is beta1 = 1, beta2 = 0 (Table 3 names only beta2 = 0; beta1 = 1 is implied).
    """
    x = as_vector("x0", x0)
    depth = check_int("depth", depth, min_value=0)
    beta1, beta2 = check_real("beta1", beta1), check_real("beta2", beta2)
    prev, out = x, [x]
    for k in range(depth):
        x, prev = transform(k, x) + beta1 * x + beta2 * prev, x
        out.append(x)
    return np.array(out)


def agd_structure(x0, transform: Callable[[int, int, np.ndarray], np.ndarray], depth: int, alpha, beta) -> np.ndarray:
    """x_{k+1} = sum_{j<=k} alpha_{k+1}^j T_{k+1,j}(x_j) + sum_{j<=k} beta_{k+1}^j x_j, eq (18).

    ``transform(k, j, x)`` is T_{k+1,j} (each earlier state has its own map into step k+1, as in
    the AGD-Net of eq (21)); ``alpha[k, j]``, ``beta[k, j]`` (shape (depth, depth)) are
    alpha_{k+1}^j, beta_{k+1}^j, read for j <= k only.
    """
    x = as_vector("x0", x0)
    depth = check_int("depth", depth, min_value=0)
    alpha, beta = _coeffs("alpha", alpha, depth), _coeffs("beta", beta, depth)
    xs = [x]
    for k in range(depth):
        acc = np.zeros_like(x)
        for j in range(k + 1):
            if alpha[k, j] != 0:
                acc = acc + alpha[k, j] * transform(k, j, xs[j])
            acc = acc + beta[k, j] * xs[j]
        xs.append(acc)
    return np.array(xs)


def admm_structure(x0, transform: Transform, depth: int, alpha, beta, *, x0_prime=None,
                   transform_prime: Transform | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eq (20) with step-dependent coefficients and sums over t = 0..k; returns (x', x).

    x'_{k+1} = T'_k(x'_k) + sum_t alpha[k, t] x'_t + sum_t beta[k, t] x_t,
    x_{k+1}  = T_k(x_k)   + sum_t alpha[k, t] x'_t + sum_t beta[k, t] x_t.
    DMRNet (merge-and-run) is alpha[k, k] = beta[k, k] = 1/2, all other entries 0. ``transform_prime``
    defaults to ``transform`` (the paper writes one T for both paths).
    """
    x = as_vector("x0", x0)
    xp = x.copy() if x0_prime is None else as_vector("x0_prime", x0_prime, dim=x.shape[0])
    depth = check_int("depth", depth, min_value=0)
    alpha, beta = _coeffs("alpha", alpha, depth), _coeffs("beta", beta, depth)
    Tp = transform if transform_prime is None else transform_prime
    xps, xs = [xp], [x]
    for k in range(depth):
        mix = alpha[k, : k + 1] @ np.array(xps) + beta[k, : k + 1] @ np.array(xs)
        xps.append(Tp(k, xps[k]) + mix)
        xs.append(transform(k, xs[k]) + mix)
    return np.array(xps), np.array(xs)


# --- Sec. 2 rates: tuned parameters and iteration counts on quadratics --------------------------

RATE_METHODS = ("gd", "hb", "agd")


def tuned_parameters(method: str, mu: float, L: float) -> tuple[float, float]:
    """(step size, momentum) giving each method its textbook rate on mu-strongly convex, L-smooth f.

    GD: step 1/L, contraction 1 - 1/kappa per step (kappa = L/mu).
    HB (Polyak 1964): step 4/(sqrt L + sqrt mu)^2, momentum ((sqrt kappa - 1)/(sqrt kappa + 1))^2,
    asymptotic contraction (sqrt kappa - 1)/(sqrt kappa + 1) on quadratics.
    AGD (footnote 4): step 1/L, constant momentum (sqrt L - sqrt mu)/(sqrt L + sqrt mu),
    contraction 1 - 1/sqrt(kappa).
    """
    method = check_choice("method", method, RATE_METHODS)
    mu = check_real("mu", mu, min_value=0.0, include_min=False)
    L = check_real("L", L, min_value=mu)
    sl, sm = np.sqrt(L), np.sqrt(mu)
    if method == "gd":
        return 1.0 / L, 0.0
    if method == "hb":
        return 4.0 / (sl + sm) ** 2, ((sl - sm) / (sl + sm)) ** 2
    return 1.0 / L, (sl - sm) / (sl + sm)


def iterations_to_accuracy(A, b, z0, method: str, step: float, momentum: float, eps: float,
                           max_iter: int) -> np.ndarray:
    """Iterations until ||z_k - z*|| <= eps ||z_0 - z*|| on f(z) = z^T A z / 2 - b^T z, batched.

    ``A`` (batch, n, n) SPD, ``b``/``z0`` (batch, n); z* by a dense solve. GD and HB are eq (1)-(2)
    with a step size, AGD is eq (3) with constant momentum. Problems not there after
    ``max_iter``, or that diverge (a non-finite iterate), report ``max_iter + 1``; the others of the
    batch are unaffected.
    """
    method = check_choice("method", method, RATE_METHODS)
    A = as_float64_array("A", A, ndim=3)
    if A.shape[1] != A.shape[2]:
        raise ValueError(f"A must have shape (batch, n, n); got {A.shape}")
    b = as_matrix("b", b, shape=(A.shape[0], A.shape[1]))
    z = as_matrix("z0", z0, shape=(A.shape[0], A.shape[1]))
    step = check_real("step", step, min_value=0.0, include_min=False)
    momentum = check_real("momentum", momentum, min_value=0.0, max_value=1.0, include_max=False)
    eps = check_real("eps", eps, min_value=0.0, max_value=1.0, include_min=False)
    max_iter = check_int("max_iter", max_iter, min_value=1)
    zstar = np.linalg.solve(A, b[..., None])[..., 0]
    target = eps * np.linalg.norm(z - zstar, axis=1)
    count = np.full(A.shape[0], max_iter + 1)
    done = np.linalg.norm(z - zstar, axis=1) <= target
    count[done] = 0
    prev = z.copy()

    def grad(v):
        return np.einsum("bij,bj->bi", A, v) - b

    for k in range(1, max_iter + 1):
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging problem overflows; it is caught below
            if method == "agd":
                y = z + momentum * (z - prev)
                z, prev = y - step * grad(y), z
            else:
                z, prev = z - step * grad(z) + momentum * (z - prev), z
            err = np.linalg.norm(z - zstar, axis=1)
        diverged = ~np.isfinite(err) & ~done
        if diverged.any():
            # those problems keep max_iter + 1; parked at z* so the others of the batch go on
            done |= diverged
            z[diverged], prev[diverged] = zstar[diverged], zstar[diverged]
        newly = ~done & (err <= target)
        count[newly] = k
        done |= newly
        if done.all():
            break
    return count
