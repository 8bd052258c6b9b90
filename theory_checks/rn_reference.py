"""Independent references for the RN theory checks (``theory_checks/test_rn.py``).

Nothing here calls ``analysis.theory.rn``: the risks of (P_phi) eq (4)-(5) and (PA_phi) eq (7) are
written directly in torch (float64, autograd for gradients and Hessians), best linear risks come from
``np.linalg.lstsq``, the cross-entropy minimum of a convex (PA_phi) from torch's own L-BFGS, and the
certificates below are derived here from first principles (each in its docstring), so that a check
compares the project's numbers against a computation that shares none of its code.

Conventions are the project's (samples are rows): x_{L-1} (N, M), v_L (N, K), W_L (M, K),
W_{L+1} (N_o, M); an A-ResNEst coefficient H is (D, N_o) with prediction V H.
"""
from __future__ import annotations

import numpy as np
import torch

EPS = np.finfo(np.float64).eps
LOSSES = ("squared", "cross_entropy")


# ----------------------------------------------------------------------------------------------
# Least squares and round-off
# ----------------------------------------------------------------------------------------------
def lstsq_coef(v: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(v, y, rcond=None)[0]


def lstsq_risk(v: np.ndarray, y: np.ndarray) -> float:
    """min_H (1/N) ||Y - V H||_F^2 by ``np.linalg.lstsq`` (the paper's squared loss, no 1/2)."""
    h = lstsq_coef(v, y)
    return float(np.sum((y - v @ h) ** 2) / v.shape[0])


def cond_plus(v: np.ndarray) -> float:
    """s_max / s_min over the singular values of V above lstsq's round-off cut."""
    s = np.linalg.svd(v, compute_uv=False)
    s = s[s > max(v.shape) * EPS * s[0]]
    return float(s[0] / s[-1])


def target_scale(y: np.ndarray) -> float:
    """The size of the risks at stake: mean ||y||^2 (at least 1, the cross-entropy scale)."""
    return max(float(np.mean(np.sum(y * y, axis=1))), 1.0)


def floor(v: np.ndarray, y: np.ndarray) -> float:
    """Round-off floor for a difference of two risks computed from features ``v``.

    A risk is a mean of N * N_o squared residuals; each solver (lstsq, the moment solver, L-BFGS's final
    evaluation) returns residuals with relative error ~ cond(V) * eps, and a difference of two risks of
    size mean||y||^2 inherits both, so the round-off is ~ N * cond(V) * eps * mean||y||^2 (N from the
    summation). Two orders of margin on top.
    """
    return 1e2 * v.shape[0] * cond_plus(v) * EPS * target_scale(y)


def value_tolerance(n: int, y: np.ndarray, value: float) -> float:
    """|two float64 evaluations of the same risk| in different summation orders.

    Each is a mean of N * N_o terms of size <= max(|value|, mean||y||^2) per sample: summation error
    <= N * eps * (sum of |terms|) / N, so N * eps * max(|value|, scale) with two orders of margin.
    A wrong risk (halved, negated, a dropped input) differs by O(value), ~1e12 times more.
    """
    return 1e2 * n * EPS * max(abs(value), target_scale(y))


# ----------------------------------------------------------------------------------------------
# The ResNEst forward pass, eq (1) and (3), from the blocks' raw weights
# ----------------------------------------------------------------------------------------------
_ACT = {"tanh": np.tanh, "relu": lambda t: np.maximum(t, 0.0), "linear": lambda t: t}


def resnest_stream(x, w0, blocks) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(v_0..v_L, x_0..x_L): x_0 = W_0 x, v_i = G_i(x_{i-1}) (every layer act(A h + b)), x_i = x_{i-1} + W_i v_i.

    Reads only the arrays of each block (``G.layers``, ``G.activation``, ``W``), none of the project's
    forward code.
    """
    feats, stream = [x], [x @ w0.T]
    for blk in blocks:
        h = stream[-1]
        for a, b in blk.G.layers:
            h = _ACT[blk.G.activation](h @ a.T + b)
        feats.append(h)
        stream.append(stream[-1] + h @ blk.W.T)
    return feats, stream


# ----------------------------------------------------------------------------------------------
# Torch references for (P_phi) and (PA_phi)
# ----------------------------------------------------------------------------------------------
def _loss(y_hat: torch.Tensor, y: torch.Tensor, loss: str) -> torch.Tensor:
    if loss == "squared":
        return ((y_hat - y) ** 2).sum() / y.shape[0]
    return (torch.logsumexp(y_hat, dim=1) - (y * y_hat).sum(dim=1)).mean()


def prediction_risk(x_prev, v_last, y, loss):
    """(P_phi) eq (5) as a torch function of flat = [vec W_L, vec W_{L+1}]."""
    xp, vl, yt = (torch.as_tensor(a, dtype=torch.float64) for a in (x_prev, v_last, y))
    m, k, n_o = xp.shape[1], vl.shape[1], yt.shape[1]

    def risk(flat):
        w_l = flat[: m * k].reshape(m, k)
        w_o = flat[m * k:].reshape(n_o, m)
        return _loss((xp + vl @ w_l.T) @ w_o.T, yt, loss)

    return risk


def flat(w_l, w_o) -> torch.Tensor:
    return torch.as_tensor(np.concatenate([np.ravel(w_l), np.ravel(w_o)]), dtype=torch.float64)


def value_and_grad(risk, w_l, w_o) -> tuple[float, np.ndarray, np.ndarray]:
    """(R, dR/dW_L, dR/dW_{L+1}) at a point, by autograd."""
    p = flat(w_l, w_o).requires_grad_(True)
    r = risk(p)
    (g,) = torch.autograd.grad(r, p)
    g = g.numpy()
    split = np.size(w_l)
    return float(r.detach()), g[:split].reshape(np.shape(w_l)), g[split:].reshape(np.shape(w_o))


def hessian_eigs(risk, w_l, w_o) -> np.ndarray:
    h = torch.autograd.functional.hessian(risk, flat(w_l, w_o)).numpy()
    return np.linalg.eigvalsh((h + h.T) / 2)


def grad_tolerance(v_last, x_l, w_out, y, y_hat) -> float:
    """|project gradient - autograd gradient| of (P_phi): round-off of sums over N samples.

    dR/dW_L = W^T G^T V_L and dR/dW = G^T X_L with G = dl/dy_hat (entries <= 2 (|y_hat| + |y|) / N):
    each entry sums N products bounded (Cauchy-Schwarz) by the Frobenius norms, so the round-off is
    <= N eps (||W||_F ||V_L||_F + ||X_L||_F) * 2 (||Y_hat||_F + ||Y||_F) / N; two orders of margin.
    """
    n = y.shape[0]
    size = (np.linalg.norm(w_out) * np.linalg.norm(v_last) + np.linalg.norm(x_l)) * \
        2.0 * (np.linalg.norm(y_hat) + np.linalg.norm(y)) / n
    return 1e2 * n * EPS * float(size) + 1e-300


def a_risk(v, y, loss):
    """(PA_phi) eq (7) as a torch function of flat H (D * N_o)."""
    vt, yt = torch.as_tensor(v, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    d, n_o = vt.shape[1], yt.shape[1]

    def risk(h):
        return _loss(vt @ h.reshape(d, n_o), yt, loss)

    return risk


def a_value_and_grad(v, y, loss, h) -> tuple[float, np.ndarray]:
    p = torch.as_tensor(np.ravel(h), dtype=torch.float64).requires_grad_(True)
    r = a_risk(v, y, loss)(p)
    (g,) = torch.autograd.grad(r, p)
    return float(r.detach()), g.numpy().reshape(np.shape(h))


# the reference cross-entropy solver stops at ||grad||_F <= 1e-10: far below the project solvers' 1e-6,
# so its own suboptimality (~ g^2 / mu) is negligible; the checks still account for it through
# ``gap_bound`` with the gradient it reports
_REF_GTOL = 1e-10


def convex_minimum(v: np.ndarray, y: np.ndarray, loss: str) -> tuple[float, np.ndarray, float]:
    """(A*, H*, ||grad A(H*)||) of the convex (PA_phi) on features ``v``: lstsq for the squared loss;
    for cross-entropy torch's own L-BFGS (strong Wolfe, from H = 0) polished by damped Newton steps
    (autograd Hessian, pseudo-inverse: A is flat along shifts H + c 1^T and along null(V))."""
    if loss == "squared":
        h = lstsq_coef(v, y)
        _, g = a_value_and_grad(v, y, loss, h)
        return lstsq_risk(v, y), h, float(np.linalg.norm(g))
    risk = a_risk(v, y, loss)
    p = torch.zeros(v.shape[1] * y.shape[1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([p], lr=1.0, max_iter=500, tolerance_grad=_REF_GTOL, tolerance_change=0.0,
                            history_size=30, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        r = risk(p)
        r.backward()
        return r

    opt.step(closure)
    h = p.detach().numpy().copy()
    val, g = a_value_and_grad(v, y, loss, h)
    for _ in range(20):
        if np.linalg.norm(g) <= _REF_GTOL:
            break
        hess = torch.autograd.functional.hessian(risk, torch.as_tensor(h)).numpy()
        step = -np.linalg.pinv((hess + hess.T) / 2, rcond=1e-12, hermitian=True) @ g
        t = 1.0
        while t > 1e-8:
            v_new, g_new = a_value_and_grad(v, y, loss, h + t * step)
            if v_new <= val + 1e-4 * t * float(g @ step) + 4 * EPS * abs(val):
                break
            t /= 2
        h, val, g = h + t * step, v_new, g_new
    h = h.reshape(v.shape[1], y.shape[1])
    val, g = a_value_and_grad(v, y, loss, h)
    return val, h, float(np.linalg.norm(g))


def _range_part(v: np.ndarray, delta: np.ndarray, loss: str) -> np.ndarray:
    """The part of a coefficient difference that the gradient of a (PA_phi) risk can see.

    grad_H A = V^T G lies in range(V^T) (column by column), and for cross-entropy each row of G sums to
    0 (softmax and y are probability vectors), so the rows of grad_H A sum to 0 too: <grad, delta> =
    <grad, P delta> with P the projector onto range(V^T) followed by removing row means.
    """
    u, s, _ = np.linalg.svd(v, full_matrices=False)
    keep = s > max(v.shape) * EPS * s[0]
    vt_basis = np.linalg.svd(v.T @ u[:, keep], full_matrices=False)[0]  # orthonormal basis of range(V^T)
    d = vt_basis @ (vt_basis.T @ delta)
    if loss != "squared":
        d = d - d.mean(axis=1, keepdims=True)
    return d


def gap_bound(v, y, loss, grad, h, h_ref) -> float:
    """An upper bound on A(h) - A(h_ref) from the gradient ``grad`` of A at ``h`` (A convex).

    - squared loss, Polyak-Lojasiewicz: A is a quadratic with Hessian 2 V^T V / N whose smallest nonzero
      eigenvalue is mu = 2 s_min^+(V)^2 / N, and grad lies in its range, so A(h) - A* <= ||grad||^2 / (2 mu)
      = N ||grad||^2 / (4 s_min^+(V)^2), and A* <= A(h_ref).
    - cross-entropy, convexity: A(h_ref) >= A(h) + <grad, h_ref - h>, so A(h) - A(h_ref) <= ||grad|| ||P (h - h_ref)||
      (``_range_part``: only the part of the difference the gradient sees counts).
    """
    if loss == "squared":
        s = np.linalg.svd(v, compute_uv=False)
        s_plus = s[s > max(v.shape) * EPS * s[0]][-1]
        return float(v.shape[0] * np.sum(grad * grad) / (4.0 * s_plus**2))
    return float(np.linalg.norm(grad) * np.linalg.norm(_range_part(v, h - h_ref, loss)))


def induced_coefficients(w_prev, w_l, w_out) -> np.ndarray:
    """The A-ResNEst coefficients of a ResNEst: eq (2) is eq (6) with H_i = W_{L+1} W_i (stacked, (D, N_o))."""
    return np.vstack([w.T @ w_out.T for w in [*w_prev, w_l]])


def theorem1_gradient_bound(w_prev, w_l, w_out, g_l, g_o) -> float:
    """Bound on ||grad_H A(H_induced)|| from the (P_phi) gradient, Theorem 1's argument (derived here).

    With G = dR/dY_hat, U = [v_0..v_{L-1}], B = [W_0..W_{L-1}] (X_{L-1} = U B^T) and W = W_{L+1}:
    dR/dW_L = W^T (G^T V_L), so ||G^T V_L|| <= ||dR/dW_L|| / s_min(W^T) (W full row rank); dR/dW =
    G^T X_{L-1} + (G^T V_L) W_L^T = (G^T U) B^T + (G^T V_L) W_L^T, so ||G^T U|| <= (||dR/dW|| + ||G^T V_L||
    ||W_L||_2) / s_min(B) (B full column rank: Assumption 4). grad_H A = V^T G = [U^T G; V_L^T G].
    inf when W_{L+1} is not of full row rank or Assumption 4 fails.
    """
    b_mat = np.hstack(w_prev)
    if w_out.shape[0] > w_out.shape[1] or b_mat.shape[1] > b_mat.shape[0]:
        return float("inf")
    s_w = np.linalg.svd(w_out, compute_uv=False)[-1]
    s_b = np.linalg.svd(b_mat, compute_uv=False)[-1]
    if s_w <= max(w_out.shape) * EPS * np.linalg.norm(w_out, 2) or s_b <= max(b_mat.shape) * EPS * np.linalg.norm(b_mat, 2):
        return float("inf")
    b = np.linalg.norm(g_l) / s_w
    a = (np.linalg.norm(g_o) + b * np.linalg.norm(w_l, 2)) / s_b
    return float(np.hypot(a, b))


def theorem1_certificate(v, y, loss, w_prev, w_l, w_out, g_l, g_o, h_ref) -> float:
    """Upper bound on R(W_L, W_{L+1}) - A(h_ref) at a near-critical point of (P_phi), from its gradient only.

    R = A(H_induced) (eq (2) = eq (6)); ``theorem1_gradient_bound`` bounds ||grad A(H_induced)|| by the
    (P_phi) gradient, and ``gap_bound`` turns that into a bound on the gap (for cross-entropy through the
    distance to h_ref).
    """
    g = theorem1_gradient_bound(w_prev, w_l, w_out, g_l, g_o)
    if not np.isfinite(g):
        return float("inf")
    h = induced_coefficients(w_prev, w_l, w_out)
    if loss == "squared":
        s = np.linalg.svd(v, compute_uv=False)
        s_plus = s[s > max(v.shape) * EPS * s[0]][-1]
        return float(v.shape[0] * g * g / (4.0 * s_plus**2))
    return float(g * np.linalg.norm(_range_part(v, h - h_ref, loss)))
