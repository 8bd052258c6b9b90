"""The mathematics of ND: Shen et al., "Newton design" (Sci China Inf Sci 2023), in float64.

Objects, in the paper's words and numbering (papers/001_7d8a77c69ed28a39.txt):

- ``objective``: F(x) = x^T A x / 2 - 1^T P(Ax) with P' = Phi = ReLU, eq (3);
- ``gradient``: A[x - Phi(Ax)], eq (4); ``hessian``: A - A Diag[Phi'(Ax)] A, eq (6);
- ``inverse_hessian``, ``neumann_partial_sums``, ``neumann_inverse_hessian``,
  ``neumann_truncation_bound``: eq (7) and its truncation after m terms;
- ``quasi_newton_step``: eq (8) / (15) with H_k = sum_{n=0}^m (Diag[Phi'(Ax_k)] A)^n A^{-1};
- ``newton_step``: eq (10); ``newton_cg_system`` (U, r, Q, b), ``conjugate_gradient`` (Alg. 1,
  eq (11)-(16)), ``cg_gradient_eq17`` (eq (17)), ``newton_cg_step`` (eq (10) with Alg. 1);
- ``iteration_trace``: |F(x_k) - F(x*)| per iteration, as in sec 3.3 / Table 2;
- ``quasi_newton_resnet_weights`` + ``resnet_block``: eq (8) -> (9);
- ``newton_cg_block`` + ``newton_cg_block_weights``: a dense-matrix reading of Alg. 2.

Readings of garbled or ambiguous text (and why):

- P is the antiderivative of ReLU with P(0) = 0, i.e. P(t) = max(t, 0)^2 / 2. The constant does
  not matter for the gradient; P(0) = 0 makes F(0) = 0, which is what sec 3.3 compares against.
- Phi'(t) is 1 for t > 0 and 0 for t <= 0 (the convention of torch's ReLU). Phi(Ax) = D A x with
  D = Diag[Phi'(Ax)] holds with either value at 0, so no formula here depends on that choice.
- Table 1 prints "U = I - Diag[Phi'(Ax_k)]"; eq (10) and the text before (11) define
  U = I - Diag[Phi'(Ax_k)] A. The latter is right: with it, U^{-1} r is the Newton step.
- Eq (8)'s quasi-Newton step with general H_k (projected on C = {x >= 0} by P_C = ReLU) is
  Phi[x_k + H_k A (Phi(Ax_k) - x_k)]; with the Neumann H_k, H_k A = sum_{n=0}^m (DA)^n, so no
  inverse of A is needed to run it (``quasi_newton_step`` never forms A^{-1}).
- Sec 3.3 initialises CG with y_0 = x_k ("we simply use x_k to initialize the initial point y_0"),
  even though y is a step, not a point (the exact solution is y* = U^{-1} r). ``newton_cg_step``
  follows the paper by default (``y0="x"``) and offers ``y0="zero"`` for comparison.
- Alg. 1 line 7 recomputes g_{t+1} = Q y_{t+1} - b (not the recurrence g_t + alpha_t Q d_t);
  ``conjugate_gradient`` does the same.
- Alg. 2 (dense reading): convolutions become matrices W_t^(1..4); "Dropout" becomes either the
  identity (dropout off) or a fixed multiplicative mask (the paper's stand-in for
  Diag[Phi'(Ax_k)], sec 4.1.2); eq (17)'s "-b" term, which the paper says "can be simply viewed
  as a threshold" but which Alg. 2 line 6 omits, is an optional ``threshold`` added to g_t.
  With the weights of ``newton_cg_block_weights`` and alpha_t, beta_t from Alg. 1 the block
  reproduces Alg. 1's iterates exactly; without the threshold it runs CG on Q y = 0.

Every public function validates its inputs (``analysis.validation``) and raises an
``AssumptionError`` naming the broken assumption of the paper (e.g. a non-symmetric A for
Prop. 1, ||A||_2 >= 1 for the Neumann bound). Internal helpers (leading underscore) trust their
callers and work matrix-free, so the n = 2048 experiment of sec 3.3 costs only mat-vecs.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from analysis.validation import (
    as_vector,
    check_bool,
    check_choice,
    check_int,
    check_invertible,
    check_positive_definite,
    check_real,
    check_spectral_norm_below,
    check_square,
    check_symmetric,
)

__all__ = [
    "relu",
    "relu_derivative",
    "relu_antiderivative",
    "objective",
    "gradient",
    "hessian",
    "active_mask",
    "inverse_hessian",
    "neumann_partial_sums",
    "neumann_inverse_hessian",
    "neumann_truncation_bound",
    "quasi_newton_step",
    "newton_step",
    "NewtonCGSystem",
    "newton_cg_system",
    "CGResult",
    "conjugate_gradient",
    "cg_gradient_eq17",
    "newton_cg_step",
    "IterationTrace",
    "iteration_trace",
    "METHODS",
    "quasi_newton_resnet_weights",
    "resnet_block",
    "CGBlockWeights",
    "newton_cg_block_weights",
    "newton_cg_block",
]

_SYM = "ND Prop. 1, eq (3)-(6): the gradient A[x - Phi(Ax)] and Hessian need A = A^T"
_INV = "ND Prop. 1, eq (5)/(7): the quasi-Newton step uses A^{-1}"
_NEUMANN = "ND eq (7): the Neumann series and its truncation bound need ||A||_2 < 1"
_U_INV = "ND eq (10)-(11): the Newton step needs U = I - Diag[Phi'(Ax)] A invertible"
_CG = "ND Alg. 1: CG on Q y = b needs Q = U^T U symmetric positive definite"

METHODS = ("quasi-newton", "newton-cg", "newton")


# --- activation ----------------------------------------------------------------------------
def relu(t):
    """Phi(t) = max(t, 0), the paper's activation."""
    return np.maximum(t, 0.0)


def relu_derivative(t):
    """Phi'(t): 1 where t > 0, else 0 (binary, so Diag[Phi'] is a 0/1 mask)."""
    return (np.asarray(t) > 0).astype(np.float64)


def relu_antiderivative(t):
    """P(t) = max(t, 0)^2 / 2, the antiderivative of ReLU with P(0) = 0 (Table 1: P' = Phi)."""
    p = np.maximum(t, 0.0)
    return 0.5 * p * p


# --- validation helpers ----------------------------------------------------------------------
def _sym(A, assumption: str = _SYM) -> np.ndarray:
    return check_symmetric("A", A, assumption=assumption)


def _vec(name: str, x, n: int) -> np.ndarray:
    return as_vector(name, x, dim=n)


# --- objective, gradient, Hessian -------------------------------------------------------------
def _objective(A: np.ndarray, x: np.ndarray) -> float:
    Ax = A @ x
    p = np.maximum(Ax, 0.0)
    return 0.5 * float(x @ Ax - p @ p)


def objective(A, x) -> float:
    """F(x) = x^T A x / 2 - 1^T P(Ax), eq (3). Defined for any square A (symmetry is for eq (4))."""
    A = check_square("A", A)
    x = _vec("x", x, A.shape[0])
    return _objective(A, x)


def gradient(A, x) -> np.ndarray:
    """grad F(x) = A[x - Phi(Ax)], eq (4) (Prop. 1). Needs A symmetric: for a general A the gradient
    is (A + A^T) x / 2 - A^T Phi(Ax)."""
    A = _sym(A)
    x = _vec("x", x, A.shape[0])
    return A @ (x - relu(A @ x))


def active_mask(A, x) -> np.ndarray:
    """The diagonal of Diag[Phi'(Ax)]: 1 for the units with (Ax)_i > 0, else 0."""
    A = check_square("A", A)
    x = _vec("x", x, A.shape[0])
    return relu_derivative(A @ x)


def hessian(A, x) -> np.ndarray:
    """Hessian of F, eq (6): A - A Diag[Phi'(Ax)] A, valid where no (Ax)_i is 0 (off the ReLU kinks);
    on a kink F is not twice differentiable and this is the one-sided value with Phi'(0) = 0."""
    A = _sym(A)
    x = _vec("x", x, A.shape[0])
    d = relu_derivative(A @ x)
    return A - A @ (d[:, None] * A)


def _u_matrix(A: np.ndarray, d: np.ndarray) -> np.ndarray:
    return np.eye(A.shape[0]) - d[:, None] * A


def inverse_hessian(A, x) -> np.ndarray:
    """[grad^2 F(x)]^{-1} = [I - Diag[Phi'(Ax)] A]^{-1} A^{-1}, first line of eq (7).

    Uses A - A D A = A (I - D A) (A symmetric); solved, not inverted, in two steps.
    """
    A = check_invertible("A", _sym(A), assumption=_INV)
    x = _vec("x", x, A.shape[0])
    U = check_invertible("U", _u_matrix(A, relu_derivative(A @ x)), assumption=_U_INV)
    return np.linalg.solve(U, np.linalg.inv(A))


def neumann_partial_sums(A, x, m: int) -> np.ndarray:
    """The partial sums S_j = sum_{n=0}^{j} (Diag[Phi'(Ax)] A)^n A^{-1}, j = 0..m, of eq (7).

    Returns an array of shape (m + 1, n, n). Needs A symmetric and invertible, not ||A||_2 < 1:
    without it the partial sums exist but need not converge (which the theory checks show).
    """
    A = check_invertible("A", _sym(A), assumption=_INV)
    x = _vec("x", x, A.shape[0])
    m = check_int("m", m, min_value=0)
    d = relu_derivative(A @ x)
    term = np.linalg.inv(A)
    out = np.empty((m + 1, *A.shape))
    out[0] = term
    for j in range(1, m + 1):
        term = d[:, None] * (A @ term)
        out[j] = out[j - 1] + term
    return out


def neumann_inverse_hessian(A, x, m: int) -> np.ndarray:
    """H = A^{-1} + sum_{n=1}^m (Diag[Phi'(Ax)] A)^n A^{-1}: eq (7) truncated after m terms (sec 3.1)."""
    return neumann_partial_sums(A, x, m)[-1]


def neumann_truncation_bound(A, m: int) -> float:
    """||A||^{m+1} / (1 - ||A||) * ||A^{-1}||: bound on ||[grad^2 F]^{-1} - H_m||_2 (eq (7), ||A||_2 < 1).

    From ||Diag[Phi'] A||_2 <= ||A||_2 (Phi' in {0, 1}) and the geometric tail sum_{n > m}.
    """
    A = check_spectral_norm_below("A", check_square("A", A), 1.0, assumption=_NEUMANN)
    A = check_invertible("A", A, assumption=_INV)
    m = check_int("m", m, min_value=0)
    norm = float(np.linalg.norm(A, 2))
    return norm ** (m + 1) / (1.0 - norm) * float(np.linalg.norm(np.linalg.inv(A), 2))


# --- iterations -------------------------------------------------------------------------------
def _quasi_newton_step(A: np.ndarray, x: np.ndarray, m: int, Ax: np.ndarray | None = None) -> np.ndarray:
    Ax = A @ x if Ax is None else Ax
    d = Ax > 0
    r = np.maximum(Ax, 0.0) - x
    step, term = r.copy(), r
    for _ in range(m):
        term = d * (A @ term)
        step += term
    return np.maximum(x + step, 0.0)


def quasi_newton_step(A, x, m: int) -> np.ndarray:
    """x_{k+1} = P_C[x_k - H_k grad F(x_k)] = Phi[x_k + H_k A (Phi(Ax_k) - x_k)], eq (8) / (15),
    with H_k = sum_{n=0}^m (Diag[Phi'(Ax_k)] A)^n A^{-1}. With m = 0 it is Phi(Ax_k), eq (2)/(16).
    Matrix-free: H_k A = sum_{n=0}^m (DA)^n costs m + 1 mat-vecs and no inverse."""
    A = _sym(A)
    x = _vec("x", x, A.shape[0])
    m = check_int("m", m, min_value=0)
    return _quasi_newton_step(A, x, m)


def newton_step(A, x) -> np.ndarray:
    """x_{k+1} = Phi{x_k + [I - Diag[Phi'(Ax_k)] A]^{-1} [Phi(Ax_k) - x_k]}, eq (10) (dense solve)."""
    A = _sym(A)
    x = _vec("x", x, A.shape[0])
    Ax = A @ x
    U = check_invertible("U", _u_matrix(A, relu_derivative(Ax)), assumption=_U_INV)
    return relu(x + np.linalg.solve(U, relu(Ax) - x))


@dataclass(frozen=True)
class NewtonCGSystem:
    """The linear system of eq (11)-(14) at x_k: U y = r, solved as Q y = b."""

    mask: np.ndarray  # diagonal of Diag[Phi'(Ax_k)]
    U: np.ndarray  # I - Diag[Phi'(Ax_k)] A
    r: np.ndarray  # Phi(Ax_k) - x_k
    Q: np.ndarray  # U^T U
    b: np.ndarray  # U^T r


def newton_cg_system(A, x) -> NewtonCGSystem:
    """U, r, Q = U^T U and b = U^T r at x (text before eq (11), eq (14))."""
    A = _sym(A)
    x = _vec("x", x, A.shape[0])
    Ax = A @ x
    d = relu_derivative(Ax)
    U = _u_matrix(A, d)
    r = relu(Ax) - x
    return NewtonCGSystem(mask=d, U=U, r=r, Q=U.T @ U, b=U.T @ r)


@dataclass(frozen=True)
class CGResult:
    """Alg. 1's sequences: y_0..y_N, g_0..g_N (g_t = Q y_t - b), d_0..d_{N-1}, alpha_t, beta_t.

    ``steps`` is the number of steps taken: fewer than N only if CG converged exactly
    (d_t^T Q d_t = 0), after which the remaining iterates repeat the last one.
    """

    iterates: np.ndarray
    gradients: np.ndarray
    directions: np.ndarray
    alphas: np.ndarray
    betas: np.ndarray
    steps: int

    @property
    def solution(self) -> np.ndarray:
        return self.iterates[-1]


def _cg(matvec: Callable[[np.ndarray], np.ndarray], b: np.ndarray, y0: np.ndarray, N: int,
        recompute: bool = True) -> CGResult:
    n = b.shape[0]
    ys, gs = np.empty((N + 1, n)), np.empty((N + 1, n))
    ds = np.zeros((N, n))
    alphas, betas = np.zeros(N), np.zeros(max(N - 1, 0))
    y = y0.copy()
    g = matvec(y) - b
    d = -g
    ys[0], gs[0] = y, g
    steps = N
    for t in range(N):
        Qd = matvec(d)
        dQd = float(d @ Qd)
        if not dQd > 0.0:
            # d = 0: CG has already solved the system exactly; Alg. 1's formulas would divide 0 by 0.
            ys[t + 1:], gs[t + 1:] = y, g
            steps = t
            break
        ds[t] = d
        alphas[t] = -float(g @ d) / dQd
        y = y + alphas[t] * d
        # Alg. 1 line 7 recomputes Q y - b; the recurrence gives the same g in exact arithmetic for
        # half the mat-vecs (the usual CG update), used only where asked for.
        g = matvec(y) - b if recompute else g + alphas[t] * Qd
        ys[t + 1], gs[t + 1] = y, g
        if t < N - 1:
            betas[t] = float(g @ Qd) / dQd
            d = -g + betas[t] * d
    return CGResult(ys, gs, ds, alphas, betas, steps)


def conjugate_gradient(Q, b, y0, N: int) -> CGResult:
    """Alg. 1: N steps of CG on min_y y^T Q y / 2 - b^T y (eq (14)) from y0.

    alpha_t = -g_t^T d_t / d_t^T Q d_t (line 5), y_{t+1} = y_t + alpha_t d_t (line 6),
    g_{t+1} = Q y_{t+1} - b (line 7), beta_t = g_{t+1}^T Q d_t / d_t^T Q d_t (line 8),
    d_{t+1} = -g_{t+1} + beta_t d_t (line 9).
    """
    Q = check_positive_definite("Q", Q, assumption=_CG)
    n = Q.shape[0]
    b = _vec("b", b, n)
    y0 = _vec("y0", y0, n)
    N = check_int("N", N, min_value=1)
    return _cg(lambda v: Q @ v, b, y0, N)


def cg_gradient_eq17(A, mask, y, b) -> np.ndarray:
    """Eq (17)'s expansion of g = Q y - b: y - D A y - A D y + A D A y - b, D = Diag[mask].

    The last term uses D^2 = D, true only for a 0/1 mask (Phi = ReLU); for another activation
    U^T U y carries A D^2 A y instead. The mask is taken as given so that the theory checks can
    show this. Needs A symmetric (U^T = I - A D).
    """
    A = check_symmetric("A", A, assumption="ND eq (17): U^T = I - A Diag[Phi'(Ax)] needs A = A^T")
    n = A.shape[0]
    mask = _vec("mask", mask, n)
    y = _vec("y", y, n)
    b = _vec("b", b, n)
    Ay = A @ y
    return y - mask * Ay - A @ (mask * y) + A @ (mask * Ay) - b


def _newton_cg_step(A: np.ndarray, x: np.ndarray, N: int, y0: str, Ax: np.ndarray | None = None,
                    recompute: bool = True) -> np.ndarray:
    Ax = A @ x if Ax is None else Ax
    d = (Ax > 0).astype(np.float64)
    r = np.maximum(Ax, 0.0) - x

    def U_T(w):
        return w - A @ (d * w)

    def Q(v):
        return U_T(v - d * (A @ v))

    start = x if y0 == "x" else np.zeros_like(x)
    y = _cg(Q, U_T(r), start, N, recompute).solution
    return np.maximum(x + y, 0.0)


def newton_cg_step(A, x, N: int, y0: str = "x") -> np.ndarray:
    """Newton-CG: x_{k+1} = Phi(x_k + y_N), eq (10) with y_N from N steps of Alg. 1 on Q y = b.

    ``y0="x"`` is sec 3.3's initialisation y_0 = x_k; ``y0="zero"`` starts from 0. Matrix-free:
    each CG step costs 4 mat-vecs with A (Q v = U^T U v, and line 7 recomputes Q y - b).
    """
    A = _sym(A)
    x = _vec("x", x, A.shape[0])
    N = check_int("N", N, min_value=1)
    y0 = check_choice("y0", y0, ("x", "zero"))
    return _newton_cg_step(A, x, N, y0)


@dataclass(frozen=True)
class IterationTrace:
    """|F(x_k) - F(x*)| for k = 0, 1, ...; ``iterations`` is the first k with error < eps (None if
    not reached within max_iter); ``x_final`` is the last iterate computed."""

    errors: np.ndarray
    iterations: int | None
    x_final: np.ndarray


def _step_function(method: str, order: int, y0: str, recompute: bool = True) -> Callable[..., np.ndarray]:
    # Each step takes the product Ax already computed for F(x): one pass over A saved per iteration.
    if method == "quasi-newton":
        return lambda A, x, Ax: _quasi_newton_step(A, x, order, Ax)
    if method == "newton-cg":
        return lambda A, x, Ax: _newton_cg_step(A, x, order, y0, Ax, recompute)
    return lambda A, x, Ax: relu(x + np.linalg.solve(_u_matrix(A, relu_derivative(Ax)), relu(Ax) - x))


def _objective_from(x: np.ndarray, Ax: np.ndarray) -> float:
    p = np.maximum(Ax, 0.0)
    return 0.5 * float(x @ Ax - p @ p)


def _iteration_trace(A, x0, method, order, max_iter, eps, f_star, y0, recompute=True) -> IterationTrace:
    step = _step_function(method, order, y0, recompute)
    x = x0.copy()
    Ax = A @ x
    errors = [abs(_objective_from(x, Ax) - f_star)]
    iterations = 0 if errors[0] < eps else None
    k = 0
    while iterations is None and k < max_iter:
        x = step(A, x, Ax)
        Ax = A @ x
        k += 1
        errors.append(abs(_objective_from(x, Ax) - f_star))
        if errors[-1] < eps:
            iterations = k
    return IterationTrace(np.asarray(errors), iterations, x)


def iteration_trace(A, x0, method: str, order: int = 0, *, max_iter: int = 1000, eps: float = 1e-20,
                    f_star: float = 0.0, y0: str = "x", cg_gradient: str = "recompute") -> IterationTrace:
    """Run a method of sec 3 from x0 until |F(x_k) - f_star| < eps or max_iter iterations (sec 3.3).

    ``method``: "quasi-newton" (eq (15), ``order`` = m Neumann terms, m = 0 is eq (16)),
    "newton-cg" (eq (10) + Alg. 1, ``order`` = N CG steps, ``y0`` as in ``newton_cg_step``) or
    "newton" (eq (10), exact solve). ``cg_gradient``: "recompute" (Alg. 1 line 7, g = Q y - b) or
    "recurrence" (g + alpha Q d: equal in exact arithmetic, half the mat-vecs). ``f_star`` defaults to F(0) = 0, the minimum when A is positive
    definite with ||A||_2 < 1 (sec 3.3's setting).
    """
    A = _sym(A)
    x0 = _vec("x0", x0, A.shape[0])
    method = check_choice("method", method, METHODS)
    order = check_int("order", order, min_value=1 if method == "newton-cg" else 0)
    max_iter = check_int("max_iter", max_iter, min_value=0)
    eps = check_real("eps", eps, min_value=0.0, include_min=False)
    f_star = check_real("f_star", f_star)
    y0 = check_choice("y0", y0, ("x", "zero"))
    cg_gradient = check_choice("cg_gradient", cg_gradient, ("recompute", "recurrence"))
    return _iteration_trace(A, x0, method, order, max_iter, eps, f_star, y0, cg_gradient == "recompute")


# --- structural forms -------------------------------------------------------------------------
def quasi_newton_resnet_weights(A, H) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W_s, W_1, W_2) = (I - H A, H A, A): eq (8) read as the block (9) Phi[W_s x + W_1 Phi(W_2 x)]."""
    A = _sym(A)
    n = A.shape[0]
    H = check_square("H", H)
    if H.shape != A.shape:
        raise ValueError(f"H must have the shape of A {A.shape}; got {H.shape}")
    HA = H @ A
    return np.eye(n) - HA, HA, A


def resnet_block(x, W_s, W_1, W_2) -> np.ndarray:
    """The non-bottleneck ResNet block of Fig. 1(b), eq (9): Phi[W_s x + W_1 Phi(W_2 x)].

    ``x`` may be one vector (n,) or a batch (batch, n).
    """
    W_s, W_1, W_2 = (check_square(name, W) for name, W in (("W_s", W_s), ("W_1", W_1), ("W_2", W_2)))
    n = W_s.shape[0]
    for name, W in (("W_1", W_1), ("W_2", W_2)):
        if W.shape != (n, n):
            raise ValueError(f"{name} must have the shape of W_s {(n, n)}; got {W.shape}")
    X = np.asarray(x, dtype=np.float64)
    if X.ndim not in (1, 2) or X.shape[-1] != n:
        raise ValueError(f"x must have shape ({n},) or (batch, {n}); got {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError("x must be finite; it has NaN or infinite entries")
    return relu(X @ W_s.T + relu(X @ W_2.T) @ W_1.T)


@dataclass(frozen=True)
class CGBlockWeights:
    """Linear maps and threshold for which Alg. 2's g_t equals eq (17)'s Q y_t - b at x_k."""

    W1: np.ndarray
    W2: np.ndarray
    W3: np.ndarray
    W4: np.ndarray
    threshold: np.ndarray
    mask: np.ndarray


def newton_cg_block_weights(A, x, *, absorb_mask: bool = True) -> CGBlockWeights:
    """Weights mapping eq (17) onto Alg. 2 lines 3-6 at x_k (D = Diag[Phi'(Ax_k)], b = U^T r).

    g^(1) = W1 y ~ -D A y, g^(2) = W2 y ~ -A D y, g^(3) = W4 W3 y ~ A D A y, threshold = -b.
    ``absorb_mask=True`` (dropout off): W1 = -DA, W2 = -AD, W3 = DA, W4 = A, the mask folded into
    the maps. ``absorb_mask=False``: W1 = W2 = -A, W3 = W4 = A and the "Dropout" of lines 3-5 is the
    fixed mask D itself (``mask`` field), the paper's reading of dropout in sec 4.1.2.
    """
    absorb_mask = check_bool("absorb_mask", absorb_mask)
    sys_ = newton_cg_system(A, x)
    A = np.asarray(A, dtype=np.float64)
    D = sys_.mask
    if absorb_mask:
        return CGBlockWeights(-D[:, None] * A, -A * D[None, :], D[:, None] * A, A.copy(), -sys_.b,
                              np.ones_like(D))
    return CGBlockWeights(-A, -A, A.copy(), A.copy(), -sys_.b, D)


def newton_cg_block(x, W1, W2, W3, W4, alphas, betas, *, mask=None, threshold=None):
    """Alg. 2 with linear maps in place of convolutions: returns (x_{k+1}, [y_0, ..., y_N]).

    y_0 = x_k; for t < N: g_t = y_t + Dropout(W1 y_t) + W2 Dropout(y_t) + W4 Dropout(W3 y_t)
    [+ threshold]; d_t = -g_t (+ beta_{t-1} d_{t-1}); y_{t+1} = y_t + alpha_t d_t;
    x_{k+1} = ReLU(x_k + y_N). ``mask=None`` is dropout off (identity); otherwise "Dropout" multiplies
    by ``mask``. ``threshold=None`` is Alg. 2 as printed (no b term).
    """
    x = as_vector("x", x)
    n = x.shape[0]
    Ws = []
    for name, W in (("W1", W1), ("W2", W2), ("W3", W3), ("W4", W4)):
        W = check_square(name, W)
        if W.shape != (n, n):
            raise ValueError(f"{name} must have shape {(n, n)} to act on x; got {W.shape}")
        Ws.append(W)
    W1, W2, W3, W4 = Ws
    alphas = as_vector("alphas", alphas)
    N = alphas.shape[0]
    if N < 1:
        raise ValueError("alphas must hold alpha_0..alpha_{N-1} for N >= 1 CG blocks; got none")
    betas = as_vector("betas", betas, dim=N - 1)
    keep = np.ones(n) if mask is None else as_vector("mask", mask, dim=n)
    bias = np.zeros(n) if threshold is None else as_vector("threshold", threshold, dim=n)
    y = x.copy()
    ys = [y]
    d = np.zeros(n)
    for t in range(N):
        g = y + keep * (W1 @ y) + W2 @ (keep * y) + W4 @ (keep * (W3 @ y)) + bias
        d = -g if t == 0 else -g + betas[t - 1] * d
        y = y + alphas[t] * d
        ys.append(y)
    return relu(x + y), np.asarray(ys)
