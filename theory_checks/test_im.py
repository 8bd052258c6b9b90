"""Theory checks for Hardt & Ma, "Identity Matters in Deep Learning" (review, papers/004).

Claims IM-T1, IM-small, IM-spurious, IM-T2 of CLAIMS.md. Independent computations: torch
autograd in float64 for the risk's gradient, a moment-matched sample for the risk, explicit
matrix products in the test for the end-to-end map, and a torch forward pass written here for the
ReLU residual network of Theorem 2.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.theory.im import (
    condition_gamma,
    count_parameters,
    fit_residual_relu_network,
    global_minimum_risk,
    gradient_descent,
    gradient_domination_constant,
    linear_residual_network,
    max_layer_norm,
    population_risk,
    population_risk_gradient,
    residual_product,
    residual_relu_network_forward,
    small_norm_bound,
    small_norm_global_minimum,
    theorem2_parameter_budget,
)
from analysis.validation import AssumptionError
from theory_checks import strategies as S

EPS = np.finfo(np.float64).eps


# --------------------------------------------------------------------------------------------
# independent computations
# --------------------------------------------------------------------------------------------
def _torch_risk_and_grad(layers: np.ndarray, R: np.ndarray, Sigma: np.ndarray, noise: float):
    """f(A) = tr((R - P) Sigma (R - P)^T) + d noise in torch, and its autograd gradient."""
    A = torch.tensor(layers, dtype=torch.float64, requires_grad=True)
    d = R.shape[0]
    P = torch.eye(d, dtype=torch.float64)
    for i in range(A.shape[0]):
        P = (torch.eye(d, dtype=torch.float64) + A[i]) @ P
    E = P - torch.tensor(R, dtype=torch.float64)
    f = torch.trace(E @ torch.tensor(Sigma, dtype=torch.float64) @ E.T) + d * noise
    f.backward()
    return float(f.detach()), A.grad.numpy()


def _chain(layers: np.ndarray) -> np.ndarray:
    """(I + A_l) ... (I + A_1) by an explicit matrix chain, independent of the library's product."""
    d = layers.shape[1]
    return np.linalg.multi_dot([np.eye(d)] * 2 + [np.eye(d) + a for a in layers[::-1]])


def _problem_scale(layers, R, Sigma) -> float:
    """A bound on the entries' magnitudes in f and grad f: prod(1 + ||A_i||), ||R||, ||Sigma||."""
    growth = float(np.prod(1.0 + np.linalg.norm(layers, 2, axis=(1, 2))))
    return growth * float(np.linalg.norm(Sigma, 2)) * (growth + float(np.linalg.norm(R, 2)))


# --------------------------------------------------------------------------------------------
# IM-T1
# --------------------------------------------------------------------------------------------
@pytest.mark.claim("IM-T1")
@given(d=S.dims(1, 5), depth=st.integers(1, 5), data=st.data())
def test_im_t1_risk_and_gradient_formulas(evidence, d, depth, data):
    """The closed-form risk matches a moment-matched sample and its gradient matches torch autograd.

    IM-T1 setting: f(A) = E||Y - (I + A_l)...(I + A_1) X||^2, Y = R X + xi, X ~ N(0, Sigma);
    review: f(A) = ||E(A) Sigma^{1/2}||^2 + C. Gradient grad_{A_i} f = 2 L_i^T E Sigma R_i^T. IM
    Theorem 1 ("every critical point with max_i ||A_i|| <= tau < 1 is a global minimum") is a
    statement about this gradient, so the other IM-T1 checks rest on it.
    """
    layers = data.draw(S.residual_layer_stacks(d, depth, max_tau=1.5))
    R = data.draw(S.gaussian_matrices(d, d))
    Sigma = data.draw(S.spd_matrices(d, max_condition=10.0))
    noise = data.draw(st.floats(0.0, 2.0))
    gen = np.random.default_rng(data.draw(S.seeds()))

    # Sample whose second moments are exactly Sigma, noise_variance * I and 0 (cross): the sample
    # mean of ||Y - h(X)||^2 then equals the population risk up to round-off, with no formula shared.
    n = 4 * d + 8
    Q, _ = np.linalg.qr(gen.standard_normal((n, 2 * d)))
    w, U = np.linalg.eigh(Sigma)
    X = math.sqrt(n) * Q[:, :d] @ (U * np.sqrt(w)) @ U.T
    xi = math.sqrt(n * noise) * Q[:, d:]
    Y = X @ R.T + xi
    H = X
    for a in layers:
        H = H + H @ a.T
    sample_risk = float(np.mean(np.sum((Y - H) ** 2, axis=1)))
    # the project's network h(x) = (I + A_l)...(I + A_1) x, on the batch, on one row, and as one matrix,
    # is the product written here: round-off of depth d x d products, relative to the sizes involved
    h_tol = 100.0 * (depth + 3) * d * EPS * float(np.max(np.abs(X))) * (1 + max_layer_norm(layers)) ** depth
    assert float(np.max(np.abs(linear_residual_network(layers, X) - H))) <= h_tol
    assert float(np.max(np.abs(linear_residual_network(layers, X[1]) - H[1]))) <= h_tol
    assert float(np.max(np.abs(X @ residual_product(layers).T - H))) <= h_tol

    f = population_risk(layers, R, Sigma, noise)
    # the layers as a list of matrices (A_1 first) are the same network as the (l, d, d) array
    assert population_risk([np.array(a) for a in layers], R, Sigma, noise) == f
    f_torch, g_torch = _torch_risk_and_grad(layers, R, Sigma, noise)
    g = population_risk_gradient(layers, R, Sigma)

    scale = _problem_scale(layers, R, Sigma) + d * noise
    # Products of <= depth + 3 d x d matrices: round-off <= (depth + 3) d eps per entry times the
    # magnitudes bounded by `scale`; 100x covers the accumulation in the sums over n rows.
    tol = 100.0 * (depth + 3) * d * EPS * scale
    assert abs(f - sample_risk) <= tol, (f, sample_risk, tol)
    assert abs(f - f_torch) <= tol, (f, f_torch, tol)
    err = float(np.max(np.abs(g - g_torch)))
    assert err <= tol, (err, tol)
    evidence.add(err / tol)

    evidence.headline(f"gradient vs autograd: max abs error <= {evidence.max():.1e} x its tolerance")


@pytest.mark.claim("IM-T1")
@given(d=S.dims(1, 5), depth=st.integers(1, 6), data=st.data())
def test_im_t1_gradient_lower_bounds_optimality_gap(evidence, d, depth, data):
    """With max ||A_i|| <= tau < 1, ||grad f||^2 >= 4 l (1-tau)^{2(l-1)} sigma_min(Sigma) (f - f*), so grad f = 0 forces f = f*.

    IM Theorem 1: "For every tau < 1, every critical point A of f with max_i ||A_i|| <= tau is a
    global minimum." Its mechanism (review: "using that ||A_i|| are small, show that if
    grad f(A) = 0 this can only be if E(A) = 0"; the paper's eq. (2.3)). The gradient is taken
    from torch autograd, not from the library's formula; f* = d * noise_variance.
    """
    layers = data.draw(S.residual_layer_stacks(d, depth, max_tau=0.95))
    R = data.draw(S.gaussian_matrices(d, d))
    Sigma = data.draw(S.spd_matrices(d, max_condition=10.0))
    noise = 1.0
    f, g = _torch_risk_and_grad(layers, R, Sigma, noise)
    gap = f - global_minimum_risk(R, noise)
    c = gradient_domination_constant(layers, Sigma)
    grad_sq = float(np.sum(g * g))
    # Both sides are computed to relative accuracy ~ (depth + 3) d eps * scale; 100x that margin.
    slack = 100.0 * (depth + 3) * d * EPS * _problem_scale(layers, R, Sigma) ** 2
    assert grad_sq + slack >= c * gap, (grad_sq, c, gap)
    evidence.add(grad_sq / (c * gap), worst="min")

    evidence.headline(f"min ||grad f||^2 / (c (f - f*)) = {evidence.min():.3g} (>= 1 required)")


@pytest.mark.claim("IM-T1")
@given(d=S.dims(2, 5), depth=st.integers(2, 5), data=st.data())
def test_im_t1_gradient_descent_from_small_norms_reaches_global_minimum(evidence, d, depth, data):
    """Gradient descent from max ||A_i|| <= 0.1 reaches f* (gap below 1e-12 of its start) without leaving the tau < 1 region.

    IM Theorem 1 and footnote 5 ("a lower bound on the gradient which does guarantee
    convergence under the assumption that iterates don't jump out of the domain of interest").
    R = expm(M) with ||M|| <= 0.5 has a global minimum of small norm (IM-small), so the domain of
    interest contains one.
    """
    layers = data.draw(S.residual_layer_stacks(d, depth, max_tau=0.1))
    M = data.draw(S.norm_bounded_matrices(d, d, bound=0.5, min_fraction=0.2, max_fraction=1.0))
    R = scipy.linalg.expm(M)
    Sigma = data.draw(S.spd_matrices(d, max_condition=4.0))
    # Step 1 / smoothness with the layer norms bounded by 0.3 along the path (checked below):
    # each block Hessian is <= 2 ||Sigma|| (1.3)^{2(l-1)}, summed over l blocks.
    step = 1.0 / (depth * np.linalg.eigvalsh(Sigma)[-1] * 1.3 ** (2 * (depth - 1)))
    final, gaps = gradient_descent(layers, R, Sigma, step, 300)
    assert max_layer_norm(final) < 0.3
    # Empirically ~1e-19 after 300 steps (linear rate, PL inequality); 1e-12 leaves 7 orders of
    # margin and is still far below any non-global critical value (these have gap >= O(1)).
    assert gaps[-1] <= 1e-12 * gaps[0], (gaps[0], gaps[-1])
    f_end, g_end = _torch_risk_and_grad(final, R, Sigma, 0.0)
    assert f_end <= 1e-12 * gaps[0] + 1e-15
    evidence.add(gaps[-1] / gaps[0])

    evidence.headline(f"after 300 steps final/initial gap <= {evidence.max():.1e}")


# --------------------------------------------------------------------------------------------
# IM-spurious (and the norm assumption of IM-T1)
# --------------------------------------------------------------------------------------------
def _all_minus_identity_point(d: int, depth: int, R: np.ndarray, Sigma: np.ndarray):
    layers = np.stack([-np.eye(d)] * depth)
    f, g = _torch_risk_and_grad(layers, R, Sigma, 1.0)
    return layers, f, g


@pytest.mark.claim("IM-spurious")
@given(d=S.dims(1, 5), depth=st.integers(3, 8), data=st.data())
def test_im_spurious_all_minus_identity_is_a_non_global_critical_point(evidence, d, depth, data):
    """With l >= 3 and every A_i = -I the product is 0 and the autograd gradient is exactly 0, yet f - f* = ||R Sigma^{1/2}||^2 > 0.

    IM-spurious: "without the norm bound, spurious critical points exist (e.g. with l >= 3, every
    A_i = -I makes the product zero and the gradient zero)". Note: l = 2 already gives a zero
    gradient (each partial derivative keeps one zero factor); l >= 3 also makes the Hessian zero
    (every second derivative keeps a zero factor), so the point is not even a strict saddle.
    """
    R = data.draw(S.gaussian_matrices(d, d))
    Sigma = data.draw(S.spd_matrices(d, max_condition=10.0))
    layers, f, g = _all_minus_identity_point(d, depth, R, Sigma)
    assert np.array_equal(_chain(layers), np.zeros((d, d)))
    assert np.array_equal(g, np.zeros_like(g))  # exact: every term is a product with a 0 matrix
    gap = f - global_minimum_risk(R, 1.0)
    expected = float(np.trace(R @ Sigma @ R.T))
    # A Gaussian R is invertible a.s. and Sigma is SPD, so the gap is > 0; relative round-off ~ d eps.
    assert gap > 0 and abs(gap - expected) <= 10 * d * EPS * (expected + d)
    # The library gradient agrees (it is exact zero by the same mechanism).
    assert np.array_equal(population_risk_gradient(layers, R, Sigma), np.zeros_like(g))
    evidence.add(gap, worst="min")

    evidence.headline(f"gradient exactly 0 and f - f* = ||R Sigma^1/2||_F^2 >= {evidence.min():.3g} > 0")


def _scaled_identity_check(t: float, depth: int, R: np.ndarray, Sigma: np.ndarray) -> float:
    """At A_i = -t I (tau = t < 1), the project's ||grad f||^2 >= c (f - f*) with the project's c; returns
    ||grad f||^2 / (c (f - f*)).

    There L_i, R_i and the product are powers of (1 - t) times I, so grad_{A_i} f = 2 (1 - t)^{l-1} E Sigma
    with E = (1 - t)^l I - R: the powers carry a relative error <= l EPS, E Sigma <= d EPS |E| |Sigma|
    entrywise, so ||d grad_i||_F <= 2 (1 - t)^{l-1} g || |E| |Sigma| ||_F, g = (l + d + 2) EPS. The gap
    f - f* = sum (E Sigma) * E + d - d rounds by <= g sum |E| |Sigma| |E| + 2 d EPS, and c (a power and
    sigma_min(Sigma), cond(Sigma) <= 10) by <= (2 l + 4 + 10 d) EPS relative. Factor 2 on the slack.
    """
    d = R.shape[0]
    layers = np.stack([-t * np.eye(d)] * depth)
    c = gradient_domination_constant(layers, Sigma)
    grad = population_risk_gradient(layers, R, Sigma)
    gap = population_risk(layers, R, Sigma, 1.0) - global_minimum_risk(R, 1.0)
    grad_sq = float(np.sum(grad * grad))
    E = np.abs((1 - t) ** depth * np.eye(d) - R)
    g = (depth + d + 2) * EPS
    d_grad = math.sqrt(depth) * 2 * (1 - t) ** (depth - 1) * g * float(np.linalg.norm(E @ np.abs(Sigma)))
    d_gap = g * float(np.sum((E @ np.abs(Sigma)) * E)) + 2 * d * EPS
    slack = 2 * (2 * math.sqrt(grad_sq) * d_grad + d_grad ** 2 + c * d_gap + c * gap * (2 * depth + 4 + 10 * d) * EPS)
    assert grad_sq + slack >= c * gap, f"||grad||^2 = {grad_sq:.6g} < c (f - f*) = {c * gap:.6g} at A_i = -{t} I"
    return grad_sq / (c * gap)


@pytest.mark.claim("IM-T1", role="assumption")
@given(d=S.dims(1, 5), depth=st.integers(3, 8), t=st.floats(0.0, 0.95), data=st.data())
def test_im_t1_norm_bound_is_needed_at_tau_one(evidence, d, depth, t, data):
    """Dropping tau < 1 (max ||A_i|| = 1 exactly, A_i = -I): the project's gradient is exactly 0 while its risk exceeds f*, so no gradient-domination constant c > 0 exists; with tau < 1 the same functions satisfy ||grad f||^2 >= c (f - f*).

    IM Theorem 1 requires max_i ||A_i|| <= tau < 1; at tau = 1 the factors I + A_i may be singular
    and the gradient lower bound of the proof degenerates (constant 4 l (1 - tau)^{2(l-1)} = 0).
    The counterexample is computed by the project (``population_risk``, ``population_risk_gradient``),
    which refuses a constant there (``gradient_domination_constant``). Companion, the assumption
    restored: at random layers with tau <= 0.95 the project's risk and gradient are torch's, and at
    A_i = -t I (t <= 0.95) the project's inequality holds, with Sigma as drawn and with
    Sigma = sigma_min(Sigma) I, where it is an equality (so a larger c would fail).
    """
    R = data.draw(S.gaussian_matrices(d, d))
    Sigma = data.draw(S.spd_matrices(d, max_condition=10.0))
    layers = np.stack([-np.eye(d)] * depth)
    assert max_layer_norm(layers) == 1.0
    f = population_risk(layers, R, Sigma, 1.0)
    g = population_risk_gradient(layers, R, Sigma)
    # Exact: each gradient term is a product with a factor I + A_j = 0 (l >= 3 leaves one on a side).
    assert not np.any(g), "the project's gradient at A_i = -I is not 0"
    gap = f - global_minimum_risk(R, 1.0)
    expected = float(np.trace(R @ Sigma @ R.T))
    # A Gaussian R is invertible a.s., so gap = tr(R Sigma R^T) >= sigma_min(Sigma) ||R||_F^2 > 0; the
    # project's gap is E = -R exactly, rounded in a d-term sum (relative d EPS) and in adding/removing d.
    assert gap > 1e-8 * np.linalg.norm(R) ** 2
    assert abs(gap - expected) <= 10 * d * EPS * (expected + d)
    with pytest.raises(AssumptionError, match="tau < 1"):
        gradient_domination_constant(layers, Sigma)
    # Companion 1: the project's risk and gradient are right where tau < 1 (as in the first IM-T1 test).
    stack = data.draw(S.residual_layer_stacks(d, depth, max_tau=0.95))
    f_torch, g_torch = _torch_risk_and_grad(stack, R, Sigma, 1.0)
    tol = 100.0 * (depth + 3) * d * EPS * (_problem_scale(stack, R, Sigma) + d)
    assert abs(population_risk(stack, R, Sigma, 1.0) - f_torch) <= tol
    assert float(np.max(np.abs(population_risk_gradient(stack, R, Sigma) - g_torch))) <= tol
    # Companion 2: the inequality holds at A_i = -t I, and is tight for Sigma = sigma_min I.
    ratio = _scaled_identity_check(t, depth, R, Sigma)
    tight = _scaled_identity_check(t, depth, R, float(np.linalg.eigvalsh(Sigma)[0]) * np.eye(d))
    evidence.add(gap, "f - f* at A_i = -I (gradient exactly 0)", worst="min")
    evidence.add(min(ratio, tight), "||grad f||^2 / (c (f - f*)) at A_i = -t I, t <= 0.95", worst="min")
    evidence.headline(f"A_i = -I (tau = 1): the project's gradient is exactly 0 yet f - f* >= "
                      f"{evidence.min('f - f* at A_i = -I (gradient exactly 0)'):.3g}; at tau = t <= 0.95 its "
                      f"||grad f||^2 / (c (f - f*)) >= {evidence.min('||grad f||^2 / (c (f - f*)) at A_i = -t I, t <= 0.95'):.6g}")


# --------------------------------------------------------------------------------------------
# IM-small
# --------------------------------------------------------------------------------------------
@pytest.mark.claim("IM-small")
@given(d=S.dims(1, 6), extra=st.integers(0, 30), data=st.data())
def test_im_small_construction_is_global_minimum_within_bound(evidence, d, extra, data):
    """For det R > 0 and l >= 3 gamma our polar construction gives prod(I + A_i*) = R with max ||A_i*|| <= (4 pi + 3 gamma)/l.

    IM footnote 4: "there exists a global minimum A* of the population risk fulfilling
    max_i ||A_i*|| <= (4 pi + 3 gamma)/l whenever l >= 3 gamma", gamma = max |log sigma(R)|.
    Hardt & Ma assume det R > 0 (the review omits it; see the next test). A* is a global minimum
    because prod(I + A_i*) = R makes f(A*) = f* (checked on the risk as well).
    """
    R = data.draw(S.positive_determinant_matrices(d, max_gamma=3.0))
    gamma = condition_gamma(R)
    depth = max(1, math.ceil(3 * gamma)) + extra
    layers = small_norm_global_minimum(R, depth)
    assert layers.shape == (depth, d, d)
    prod = _chain(layers)
    # The factors are rotations (norm 1) and roots of P (norm e^{gamma/k}), so every partial
    # product has norm <= e^gamma and the chain's round-off is <= l d eps e^gamma; 100x margin.
    tol = 100.0 * depth * d * EPS * math.exp(gamma)
    assert np.max(np.abs(prod - R)) <= tol, (np.max(np.abs(prod - R)), tol)
    norms = np.linalg.norm(layers, 2, axis=(1, 2))
    bound = (4 * math.pi + 3 * gamma) / depth
    assert norms.max() <= bound * (1 + 1e-12), (norms.max(), bound)
    Sigma = np.eye(d)
    # f - f* = ||prod - R||_F^2 <= d^2 tol^2.
    assert population_risk(layers, R, Sigma, 1.0) - global_minimum_risk(R, 1.0) <= d * d * tol**2 + 1e-20
    evidence.add(float(norms.max() / bound))

    evidence.headline(f"prod = R and max ||A_i*|| / ((4 pi + 3 gamma)/l) <= {evidence.max():.3f}")


@pytest.mark.claim("IM-small", role="assumption")
@given(d=S.dims(1, 5), depth=st.integers(14, 40), data=st.data())
def test_im_small_needs_positive_determinant(evidence, d, depth, data):
    """For det R < 0 no layers with max ||A_i|| <= (4 pi + 3 gamma)/l < 1 reach R: det(I + A_i) > 0 forces f - f* >= sigma_min(Sigma) sigma_min(R)^2.

    The assumption det R > 0 of Hardt & Ma Thm 2.1, which the review's footnote 4 (and so IM-small
    as catalogued) leaves out. R = a reflection (det -1, gamma = 0): the bound 4 pi / l < 1 for
    l >= 13. Every I + A_i with ||A_i|| < 1 has positive determinant, so the product P has
    det P > 0 and the segment from P to R crosses a singular matrix: ||P - R|| >= sigma_min(R) = 1,
    hence f - f* >= sigma_min(Sigma). Sampled layers at the bound confirm it, and the construction
    refuses such R.
    """
    gen = np.random.default_rng(data.draw(S.seeds()))
    v = gen.standard_normal(d)
    R = np.eye(d) - 2.0 * np.outer(v, v) / (v @ v)
    bound = small_norm_bound(R, depth)
    assert bound < 1.0
    layers = data.draw(S.residual_layer_stacks(d, depth, max_tau=bound))
    Sigma = data.draw(S.spd_matrices(d, max_condition=10.0))
    assert np.linalg.det(_chain(layers)) > 0
    gap = population_risk(layers, R, Sigma, 1.0) - global_minimum_risk(R, 1.0)
    floor = float(np.linalg.eigvalsh(Sigma)[0])
    assert gap >= floor * (1 - 1e-9), (gap, floor)
    with pytest.raises(AssumptionError, match="det R > 0"):
        small_norm_global_minimum(R, depth)
    evidence.add(gap / floor, worst="min")

    evidence.headline(f"det R = -1: f - f* >= {evidence.min():.3g} sigma_min(Sigma) > 0 for layers within the bound")


# --------------------------------------------------------------------------------------------
# IM-T2
# --------------------------------------------------------------------------------------------
def _torch_forward(net, x: np.ndarray) -> np.ndarray:
    """The network of Theorem 2 evaluated with torch (an independent forward pass)."""
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    h = t(x) @ t(net.projection).T
    for j in range(net.depth):
        h = h + torch.relu(h @ t(net.U[j]).T + t(net.b[j])) @ t(net.V[j]).T
    return (torch.relu(h @ t(net.U_out).T + t(net.b_out)) @ t(net.V_out).T).numpy()


@st.composite
def _separated_unit_points(draw, n: int, d: int):
    """n distinct directions of integer vectors in [-4, 4]^d, normalised.

    Integer directions keep rho bounded below (about 1 / (16 d) for distinct ones), so the fit's
    round-off tolerance, which grows like 1 / rho^2, stays meaningful without filtering.
    """
    gen = S.rng(draw(S.seeds()))
    cand = gen.integers(-4, 5, size=(8 * n, d)).astype(np.float64)
    cand = cand[np.any(cand != 0, axis=1)]
    cand /= np.linalg.norm(cand, axis=1, keepdims=True)
    _, first = np.unique(np.round(cand, 12), axis=0, return_index=True)
    return cand[np.sort(first)[:n]]


@pytest.mark.claim("IM-T2")
@given(n=st.integers(4, 48), r=st.integers(2, 8), data=st.data())
def test_im_t2_residual_relu_network_fits_separated_points(evidence, n, r, data):
    """Our Theorem-2 construction outputs the exact one-hot label of every one of n unit-norm points, with ceil(n/k) layers and <= 16 (n log2 n + r^2) parameters.

    IM Theorem 2: "There exists a residual network with O(n log n + r^2) parameters that
    perfectly fits the training data" (points separated by rho > 0; layers h_j(x) = x +
    V_j relu(U_j x + b_j), eq. (1); k = O(log n), l = ceil(n/k)). Width k = ceil(log2 n) + 1; the
    constant 16 is derived in ``theorem2_parameter_budget``. The fit is checked with a torch
    forward pass written here.
    """
    width = math.ceil(math.log2(n)) + 1
    d = data.draw(st.integers(3, width))
    x = data.draw(_separated_unit_points(n, d))
    assert x.shape == (n, d)
    labels = S.rng(data.draw(S.seeds())).integers(0, r, size=n)
    net = fit_residual_relu_network(x, labels, width=width, num_classes=r, seed=0)
    out = _torch_forward(net, x)
    rho = _min_dist(x)
    # Each layer divides by a margin >= rho^2 / 4 (unit vectors: ||p||^2 - <p, q> = ||p - q||^2 / 2),
    # so round-off grows like (depth + 1) k eps / rho^2 per output; 100x margin.
    tol = 100.0 * (net.depth + 1) * width * EPS * 4.0 / rho**2
    # the project's forward pass is the same network: equal to the torch pass within the same round-off
    assert float(np.max(np.abs(residual_relu_network_forward(net, x) - out))) <= tol
    # without num_classes the class count is read off the labels (max + 1), the rest unchanged
    implied = fit_residual_relu_network(x, labels, width=width, seed=0)
    assert residual_relu_network_forward(implied, x).shape == (n, int(labels.max()) + 1)
    err = float(np.max(np.abs(out - np.eye(r)[labels])))
    assert err <= tol, (err, tol)
    assert np.array_equal(out.argmax(axis=1), labels)
    assert net.depth == math.ceil(n / width)
    params = count_parameters(net)["trainable"]
    assert params == net.depth * (2 * width**2 + width) + r * width + r + r * r
    assert params <= theorem2_parameter_budget(n, r), (params, theorem2_parameter_budget(n, r))
    evidence.add(err, "fit error")
    evidence.add(params / (n * math.log2(n) + r * r), "params / (n log2 n + r^2)")

    evidence.headline(f"one-hot fit max err {evidence.max('fit error'):.1e}; params / (n log2 n + r^2) "
                    f"<= {evidence.max('params / (n log2 n + r^2)'):.2f}")


def _min_dist(x: np.ndarray) -> float:
    dist = np.linalg.norm(x[:, None] - x[None], axis=2) + np.diag(np.full(len(x), np.inf))
    return float(dist.min())


@pytest.mark.claim("IM-T2")
@given(seed=S.seeds())
def test_im_t2_fits_after_random_projection(evidence, seed):
    """With inputs in R^30 and width k = 7 < d (random first-layer projection, review footnote 7) the construction still fits all 40 points exactly.

    IM Theorem 2: "a ReLU residual net with O(n log n + r^2) parameters fits n points separated by
    rho > 0 perfectly", for inputs of any dimension once a random projection maps them to width k.
    The fit is checked with the torch forward pass written here.
    """
    gen = np.random.default_rng(seed)
    n, d, r, width = 40, 30, 5, 7
    x = gen.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = gen.integers(0, r, n)
    net = fit_residual_relu_network(x, labels, width=width, num_classes=r, seed=int(gen.integers(2**32)))
    out = _torch_forward(net, x)
    err = float(np.max(np.abs(out - np.eye(r)[labels])))
    # rho ~ 1 for random unit vectors in R^30; the derivation of the previous test gives ~1e-11 (measured
    # <= 3e-12 over 300 seeds), so 1e-9 is round-off while a point the net misses is off by O(1).
    assert err <= 1e-9
    assert np.array_equal(out.argmax(axis=1), labels)
    params = count_parameters(net)
    assert params["trainable"] <= theorem2_parameter_budget(n, r)
    evidence.add(err, "fit error")
    evidence.add(net.depth, "layers")
    evidence.add(params["trainable"], "params")
    evidence.headline(f"d=30 -> k=7: exact fit (max err {evidence.max('fit error'):.1e}), {evidence.min('layers'):.0f}.."
                      f"{evidence.max('layers'):.0f} layers, <= {evidence.max('params'):.0f} params "
                      f"(budget {theorem2_parameter_budget(n, r):.0f})")


@pytest.mark.claim("IM-T2", role="assumption")
@given(n=st.integers(3, 8), d=st.integers(2, 4), seed=S.seeds())
def test_im_t2_separation_is_needed(evidence, n, d, seed):
    """With rho = 0 (one input carrying two labels) no network fits: any map gives both copies the same output, and the construction refuses.

    Companion: the project's network fitted on the distinct points is exact on them (so the miss on
    the copy is the coincidence, not a bad fit).
    """
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[n - 1] = x[0]
    labels = gen.integers(0, 3, n)
    labels[n - 1] = (labels[0] + 1 + gen.integers(2)) % 3  # the copy of x_0 carries another label
    # Fit the n - 1 distinct points, then the copy of x_0 gets x_0's output, hence x_0's label.
    net = fit_residual_relu_network(x[:-1], labels[:-1], width=4, num_classes=3)
    out = _torch_forward(net, x)
    assert np.array_equal(out[:-1].argmax(axis=1), labels[:-1])
    assert np.array_equal(out[n - 1], out[0]) and out[n - 1].argmax() != labels[n - 1]
    with pytest.raises(AssumptionError, match="coincide"):
        fit_residual_relu_network(x, labels, width=4, num_classes=3)
    evidence.add(n, "points", worst="min")
    evidence.headline("rho = 0: the copy of x_0 gets x_0's output, hence x_0's label, never its own; "
                      "the construction refuses coinciding points")
