"""Theory checks for ND: Shen et al., "Newton design" (papers/001_7d8a77c69ed28a39.txt).

One test (or a small group) per claim id of CLAIMS.md: ND-P1, ND-hess, ND-neumann,
ND-linear-rate, ND-resnet, ND-cg, ND-block. References are independent of the formulas under
test: torch autograd in float64, central finite differences, dense solves and inverses.

Every test puts ``@given`` on itself (``pytest --hypothesis-show-statistics`` sees it) and records
one value per example through the ``evidence`` fixture (theory_checks/evidence.py).

Problems (A, x) whose formulas involve the ReLU mask Diag[Phi'(Ax)] come from
``nd_mixed_problems``: at least one active and one inactive unit, asserted in each test
(``_mixed_mask``), so that no check passes trivially with D = 0 (every formula then collapses to
one in A alone) or hides a dropped mask with D = I.

Counterexamples (role "assumption") run the project's own function without the assumption and
show its conclusion fail, next to a companion check that the same function is right once the
assumption holds: a broken function fails one of the two.

Tolerances are written as multiples of the float64 unit round-off EPS times the size of the
quantities involved (n, norms, condition numbers); each is justified beside its assertion.
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from analysis.theory import nd as nd
from analysis.validation import AssumptionError, check_square
from theory_checks.strategies import (
    dims,
    gaussian_matrices,
    nd_mixed_problems,
    nd_problems,
    rng,
    seeds,
    symmetric_matrices,
)

EPS = np.finfo(np.float64).eps


# --- independent references --------------------------------------------------------------------
def _F_torch(A: np.ndarray):
    At = torch.tensor(A, dtype=torch.float64)

    def F(x):
        Ax = At @ x
        # P(t) = relu(t)^2 / 2 is the antiderivative of ReLU with P(0) = 0 (eq (3)).
        return 0.5 * (x @ Ax) - 0.5 * torch.sum(torch.relu(Ax) ** 2)

    return F


def autograd_gradient(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(_F_torch(A)(xt), xt)
    return g.numpy()


def autograd_hessian(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    xt = torch.tensor(x, dtype=torch.float64)
    return torch.autograd.functional.hessian(_F_torch(A), xt).numpy()


def spec(M: np.ndarray) -> float:
    return float(np.linalg.norm(M, 2))


def _mixed_mask(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Diag[Phi'(Ax)] as a 0/1 vector, computed here; asserts 1 <= #active <= n - 1 (a real mask)."""
    d = (A @ x > 0).astype(float)
    assert 0 < d.sum() < d.size, f"mask {d}: every unit {'in' if d.sum() == 0 else ''}active, the check would be trivial"
    # the project's mask is the same 0/1 vector (exact: a comparison of the same product's signs)
    np.testing.assert_array_equal(nd.active_mask(A, x), d)
    return d


def _square_only(A, assumption=None):
    """``nd._sym`` (the symmetry guard of eq (4) / (6)) lifted: the formula then runs on any square A."""
    return check_square("A", A)


# --- ND-P1 -------------------------------------------------------------------------------------
@pytest.mark.claim("ND-P1")
@given(t=st.lists(st.floats(-10.0, 10.0).filter(lambda v: abs(v) > 1e-3), min_size=1, max_size=20))
def test_nd_p1_relu_antiderivative_has_derivative_relu(evidence, t):
    """The project's P (``relu_antiderivative``) of eq (3) has P' = Phi = ReLU and P(0) = 0.

    Reference: central differences with h = 1e-5, away from the kink (|t| > 1e-3 > h): P is a
    quadratic on each side, so the difference quotient is exact up to rounding, eps |P| / h <= 2e-16
    * 50 / 1e-5 ~ 1e-9 (tolerance 1e-8).
    """
    t = np.asarray(t)
    h = 1e-5
    fd = (nd.relu_antiderivative(t + h) - nd.relu_antiderivative(t - h)) / (2 * h)
    err = float(np.max(np.abs(fd - np.maximum(t, 0.0))))
    assert err <= 1e-8
    assert nd.relu_antiderivative(np.zeros(1))[0] == 0.0
    evidence.add(err, "max |P'(t) - ReLU(t)| by central differences")


@pytest.mark.claim("ND-P1")
@given(A=symmetric_matrices(max_abs_eig=2.0, min_abs_eig=0.1), seed=seeds())
def test_nd_p1_gradient_formula(evidence, A, seed):
    """grad F(x) = A[x - Phi(Ax)] (eq (4)) matches torch autograd for symmetric A and any x.

    Prop. 1: "If A in S^n, x in R^n, Phi is an ReLU ... grad F(x) = A[x - Phi(Ax)]" for
    F(x) = x^T A x / 2 - 1^T P(Ax), eq (3)-(4).
    """
    n = A.shape[0]
    x = 2.0 * rng(seed).standard_normal(n)
    g = nd.gradient(A, x)
    ref = autograd_gradient(A, x)
    # Both sides are sums of n products of size <= ||A|| ||x|| and ||A||^2 ||x||; each rounds to
    # within n EPS of that size (standard dot-product bound), times 4 for two products each side.
    scale = spec(A) * np.linalg.norm(x) * (1.0 + spec(A))
    err = np.linalg.norm(g - ref)
    assert err <= 4 * n * EPS * scale, f"|grad - autograd| = {err:.3g}, scale {scale:.3g}"
    evidence.add(err / scale, "|eq(4) - autograd| / scale")


@pytest.mark.claim("ND-P1")
@given(A=symmetric_matrices(max_abs_eig=1.0, min_abs_eig=0.2), seed=seeds())
def test_nd_p1_fixed_point_identity(evidence, A, seed):
    """x - A^{-1} grad F(x) = Phi(Ax) (eq (5)): the PlainNet step is a quasi-Newton step with H = A^{-1}.

    Prop. 1 proof, eq (5): x_{k+1} = x_k - A^{-1} grad F(x_k) = Phi(Ax_k). The gradient comes from
    autograd and A^{-1} g from a dense solve, not from eq (4).
    """
    n = A.shape[0]
    x = 2.0 * rng(seed).standard_normal(n)
    step = x - np.linalg.solve(A, autograd_gradient(A, x))
    expected = np.maximum(A @ x, 0.0)
    # A solve with cond(A) <= 1 / 0.2 = 5 loses at most cond * n * EPS relatively (backward
    # stability); the gradient's own error (above) is of the same order; x's size sets the scale.
    tol = 10 * n * EPS * (1 / 0.2) * np.linalg.norm(x) * 4
    err = np.linalg.norm(step - expected)
    assert err <= tol, f"|x - A^-1 grad F - Phi(Ax)| = {err:.3g} > {tol:.3g}"
    # m = 0 in eq (15) computes x + (Phi(Ax) - x): exact up to two roundings of size |x| + |Ax|.
    assert np.allclose(nd.quasi_newton_step(A, x, 0), expected, rtol=0, atol=4 * EPS * np.linalg.norm(x) * 2)
    evidence.add(err / np.linalg.norm(x), "|x - A^-1 grad F(x) - Phi(Ax)| / |x|")


@pytest.mark.claim("ND-P1", role="assumption")
@given(B=gaussian_matrices(rows=6, cols=6), seed=seeds())
def test_nd_p1_gradient_needs_symmetric_a(evidence, B, seed):
    """With A non-symmetric, the project's eq (4), A[x - Phi(Ax)], is not the gradient of F: it misses autograd by (A - A^T)(x/2 - Phi(Ax)); on the symmetric part of A it is exact.

    The true gradient is (A + A^T) x / 2 - A^T Phi(Ax); it differs from eq (4) by
    (A - A^T)(x / 2 - Phi(Ax)), non-zero for generic x once A != A^T. Prop. 1 assumes A in S^n.
    ``nd.gradient`` refuses such A; with its guard lifted (``_square_only``) the project's formula
    itself runs on A, so the counterexample is the project's, not one re-typed here. Companion:
    the same function on S = (A + A^T)/2 (the assumption holds) matches autograd to round-off.
    """
    A = B + 0.5 * (B - B.T)  # a skew part at least as large as B's own, so the asymmetry is not round-off
    n = A.shape[0]
    x = rng(seed).standard_normal(n)
    with pytest.raises(AssumptionError, match="A must be symmetric"):
        nd.gradient(A, x)
    with mock.patch.object(nd, "_sym", _square_only):
        formula = nd.gradient(A, x)
    ref = autograd_gradient(A, x)
    miss = formula - ref
    rel = np.linalg.norm(miss) / np.linalg.norm(ref)
    # Round-off on either side is <= 4 n EPS scale (see the symmetric test), ~5e-15 relative here;
    # 1e-6 is far above it, so a gap this big is a genuine counterexample, not noise.
    assert rel > 1e-6, f"eq (4) unexpectedly matched autograd for non-symmetric A (rel gap {rel:.2e})"
    # The miss is the predicted one: formula, autograd and the prediction each carry <= 4 n EPS scale.
    scale = spec(A) * np.linalg.norm(x) * (1.0 + spec(A))
    predicted = (A - A.T) @ (x / 2 - np.maximum(A @ x, 0.0))
    assert np.linalg.norm(miss - predicted) <= 12 * n * EPS * scale
    # Companion: the assumption restored, the same function is right (4 n EPS scale, as above).
    S = (A + A.T) / 2
    exact = np.linalg.norm(nd.gradient(S, x) - autograd_gradient(S, x))
    assert exact <= 4 * n * EPS * scale, f"eq (4) on the symmetric part misses autograd by {exact:.3g}"
    evidence.add(rel, "relative gap eq(4) vs autograd, non-symmetric A", worst="min")
    evidence.add(exact / scale, "same function on (A + A^T)/2: |eq(4) - autograd| / scale")


@pytest.mark.claim("ND-P1", role="assumption")
@given(S=symmetric_matrices(n=5, max_abs_eig=1.0), seed=seeds(), t=st.floats(2.0, 100.0))
def test_nd_p1_problem_unbounded_without_positive_definite_a(evidence, S, seed, t):
    """With A only symmetric (Prop. 1's assumption), problem (3) can be unbounded below on x >= 0, so Phi(Ax_k) -> 0 finds a stationary point, not a minimiser.

    Prop. 1 says the iteration "solves" min_{x >= 0} F(x). F is 2-homogeneous (F(tx) = t^2 F(x),
    t > 0), so one feasible v with F(v) < 0 makes inf F = -inf. Sec 3.3's positive definite A
    with ||A|| < 1 excludes this (then F(x) >= (1 - ||A||) x^T A x / 2 >= 0 = F(0)).
    """
    v = np.abs(rng(seed).standard_normal(5)) + 0.1
    # Push v^T A v below 0 along v v^T, then rescale to ||A|| = 0.9 (a positive scale keeps the sign).
    A = S - (float(v @ S @ v) / float(v @ v) ** 2 + 1.0 / float(v @ v)) * np.outer(v, v)
    A = 0.9 * A / spec(A)
    Fv = nd.objective(A, v)
    assert Fv < 0.0
    # F(t v) = t^2 F(v) exactly up to rounding (relative 10 n EPS): F goes to -inf along t v.
    assert nd.objective(A, t * v) == pytest.approx(t * t * Fv, rel=50 * EPS * 5)
    x = v.copy()
    for _ in range(200):
        x = nd.quasi_newton_step(A, x, 0)
    # ||x_{k+1}|| <= ||A|| ||x_k|| = 0.9 ||x_k||: after 200 steps ||x|| <= 0.9^200 ||v|| ~ 7e-10 ||v||.
    assert np.linalg.norm(x) <= 0.9 ** 200 * np.linalg.norm(v) * (1 + 1e-12)
    evidence.add(Fv / float(v @ v), "F(v) / ||v||^2 on a feasible v >= 0")


# --- ND-hess -----------------------------------------------------------------------------------
@pytest.mark.claim("ND-hess")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.1))
def test_nd_hess_matches_autograd(evidence, problem):
    """Hessian A - A Diag[Phi'(Ax)] A (eq (6)) equals torch's autograd Hessian off the ReLU kinks, with some units active and some not.

    Eq (6): grad^2 F(x) = A - A Diag[Phi'(Ax)] A. x is drawn with every |(Ax)_i| >= 0.1, so ReLU's
    derivative is unambiguous at x.
    """
    A, x = problem
    n = A.shape[0]
    d = _mixed_mask(A, x)
    H = nd.hessian(A, x)
    ref = autograd_hessian(A, x)
    # Entries are dot products of length n of size <= ||A||^2: n EPS ||A||^2 each, x4 for two terms.
    tol = 4 * n * EPS * max(1.0, spec(A)) ** 2
    err = np.max(np.abs(H - ref))
    assert err <= tol, f"max |eq(6) - autograd| = {err:.3g} > {tol:.3g}"
    evidence.add(err, "|eq(6) - autograd Hessian|")
    evidence.add(d.mean(), "fraction of units active", worst="min")


@pytest.mark.claim("ND-hess")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.1))
def test_nd_hess_matches_finite_differences(evidence, problem):
    """Central differences of the autograd gradient reproduce eq (6)'s Hessian to round-off away from kinks.

    Eq (6). Margin: every |(Ax)_i| >= delta = 0.1. With step h = delta / (2 ||A||_2),
    |(A (x +- h e_j))_i - (Ax)_i| <= h ||A||_2 = delta / 2 < delta, so x +- h e_j stay in the region where
    Diag[Phi'(Ax)] is constant and F is exactly quadratic: the central difference of the gradient
    then has no truncation error, only round-off.
    """
    A, x = problem
    n = A.shape[0]
    d = _mixed_mask(A, x)
    delta = float(np.min(np.abs(A @ x)))
    h = delta / (2 * spec(A))
    fd = np.empty((n, n))
    for j in range(n):
        e = np.zeros(n)
        e[j] = h
        fd[:, j] = (autograd_gradient(A, x + e) - autograd_gradient(A, x - e)) / (2 * h)
    H = nd.hessian(A, x)
    # Round-off: each gradient carries ~4 n EPS ||A|| ||x|| (1 + ||A||) error (see ND-P1), divided by 2h.
    gscale = spec(A) * (np.linalg.norm(x) + h) * (1 + spec(A))
    tol = 2 * 4 * n * EPS * gscale / (2 * h)
    err = np.max(np.abs(H - fd))
    assert err <= tol, f"max |eq(6) - FD| = {err:.3g} > {tol:.3g} (h = {h:.3g})"
    evidence.add(err / tol, "|eq(6) - central FD| / tolerance")
    evidence.add(d.mean(), "fraction of units active", worst="min")


# --- ND-neumann --------------------------------------------------------------------------------
def _dense_inverse_hessian(A, x):
    return np.linalg.inv(autograd_hessian(A, x))


def _inverse_roundoff(H: np.ndarray, A: np.ndarray) -> float:
    """Bound on |inv(autograd Hessian) - H^{-1}|_2: the inverse's own n^2 EPS cond(H) ||H^{-1}|| (normwise
    form of LAPACK's componentwise bound) plus ||H^{-1}||^2 times the Hessian's round-off
    n^2 EPS ||A|| (1 + ||A||) (two length-n products, see ND-hess)."""
    n = A.shape[0]
    s = np.linalg.svd(H, compute_uv=False)
    inv_norm = 1.0 / s[-1]
    return n * n * EPS * (s[0] / s[-1] * inv_norm + inv_norm ** 2 * spec(A) * (1 + spec(A)))


@pytest.mark.claim("ND-neumann")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.1))
def test_nd_neumann_inverse_hessian_matches_dense_inverse(evidence, problem):
    """``nd.inverse_hessian``, [I - Diag[Phi'(Ax)] A]^{-1} A^{-1} (first line of eq (7)), equals the dense inverse of the autograd Hessian, for ||A||_2 up to 2.

    Eq (7), first line: [grad^2 F(x)]^{-1} = [I - Diag[Phi'(Ax)] A]^{-1} A^{-1}. It needs only
    U = I - DA invertible, not ||A|| < 1, so A's eigenvalues reach 2 in modulus. Examples with
    sigma_min(U) < 0.05 are rejected (about one in ten): there the inverse Hessian is nearly singular
    and the round-off bound below grows past what the check can resolve.
    """
    A, x = problem
    n = A.shape[0]
    d = _mixed_mask(A, x)
    U = np.eye(n) - d[:, None] * A
    sU = np.linalg.svd(U, compute_uv=False)
    assume(sU[-1] >= 0.05)
    H = autograd_hessian(A, x)
    ref = np.linalg.inv(H)
    got = nd.inverse_hessian(A, x)
    sA = np.linalg.svd(A, compute_uv=False)
    # Reference: _inverse_roundoff. The project's two steps: inv(A) (n^2 EPS cond(A) ||A^{-1}||, then
    # multiplied by ||U^{-1}||) and a solve with U (n^2 EPS cond(U) ||U^{-1}|| ||A^{-1}||). Factor 2 for
    # the first-order terms dropped.
    project = n * n * EPS * (sA[0] / sA[-1] + sU[0] / sU[-1]) / (sU[-1] * sA[-1])
    tol = 2 * (project + _inverse_roundoff(H, A))
    err = spec(got - ref)
    assert err <= tol, f"|inverse_hessian - inv(autograd Hessian)|_2 = {err:.3g} > {tol:.3g}"
    evidence.add(err / spec(ref), "|inverse_hessian - inv(autograd Hessian)| / |inverse|")
    evidence.add(d.mean(), "fraction of units active", worst="min")


@pytest.mark.claim("ND-neumann")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=0.8, margin=0.1))
def test_nd_neumann_series_converges_within_bound(evidence, problem):
    """Neumann partial sums of eq (7) converge to the dense inverse Hessian, within ||A||^{m+1}/(1-||A||) ||A^{-1}|| for every m.

    Eq (7): if ||A||_2 < 1, [grad^2 F(x)]^{-1} = sum_{n>=0} (Diag[Phi'(Ax)] A)^n A^{-1}; truncating after
    m terms leaves at most ||A||^{m+1} / (1 - ||A||) ||A^{-1}|| (geometric tail, ||DA|| <= ||A||).
    """
    A, x = problem
    n = A.shape[0]
    d = _mixed_mask(A, x)
    ref = _dense_inverse_hessian(A, x)
    sums = nd.neumann_partial_sums(A, x, 160)
    errors = np.linalg.norm(sums - ref, ord=2, axis=(1, 2))
    bounds = np.array([nd.neumann_truncation_bound(A, m) for m in range(161)])
    # The project's bound against the one computed here from its definition (relative round-off of a
    # power and two norms, <= 4 (m + 2) n EPS; 161 terms, so 1e-12).
    direct = spec(A) ** np.arange(1, 162) / (1 - spec(A)) * spec(np.linalg.inv(A))
    assert np.allclose(bounds, direct, rtol=1e-12, atol=0)
    # Round-off floor: inverting a Hessian with cond <= (1 + 0.8) / ((1 - 0.8) 0.2) = 45 costs
    # ~ cond n EPS ||ref||; the accumulated partial sums add ~ m n EPS ||A^{-1}||. 100x margin.
    floor = 100 * n * EPS * (45 + 160) * spec(ref)
    assert np.all(errors <= bounds + floor), f"bound broken at m = {int(np.argmax(errors - bounds))}"
    # ||A|| <= 0.8: the bound at m = 160 is 0.8^161 / 0.2 * 5 ~ 6e-15, so the series has converged.
    assert errors[-1] <= floor
    evidence.add(np.max(errors[:11] / bounds[:11]), "truncation error / bound (m <= 10, above round-off)")
    evidence.add(d.mean(), "fraction of units active", worst="min")


@pytest.mark.claim("ND-neumann")
@given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.95, margin=0.1))
def test_nd_neumann_tail_not_negligible(evidence, problem):
    """The gap [grad^2 F]^{-1} - A^{-1} (the tail n >= 1 of eq (7)) has spectral norm >= 1/(1 + ||A||) > 1/2 whenever a unit is active.

    Eq (7): "the remaining term sum_{n>=1} (Diag[Phi'(Ax)] A)^n A^{-1} cannot be neglected". How we
    quantify it: the tail equals (I - DA)^{-1} D (sum the series), so D = (I - DA) T and
    1 = ||D|| <= (1 + ||A||) ||T||: the tail is at least about half an identity in size, not a
    perturbation that shrinks with ||A||, x or n. The tail is computed as dense inverse Hessian
    minus A^{-1}, not from the series. The project's ``inverse_hessian`` must show the same tail.
    """
    A, x = problem
    n = A.shape[0]
    active = int(np.sum(A @ x > 0))
    assert active >= 1, "no active unit: the claim is about active units (see the next test)"
    tail = _dense_inverse_hessian(A, x) - np.linalg.inv(A)
    lower = 1.0 / (1.0 + spec(A))
    # The inverses are accurate to ~ cond n EPS with cond <= 1.95 / (0.05 * 0.2) ~ 200, norm <= 100.
    slack = 200 * n * EPS * 200 * 100
    got = spec(tail)
    assert got >= lower - slack, f"||tail|| = {got:.3g} < 1/(1+||A||) = {lower:.3g}"
    project_tail = spec(nd.inverse_hessian(A, x) - np.linalg.inv(A))
    assert project_tail >= lower - 2 * slack, f"inverse_hessian's tail {project_tail:.3g} < {lower:.3g}"
    evidence.add(got / lower, "||tail||_2 (1 + ||A||_2), >= 1 claimed", worst="min")


@pytest.mark.claim("ND-neumann", role="assumption")
@given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.95, margin=0.1, active="none"))
def test_nd_neumann_tail_vanishes_without_active_units(evidence, problem):
    """With no active unit (Ax < 0, so Diag[Phi'(Ax)] = 0) A^{-1} is the exact inverse Hessian: 'not negligible' needs some (Ax)_i > 0.

    Eq (7)'s tail is (I - DA)^{-1} D, zero for D = 0. Sec 3.3's setting (A positive definite,
    x >= 0, x != 0) always has an active unit, since x^T A x > 0 forces some (Ax)_i > 0. The
    project's series and inverse Hessian show it too: every partial sum is its first term A^{-1}.
    """
    A, x = problem
    n = A.shape[0]
    assert not np.any(A @ x > 0)
    tail = _dense_inverse_hessian(A, x) - np.linalg.inv(A)
    # Two inverses with cond <= 0.95 / 0.2 ~ 5 and norm <= 5: round-off ~ cond n EPS ||A^{-1}||.
    floor = 100 * n * EPS * 5 * 5
    assert spec(tail) <= floor
    sums = nd.neumann_partial_sums(A, x, 5)
    # D = 0 makes every term after the first exactly 0 (0 * finite), so the sums repeat bit for bit.
    assert all(np.array_equal(s, sums[0]) for s in sums[1:])
    assert spec(sums[0] - np.linalg.inv(A)) <= floor
    assert spec(nd.inverse_hessian(A, x) - _dense_inverse_hessian(A, x)) <= floor
    evidence.add(spec(tail), "||tail||_2 with no active unit")


def _partial_sum_roundoff(A: np.ndarray, d: np.ndarray, ref: np.ndarray, m_max: int) -> np.ndarray:
    """Bounds, m = 0..m_max, on the round-off of |S_m - (I - (DA)^{m+1}) ref|_2, S_m the project's partial sums.

    With p_k = ||(DA)^k||_2 (computed here), a matrix product rounds by <= n^2 EPS ||.|| ||.|| in the
    2-norm, and an error made at step i is carried to step j by (DA)^{j-i}:
    - the project's T_j = D (A T_{j-1}) from T_0 = inv(A): |dT_j| <= n^2 EPS ||A|| ||A^{-1}|| sum_{i<=j}
      p_{j-i} p_{i-1} + p_j n^2 EPS cond(A) ||A^{-1}||; summing m + 1 terms adds (m + 1) EPS sum_j |T_j|;
    - the reference: (DA)^{m+1} by repeated products (n^2 EPS ||A|| sum_i p_{m+1-i} p_{i-1}), times
      ref (n^2 EPS p_{m+1} ||ref||), and ref's own error (``_inverse_roundoff``) times 1 + p_{m+1}.
    Factor 2 for the first-order terms dropped.
    """
    n = A.shape[0]
    DA = d[:, None] * A
    p = np.empty(m_max + 2)
    P = np.eye(n)
    for k in range(m_max + 2):
        p[k] = spec(P)
        P = DA @ P
    conv = np.convolve(p, p)  # conv[j - 1] = sum_{i=1}^{j} p_{j-i} p_{i-1}
    a, a_inv = spec(A), spec(np.linalg.inv(A))
    cond_a = a * a_inv
    dT = np.empty(m_max + 1)
    dT[0] = n * n * EPS * cond_a * a_inv
    dT[1:] = n * n * EPS * (a * a_inv * conv[: m_max] + p[1: m_max + 1] * cond_a * a_inv)
    m = np.arange(m_max + 1)
    project = np.cumsum(dT) + (m + 1) * EPS * a_inv * np.cumsum(p[: m_max + 1])
    dref = _inverse_roundoff(np.linalg.inv(ref), A)
    reference = n * n * EPS * (a * conv[: m_max + 1] + p[1: m_max + 2]) * spec(ref) + (1 + p[1: m_max + 2]) * dref
    return 2 * (project + reference)


@pytest.mark.claim("ND-neumann", role="assumption")
@given(problem=st.one_of(nd_problems(min_abs_eig=1.2, max_abs_eig=2.0, margin=0.1, active="all"),
                         nd_mixed_problems(min_abs_eig=1.2, max_abs_eig=2.0, margin=0.1)))
def test_nd_neumann_diverges_when_norm_above_one(evidence, problem):
    """With ||A||_2 > 1 the project's Neumann partial sums (still exactly eq (7)'s) move away from the inverse Hessian geometrically; scaled to ||A|| = 1/2, the same function converges to it.

    Eq (7) assumes ||A||_2 < 1. Here every |eig(A)| is in [1.2, 2] and rho(DA) >= 1.2 (D = I, or a
    mixed mask whose active block has an eigenvalue >= 1.2 in modulus; other draws rejected, and
    so are those with sigma_min(I - DA) < 0.1). Exact algebra, (I - DA) S_m = (I - (DA)^{m+1}) A^{-1},
    gives S_m = (I - (DA)^{m+1}) H^{-1} with H^{-1} = inv(autograd Hessian): the test checks the
    project's ``neumann_partial_sums`` against that for every m <= 60 (so they are eq (7)'s sums),
    then that the error ||(DA)^{m+1} H^{-1}|| >= sigma_min(H^{-1}) rho(DA)^{m+1} grows. Companion:
    A' = A / (2 ||A||) has the same mask (a positive scale keeps the signs of Ax) and ||A'|| = 1/2,
    and the same function's S_60 then equals inv(autograd Hessian of A').
    """
    A, x = problem
    n = A.shape[0]
    d = (A @ x > 0).astype(float)
    assert d.sum() >= 1
    DA = d[:, None] * A
    rho = float(np.max(np.abs(np.linalg.eigvals(DA))))
    assume(rho >= 1.2 and np.linalg.svd(np.eye(n) - DA, compute_uv=False)[-1] >= 0.1)
    M = 60
    ref = _dense_inverse_hessian(A, x)
    sums = nd.neumann_partial_sums(A, x, M)
    expected = np.empty_like(sums)
    P = DA.copy()
    for m in range(M + 1):
        expected[m] = ref - P @ ref
        P = DA @ P
    tol = _partial_sum_roundoff(A, d, ref, M)
    resid = np.linalg.norm(sums - expected, ord=2, axis=(1, 2))
    assert np.all(resid <= tol), f"S_m != (I - (DA)^(m+1)) H^-1 at m = {int(np.argmax(resid / tol))}"
    errors = np.linalg.norm(sums - ref, ord=2, axis=(1, 2))
    # ||M N||_2 >= ||M||_2 sigma_min(N) and ||(DA)^k||_2 >= rho^k: the exact error at m is at least
    # sigma_min(H^-1) rho^{m+1}; the computed one is within tol[m] of it.
    lower = np.linalg.svd(ref, compute_uv=False)[-1] * rho ** (M + 1)
    assert errors[M] >= lower - tol[M], f"error at m = {M}: {errors[M]:.3g} < {lower:.3g}"
    # lower / errors[0] >= rho^61 / (||A|| cond(H)) >= 1.2^61 / (2 * 50) ~ 670, since errors[0] =
    # ||DA H^-1|| <= ||A|| ||H^-1|| and cond(H) <= ||A|| (1 + ||A||) / (1.2 * 0.1) <= 50: ask for 100.
    assert errors[M] > 100 * errors[0]
    with pytest.raises(AssumptionError, match="spectral norm < 1"):
        nd.neumann_truncation_bound(A, 3)
    # Companion: ||A'|| = 1/2, sigma_min(A') >= 0.3, so the tail after m = 60 is <= 0.5^61 / 0.5 / 0.3
    # ~ 3e-18, and cond(H') <= 0.5 * 1.5 / (0.3 * 0.5) = 5: round-off floor as in the convergence test.
    A2 = A / (2 * spec(A))
    assert np.array_equal(A2 @ x > 0, d > 0)
    ref2 = _dense_inverse_hessian(A2, x)
    floor2 = 100 * n * EPS * (5 + M) * spec(ref2)
    gap2 = spec(nd.neumann_partial_sums(A2, x, M)[-1] - ref2)
    assert gap2 <= 0.5 ** (M + 1) / 0.5 * spec(np.linalg.inv(A2)) + floor2
    evidence.add(errors[M] / errors[0], "error growth S_60 vs S_0 (rho(DA) >= 1.2)", worst="min")
    evidence.add(float(np.max(resid / tol)), "|S_m - (I - (DA)^(m+1)) H^-1| / round-off bound")
    evidence.add(gap2 / spec(ref2), "same function at ||A|| = 1/2: |S_60 - H^-1| / |H^-1|")


# --- ND-linear-rate ----------------------------------------------------------------------------
@st.composite
def _sec33_like(draw):
    """Sec 3.3's setting, small: A positive definite, ||A|| = gamma in [0.5, 0.95], cond in [2, 10]; x0 >= 0."""
    n = draw(dims())
    gamma = draw(st.floats(0.5, 0.95))
    cond = draw(st.floats(2.0, 10.0))
    gen = rng(draw(seeds()))
    # Explicit spectrum pinned at both ends, so every example spans [gamma / cond, gamma].
    eig = gen.uniform(gamma / cond, gamma, size=n)
    eig[0], eig[-1] = gamma, gamma / cond
    q, r = np.linalg.qr(gen.standard_normal((n, n)))
    A = (q * eig) @ q.T
    x0 = np.abs(gen.standard_normal(n)) + 0.01
    return (A + A.T) / 2, x0


@pytest.mark.claim("ND-linear-rate")
@given(problem=_sec33_like())
def test_nd_linear_rate_m0_linear_not_superlinear(evidence, problem):
    """For m = 0, ||x_{k+1}|| / ||x_k|| stays in [lambda_min(A), ||A||] subset (0, 1) and settles to a constant: linear, never superlinear.

    Sec 3.1 / Appendix B (not in our text): "the above quasi-Newton method only has a linear
    convergence rate". x* = 0 is the minimiser (A positive definite, ||A|| < 1). Bounds, for
    x_k >= 0: ||Phi(Ax)|| <= ||Ax|| <= ||A|| ||x||; and x^T Phi(Ax) >= x^T A x >= lambda_min ||x||^2
    gives ||x_{k+1}|| >= lambda_min ||x_k||. The iteration is positively homogeneous, so we
    normalise x_k each step (same ratios, no underflow over 200 steps).
    """
    A, x = problem
    eig = np.linalg.eigvalsh(A)
    ratios = np.empty(200)
    for k in range(200):
        x = x / np.linalg.norm(x)
        x = nd.quasi_newton_step(A, x, 0)
        ratios[k] = np.linalg.norm(x)
    # Bounds hold exactly in real arithmetic; 10 n EPS covers the mat-vec and norm round-off.
    slack = 10 * A.shape[0] * EPS
    assert np.all(ratios >= eig[0] * (1 - slack)) and np.all(ratios <= eig[-1] * (1 + slack))
    # "Tends to a constant": once the active set settles x_{k+1} = D A x_k is a power iteration;
    # its ratio over the last 10 of 200 steps varies by < 0.05 (measured < 1e-3 on 300 random cases).
    tail = ratios[-10:]
    assert np.ptp(tail) < 0.05
    assert 0.0 < tail[-1] < 1.0
    evidence.add(tail[-1], "limit ratio ||x_k+1||/||x_k|| in [lambda_min, ||A||]", worst="min")


@pytest.mark.claim("ND-linear-rate")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.1), m=st.integers(0, 4))
def test_nd_linear_rate_m_terms_vs_newton(evidence, problem, m):
    """The m-term quasi-Newton step equals Phi((DA)^{m+1} x), so any finite m is still linear (rate <= ||A||^{m+1}), while the exact Newton step reaches x* = 0 at once.

    Eq (8)/(15): H_k A = sum_{n<=m} (DA)^n and Phi(Ax) - x = -(I - DA) x, so
    x + H_k A (Phi(Ax) - x) = (DA)^{m+1} x (telescoping). Eq (10) with the exact inverse gives
    x + U^{-1}(-U x) = 0. This explains Table 2's m = 0, 1, 2 counts of 72, 36, 24 = 72 / (m + 1).
    """
    A, x = problem
    n = A.shape[0]
    D = np.diag(_mixed_mask(A, x))
    expected = np.maximum(np.linalg.matrix_power(D @ A, m + 1) @ x, 0.0)
    got = nd.quasi_newton_step(A, x, m)
    # Both are sums of (m + 1) products of norm <= ||x||; each carries ~ (m + 2) n EPS ||x||.
    tol = 10 * (m + 2) * n * EPS * np.linalg.norm(x)
    assert np.linalg.norm(got - expected) <= tol
    assert np.linalg.norm(got) <= spec(A) ** (m + 1) * np.linalg.norm(x) + tol
    newton = nd.newton_step(A, x)
    # U has cond <= 1.9 / 0.1 = 19: the solve is accurate to ~ 19 n EPS ||x||.
    assert np.linalg.norm(newton) <= 100 * 19 * n * EPS * np.linalg.norm(x)
    evidence.add(np.linalg.norm(newton) / np.linalg.norm(x), "|Newton step x_1| / |x_0|")


@pytest.mark.claim("ND-linear-rate")
@given(problem=_sec33_like(), m=st.integers(0, 2))
def test_nd_linear_rate_traces_count_what_table2_counts(evidence, problem, m):
    """The project's ``iteration_trace`` (what Table 2's reproduction counts) records |F(x_k) - F(x*)| of the iterates of each method, and shows the rates: linear for quasi-Newton, one step for Newton.

    Reference: the iterates recomputed here by repeating the project's single steps
    (``quasi_newton_step``, ``newton_step``, checked against eq (15)/(10) by the tests above) and F
    evaluated as x^T A x / 2 - 1^T P(Ax) with P(t) = max(t, 0)^2 / 2 written here; x* = 0, F(x*) = 0
    (sec 3.3). The count is the first k with error < eps, as sec 3.3 defines it.
    """
    A, x0 = problem
    n = A.shape[0]
    eps = 1e-12

    def F(x):
        p = np.maximum(A @ x, 0.0)
        return 0.5 * float(x @ A @ x - p @ p)

    trace = nd.iteration_trace(A, x0, "quasi-newton", m, max_iter=2000, eps=eps)
    xs = [x0]
    for _ in range(len(trace.errors) - 1):
        xs.append(nd.quasi_newton_step(A, xs[-1], m))
    ref = np.array([abs(F(x)) for x in xs])
    # Same iterates (same step function); F's two quadratic forms round at ~ n EPS ||A|| ||x||^2 each
    scale = np.array([n * EPS * float(x @ x) for x in xs])
    assert np.all(np.abs(trace.errors - ref) <= 10 * scale + 1e-300)
    assert trace.iterations is not None and trace.iterations == len(trace.errors) - 1
    assert trace.errors[-1] < eps <= trace.errors[-2]  # the first k below eps, and not before
    np.testing.assert_allclose(trace.x_final, xs[-1], rtol=0, atol=10 * n * EPS * np.linalg.norm(x0))
    # linear: the error ratio settles to a constant in (0, 1) (F ~ ||x||^2, so (||A||^{m+1})^2 at most)
    ratios = trace.errors[1:] / trace.errors[:-1]
    assert np.all(ratios[-5:] > 0) and np.all(ratios[-5:] <= spec(A) ** (2 * (m + 1)) * (1 + 1e-6))
    # Newton (eq (10), exact solve) reaches x* = 0 in one step; so does Newton-CG with N = n CG steps
    # (CG is exact in n steps up to round-off ~ cond(Q) n EPS, cond(Q) <= (1.95 / 0.05)^2 here)
    newton = nd.iteration_trace(A, x0, "newton", max_iter=5, eps=eps)
    assert newton.iterations == 1 and newton.errors[0] == pytest.approx(abs(F(x0)), rel=1e-9)
    cg = nd.iteration_trace(A, x0, "newton-cg", n, max_iter=5, eps=eps)
    assert cg.iterations is not None and cg.iterations <= 2
    # the same with CG's gradient by the recurrence g + alpha Q d (equal in exact arithmetic)
    rec = nd.iteration_trace(A, x0, "newton-cg", n, max_iter=5, eps=eps, cg_gradient="recurrence")
    assert rec.iterations is not None and rec.iterations <= 2
    # max_iter bounds the trace: no step taken, no count
    stopped = nd.iteration_trace(A, x0, "quasi-newton", m, max_iter=0, eps=eps)
    assert stopped.iterations is None and len(stopped.errors) == 1
    # a start at x* counts 0 steps
    assert nd.iteration_trace(A, np.zeros(n), "quasi-newton", m, eps=eps).iterations == 0
    # f_star shifts what is measured, and Newton-CG with N < n CG steps from either start follows the
    # project's single step (``newton_cg_step``, checked against Alg. 1 in the ND-cg tests): |F(x_k) + 1|
    # is ~1, so the two agree to round-off, 1e-12 relative
    N, start = max(1, n - 1), ("zero", "x")[m % 2]
    shifted = nd.iteration_trace(A, x0, "newton-cg", N, max_iter=3, eps=1e-300, f_star=-1.0, y0=start)
    xs = [x0]
    for _ in range(3):
        xs.append(nd.newton_cg_step(A, xs[-1], N, y0=start))
    np.testing.assert_allclose(shifted.errors, [abs(F(x) + 1.0) for x in xs], rtol=1e-12, atol=0)
    assert shifted.iterations is None
    evidence.add(trace.iterations, f"quasi-Newton m = {m} iterations to 1e-12", worst="max")


# --- ND-resnet ---------------------------------------------------------------------------------
@pytest.mark.claim("ND-resnet")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05),
       H=gaussian_matrices(rows=8, cols=8), m=st.integers(0, 3))
def test_nd_resnet_block_is_quasi_newton_step(evidence, problem, H, m):
    """Phi[(I - H A) x + H A Phi(Ax)] (eq (8)) as the ResNet block (9) equals P_C[x - H grad F(x)] (autograd gradient), for any H and for the Neumann H_k.

    Eq (8)-(9): x_{k+1} = P_C[x_k - H_k grad F(x_k)] = Phi[(I - H_k A) x_k + H_k A Phi(Ax_k)], read
    as Phi[W_s x + W_1 Phi(W_2 x)] with W_s = I - H_k A, W_1 = H_k A, W_2 = A (Fig. 1(b)); m = 0
    gives W_s = 0, the PlainNet.
    """
    A, x = problem
    n = A.shape[0]
    _mixed_mask(A, x)
    g = autograd_gradient(A, x)
    worst = 0.0
    for Hk in (H[:n, :n], nd.neumann_inverse_hessian(A, x, m)):
        block = nd.resnet_block(x, *nd.quasi_newton_resnet_weights(A, Hk))
        expected = np.maximum(x - Hk @ g, 0.0)
        # Products of norm <= (1 + ||H|| ||A||) ||x|| (1 + ||A||); n EPS per product, a few products.
        scale = (1 + spec(Hk) * spec(A)) * np.linalg.norm(x) * (1 + spec(A))
        gap = np.linalg.norm(block - expected)
        assert gap <= 20 * n * EPS * scale
        worst = max(worst, gap / scale)
    Ws, W1, W2 = nd.quasi_newton_resnet_weights(A, nd.neumann_inverse_hessian(A, x, m))
    assert np.allclose(nd.resnet_block(x, Ws, W1, W2), nd.quasi_newton_step(A, x, m), rtol=0,
                       atol=100 * n * EPS * 5 * np.linalg.norm(x))
    if m == 0:
        # H = A^{-1}: W_s = I - A^{-1} A vanishes to round-off (cond(A) <= 5), the PlainNet of eq (2).
        assert spec(Ws) <= 100 * n * EPS * 5
    evidence.add(worst, "|ResNet block - P_C[x - H grad F]| / scale")


# --- ND-cg -------------------------------------------------------------------------------------
def _dense_system(A, x):
    d = _mixed_mask(A, x)
    U = np.eye(A.shape[0]) - np.diag(d) @ A
    r = np.maximum(A @ x, 0.0) - x
    return d, U, r, U.T @ U, U.T @ r


def _cg_reordering_spread(Q, b, y0, N, y_N) -> float:
    """max |y_N - P^T y_N'| over three reorderings P of the unknowns (two rotations, the reversal), y_N'
    from N steps of the project's CG on (P Q P^T, P b, P y0): exact arithmetic gives P y_N, so the
    spread is the rounding-driven part of y_N alone."""
    n = b.shape[0]
    spread = 0.0
    for p in (np.roll(np.arange(n), 1), np.roll(np.arange(n), 2), np.arange(n)[::-1]):
        back = np.empty(n)
        back[p] = nd.conjugate_gradient(Q[np.ix_(p, p)], b[p], y0[p], N).solution
        spread = max(spread, float(np.linalg.norm(y_N - back)))
    return spread


@pytest.mark.claim("ND-cg")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05), start=st.sampled_from(["x", "zero"]))
def test_nd_cg_solves_u_y_eq_r_in_n_steps(evidence, problem, start):
    """Alg. 1 on Q y = b (Q = U^T U, b = U^T r) reaches y = U^{-1} r (dense solve) in n steps.

    Eq (11)-(14), Alg. 1: "the CG method needs at most n iterations to get the solution". U and r
    are built here from the definitions (with a mixed mask), and y checked against
    np.linalg.solve(U, r).
    """
    A, x = problem
    n = A.shape[0]
    d, U, r, Q, b = _dense_system(A, x)
    y0 = x if start == "x" else np.zeros(n)
    result = nd.conjugate_gradient(Q, b, y0, n)
    y_star = np.linalg.solve(U, r)
    # ||DA|| <= 0.9 gives sigma(U) in [0.1, 1.9], cond(Q) <= 19^2 = 361; the solve and CG's attainable
    # accuracy (Alg. 1 recomputes g = Q y - b) are ~ cond(Q) n EPS relative; 100x margin. On top of it,
    # float64 CG loses the orthogonality that makes n steps exact, and may stop short of y* by more
    # (up to ~1e4 cond(Q) n EPS here): that deviation is measured per example, as the spread of y_n over
    # reorderings of the unknowns (same iterates in exact arithmetic, other rounding), x100 (the
    # deviation stayed below 9x the spread on 4000 draws). A wrong CG is wrong in every ordering alike.
    spread = _cg_reordering_spread(Q, b, y0, n, result.solution)
    tol = 100 * 361 * n * EPS * (np.linalg.norm(y_star) + np.linalg.norm(y0)) + 100 * spread
    err = np.linalg.norm(result.solution - y_star)
    assert err <= tol, f"|y_n - U^-1 r| = {err:.3g} > {tol:.3g} after {result.steps} steps"
    # The system of the project (newton_cg_system) is the one built here (same products, same order).
    sys_ = nd.newton_cg_system(A, x)
    assert np.array_equal(sys_.mask, d) and np.allclose(sys_.Q, Q, rtol=0, atol=4 * n * EPS * 4)
    # Alg. 1's sequences as returned: at most n steps (fewer only when CG lands exactly: Q has as many
    # distinct eigenvalues as steps, e.g. eigenvalue 1 repeated on the inactive units; the later iterates
    # repeat the last), g_t = Q y_t - b at every t (line 7; round-off of one product, ~ n EPS ||Q|| ||y_t||
    # with ||Q|| <= 1.9^2), and consecutive directions Q-conjugate (beta_t makes d_{t+1}^T Q d_t = 0 up
    # to the same round-off, relative to ||d|| ||Q d||)
    assert 1 <= result.steps <= n and result.iterates.shape == (n + 1, n) and result.directions.shape == (n, n)
    assert np.array_equal(result.iterates[result.steps:], np.tile(result.iterates[result.steps], (n + 1 - result.steps, 1)))
    for t in range(n + 1):
        resid = Q @ result.iterates[t] - b
        assert np.linalg.norm(result.gradients[t] - resid) <= 100 * n * EPS * (4 * np.linalg.norm(result.iterates[t])
                                                                             + np.linalg.norm(b))
    for t in range(result.steps - 1):
        dt, du = result.directions[t], result.directions[t + 1]
        assert abs(du @ Q @ dt) <= 1e3 * n * EPS * np.linalg.norm(du) * np.linalg.norm(Q @ dt)
    # a start that already solves Q y = b exactly (b = Q y0, so g_0 = 0): no step, every iterate y0
    solved = nd.conjugate_gradient(Q, Q @ y0, y0, n)
    assert solved.steps == 0 and np.array_equal(solved.iterates, np.tile(y0, (n + 1, 1)))
    assert not solved.gradients.any()
    evidence.add(err / tol, "|y_n - U^-1 r| / tolerance after n CG steps")
    evidence.add(d.mean(), "fraction of units active", worst="min")


@pytest.mark.claim("ND-cg")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.05), seed=seeds())
def test_nd_cg_eq17_expansion(evidence, problem, seed):
    """Eq (17)'s expansion y - DAy - ADy + ADAy - b equals the direct product U^T U y - b for ReLU's 0/1 mask.

    Eq (17): g = Qy - b = [I - A Diag[Phi'(Ax)]][I - Diag[Phi'(Ax)] A] y - b
    = y - Diag[Phi'] A y - A Diag[Phi'] y + A Diag[Phi'] A y - b.
    """
    A, x = problem
    n = A.shape[0]
    d, _, _, Q, b = _dense_system(A, x)
    y = rng(seed).standard_normal(n)
    got = nd.cg_gradient_eq17(A, d, y, b)
    # Products of norm <= (1 + ||A||)^2 ||y||; a handful of length-n dot products.
    tol = 20 * n * EPS * ((1 + spec(A)) ** 2 * np.linalg.norm(y) + np.linalg.norm(b))
    err = np.linalg.norm(got - (Q @ y - b))
    assert err <= tol
    evidence.add(err / tol, "|eq(17) - (Qy - b)| / tolerance")
    evidence.add(d.mean(), "fraction of units active", worst="min")


@pytest.mark.claim("ND-cg", role="assumption")
@given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.05), seed=seeds())
def test_nd_cg_eq17_needs_binary_mask(evidence, problem, seed):
    """With a non-binary activation derivative (leaky ReLU, Phi' in {0.1, 1}) the project's eq (17) expansion is not Qy - b.

    Eq (17) writes A Diag[Phi'] A y for A Diag[Phi']^2 A y, true only if Phi' is 0/1 (ReLU); the
    gap is A (D - D^2) A y with D - D^2 = 0.09 on the inactive units. Companion: the previous test
    (the same function with ReLU's 0/1 mask is exact).
    """
    A, x = problem
    n = A.shape[0]
    d = np.where(A @ x > 0, 1.0, 0.1)
    d[0] = 0.1  # at least one unit off the 0/1 set
    U = np.eye(n) - np.diag(d) @ A
    r = np.where(A @ x > 0, A @ x, 0.1 * A @ x) - x
    Q, b = U.T @ U, U.T @ r
    # y with A y = +-e_0 puts the whole gap on the non-binary unit: A (D - D^2) A y = +-0.09 A e_0,
    # of norm >= 0.09 * 0.2 (smallest |eigenvalue|), so a counterexample is guaranteed, not lucky.
    sign = rng(seed).choice([-1.0, 1.0])
    y = np.linalg.solve(A, sign * np.eye(n)[0])
    miss = nd.cg_gradient_eq17(A, d, y, b) - (Q @ y - b)
    gap = np.linalg.norm(miss)
    scale = (1 + spec(A)) ** 2 * np.linalg.norm(y)
    # Round-off would be ~ 20 n EPS scale ~ 1e-13 scale; 1e-6 scale is a genuine gap.
    assert gap > 1e-6 * scale, f"gap {gap:.3g} (scale {scale:.3g})"
    # ... and it is the predicted one, A (D - D^2) A y = 0.09 sign A e_0 (round-off as in the previous test).
    assert np.linalg.norm(miss - 0.09 * sign * A[:, 0]) <= 40 * n * EPS * (scale + np.linalg.norm(b))
    evidence.add(gap / scale, "|eq(17) - (Qy - b)| / scale, leaky-ReLU mask", worst="min")


# --- ND-block ----------------------------------------------------------------------------------


@pytest.mark.claim("ND-block")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05), N=st.integers(1, 8),
       absorb=st.booleans())
def test_nd_block_reproduces_cg_iterates(evidence, problem, N, absorb):
    """Alg. 2 with linear maps (W1 = -DA, W2 = -AD, W3 = DA, W4 = A or the mask as 'dropout'), threshold -b and Alg. 1's alpha_t, beta_t computes Alg. 1's y_t and x_{k+1} = ReLU(x_k + y_N).

    Alg. 2 lines 1-14 against Alg. 1 with y_0 = x_k (sec 3.3), eq (17) mapping: g^(1) ~ -DAy,
    g^(2) ~ -ADy, g^(3) ~ ADAy and the threshold ~ -b (the paper: "b can be simply viewed as a
    threshold"; Alg. 2 line 6 omits it). alpha_t, beta_t: Alg. 1's step sizes (learnable in the net).
    """
    A, x = problem
    n = A.shape[0]
    _, U, r, Q, b = _dense_system(A, x)
    cg = nd.conjugate_gradient(Q, b, x, N)
    w = nd.newton_cg_block_weights(A, x, absorb_mask=absorb)
    x_next, ys = nd.newton_cg_block(x, w.W1, w.W2, w.W3, w.W4, cg.alphas, cg.betas,
                                    mask=None if absorb else w.mask, threshold=w.threshold)
    # Same arithmetic up to association order; errors grow over N steps by at most the CG
    # amplification cond(Q) <= 361 per restart-free run. Scale: the largest iterate.
    scale = max(np.max(np.linalg.norm(cg.iterates, axis=1)), np.linalg.norm(x))
    tol = 100 * 361 * N * n * EPS * scale
    err = np.max(np.linalg.norm(ys - cg.iterates, axis=1))
    assert err <= tol, f"max_t |y_t(Alg. 2) - y_t(Alg. 1)| = {err:.3g} > {tol:.3g}"
    assert np.linalg.norm(x_next - nd.newton_cg_step(A, x, N)) <= tol
    evidence.add(err / scale, "max_t |y_t(Alg. 2) - y_t(Alg. 1)| / scale")


@pytest.mark.claim("ND-block", role="assumption")
@given(problem=nd_mixed_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05), N=st.integers(1, 8))
def test_nd_block_needs_threshold_b(evidence, problem, N):
    """Alg. 2 as printed (no threshold b in line 6) does not compute Alg. 1's iterates: it runs CG on Q y = 0.

    Eq (17) has a -b term; Alg. 2 line 6 (g_t = y_t + g^(1) + g^(2) + g^(3)) drops it. Since
    b = U^T r = -Q x_k depends on x_k, no constant bias can stand in for it. Companion: the
    previous test (the same block with the threshold reproduces Alg. 1).
    """
    A, x = problem
    _, U, r, Q, b = _dense_system(A, x)
    cg = nd.conjugate_gradient(Q, b, x, N)
    w = nd.newton_cg_block_weights(A, x)
    _, ys = nd.newton_cg_block(x, w.W1, w.W2, w.W3, w.W4, cg.alphas, cg.betas)
    gap = np.linalg.norm(ys[1] - cg.iterates[1])
    # y_1 differs by alpha_0 * b; |alpha_0| >= 1 / ||Q|| >= 1 / 3.61 and ||b|| = ||Q x|| >= 0.01 ||x||.
    assert gap > 1e-6 * np.linalg.norm(x), f"gap {gap:.3g}"
    evidence.add(gap / np.linalg.norm(x), "|y_1(no threshold) - y_1(Alg. 1)| / |x|", worst="min")
