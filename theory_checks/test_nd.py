"""Theory checks for ND: Shen et al., "Newton design" (papers/001_7d8a77c69ed28a39.txt).

One test (or a small group) per claim id of CLAIMS.md: ND-P1, ND-hess, ND-neumann,
ND-linear-rate, ND-resnet, ND-cg, ND-block. References are independent of the formulas under
test: torch autograd in float64, central finite differences, dense solves and inverses.

Tolerances are written as multiples of the float64 unit round-off EPS times the size of the
quantities involved (n, norms, condition numbers); each is justified beside its assertion.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from analysis.theory import nd as nd
from analysis.validation import AssumptionError
from theory_checks.strategies import (
    dims,
    gaussian_matrices,
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


# --- ND-P1 -------------------------------------------------------------------------------------
@pytest.mark.claim("ND-P1")
def test_nd_p1_gradient_formula(evidence):
    """grad F(x) = A[x - Phi(Ax)] (eq (4)) matches torch autograd for symmetric A and any x.

    Prop. 1: "If A in S^n, x in R^n, Phi is an ReLU ... grad F(x) = A[x - Phi(Ax)]" for
    F(x) = x^T A x / 2 - 1^T P(Ax), eq (3)-(4).
    """

    @given(A=symmetric_matrices(max_abs_eig=2.0, min_abs_eig=0.1), seed=seeds())
    def check(A, seed):
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

    check()
    evidence.record()


@pytest.mark.claim("ND-P1")
def test_nd_p1_fixed_point_identity(evidence):
    """x - A^{-1} grad F(x) = Phi(Ax) (eq (5)): the PlainNet step is a quasi-Newton step with H = A^{-1}.

    Prop. 1 proof, eq (5): x_{k+1} = x_k - A^{-1} grad F(x_k) = Phi(Ax_k). The gradient comes from
    autograd and A^{-1} g from a dense solve, not from eq (4).
    """

    @given(A=symmetric_matrices(max_abs_eig=1.0, min_abs_eig=0.2), seed=seeds())
    def check(A, seed):
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

    check()
    evidence.record()


@pytest.mark.claim("ND-P1", role="assumption")
def test_nd_p1_gradient_needs_symmetric_a(evidence):
    """With A non-symmetric, A[x - Phi(Ax)] is not the gradient of F (autograd differs by far more than round-off).

    The true gradient is (A + A^T) x / 2 - A^T Phi(Ax); it differs from eq (4) by
    (A - A^T)(Phi(Ax) - x / 2), non-zero for generic x once A != A^T. Prop. 1 assumes A in S^n.
    """

    @given(B=gaussian_matrices(rows=6, cols=6), seed=seeds())
    def check(B, seed):
        A = B + 0.5 * (B - B.T)  # a skew part at least as large as B's own, so the asymmetry is not round-off
        x = rng(seed).standard_normal(6)
        formula = A @ (x - np.maximum(A @ x, 0.0))
        ref = autograd_gradient(A, x)
        rel = np.linalg.norm(formula - ref) / np.linalg.norm(ref)
        # Round-off on either side is ~ 4 n EPS ~ 5e-15 relative (see the symmetric test); 1e-6 is far
        # above it, so a gap this big is a genuine counterexample, not noise.
        assert rel > 1e-6, f"eq (4) unexpectedly matched autograd for non-symmetric A (rel gap {rel:.2e})"
        evidence.add(rel, "relative gap eq(4) vs autograd, non-symmetric A", worst="min")
        with pytest.raises(AssumptionError, match="A must be symmetric"):
            nd.gradient(A, x)

    check()
    evidence.record()


@pytest.mark.claim("ND-P1", role="assumption")
def test_nd_p1_problem_unbounded_without_positive_definite_a(evidence):
    """With A only symmetric (Prop. 1's assumption), problem (3) can be unbounded below on x >= 0, so Phi(Ax_k) -> 0 finds a stationary point, not a minimiser.

    Prop. 1 says the iteration "solves" min_{x >= 0} F(x). F is 2-homogeneous (F(tx) = t^2 F(x),
    t > 0), so one feasible v with F(v) < 0 makes inf F = -inf. Sec 3.3's positive definite A
    with ||A|| < 1 excludes this (then F(x) >= (1 - ||A||) x^T A x / 2 >= 0 = F(0)).
    """
    @given(S=symmetric_matrices(n=5, max_abs_eig=1.0), seed=seeds(), t=st.floats(2.0, 100.0))
    def check(S, seed, t):
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

    check()
    evidence.record()


# --- ND-hess -----------------------------------------------------------------------------------
@pytest.mark.claim("ND-hess")
def test_nd_hess_matches_autograd(evidence):
    """Hessian A - A Diag[Phi'(Ax)] A (eq (6)) equals torch's autograd Hessian off the ReLU kinks.

    Eq (6): grad^2 F(x) = A - A Diag[Phi'(Ax)] A. x is drawn with every |(Ax)_i| >= 0.1, so ReLU's
    derivative is unambiguous at x.
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.1))
    def check(problem):
        A, x = problem
        n = A.shape[0]
        H = nd.hessian(A, x)
        ref = autograd_hessian(A, x)
        # Entries are dot products of length n of size <= ||A||^2: n EPS ||A||^2 each, x4 for two terms.
        tol = 4 * n * EPS * max(1.0, spec(A)) ** 2
        err = np.max(np.abs(H - ref))
        assert err <= tol, f"max |eq(6) - autograd| = {err:.3g} > {tol:.3g}"
        evidence.add(err, "|eq(6) - autograd Hessian|")

    check()
    evidence.record()


@pytest.mark.claim("ND-hess")
def test_nd_hess_matches_finite_differences(evidence):
    """Central differences of the autograd gradient reproduce eq (6)'s Hessian to round-off away from kinks.

    Eq (6). Margin: every |(Ax)_i| >= delta = 0.1. With step h = delta / (2 ||A||_2),
    |(A (x +- h e_j))_i - (Ax)_i| <= h ||A||_2 = delta / 2 < delta, so x +- h e_j stay in the region where
    Diag[Phi'(Ax)] is constant and F is exactly quadratic: the central difference of the gradient
    then has no truncation error, only round-off.
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.1))
    def check(problem):
        A, x = problem
        n = A.shape[0]
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

    check()
    evidence.record()


# --- ND-neumann --------------------------------------------------------------------------------
def _dense_inverse_hessian(A, x):
    return np.linalg.inv(autograd_hessian(A, x))


@pytest.mark.claim("ND-neumann")
def test_nd_neumann_series_converges_within_bound(evidence):
    """Neumann partial sums of eq (7) converge to the dense inverse Hessian, within ||A||^{m+1}/(1-||A||) ||A^{-1}|| for every m.

    Eq (7): if ||A||_2 < 1, [grad^2 F(x)]^{-1} = sum_{n>=0} (Diag[Phi'(Ax)] A)^n A^{-1}; truncating after
    m terms leaves at most ||A||^{m+1} / (1 - ||A||) ||A^{-1}|| (geometric tail, ||DA|| <= ||A||).
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.8, margin=0.1))
    def check(problem):
        A, x = problem
        n = A.shape[0]
        ref = _dense_inverse_hessian(A, x)
        sums = nd.neumann_partial_sums(A, x, 160)
        errors = np.linalg.norm(sums - ref, ord=2, axis=(1, 2))
        bounds = np.array([nd.neumann_truncation_bound(A, m) for m in range(161)])
        # Round-off floor: inverting a Hessian with cond <= (1 + 0.8) / ((1 - 0.8) 0.2) = 45 costs
        # ~ cond n EPS ||ref||; the accumulated partial sums add ~ m n EPS ||A^{-1}||. 100x margin.
        floor = 100 * n * EPS * (45 + 160) * spec(ref)
        assert np.all(errors <= bounds + floor), f"bound broken at m = {int(np.argmax(errors - bounds))}"
        # ||A|| <= 0.8: the bound at m = 160 is 0.8^161 / 0.2 * 5 ~ 6e-15, so the series has converged.
        assert errors[-1] <= floor
        evidence.add(np.max(errors[:11] / bounds[:11]), "truncation error / bound (m <= 10, above round-off)")

    check()
    evidence.record()


@pytest.mark.claim("ND-neumann")
def test_nd_neumann_tail_not_negligible(evidence):
    """The gap [grad^2 F]^{-1} - A^{-1} (the tail n >= 1 of eq (7)) has spectral norm >= 1/(1 + ||A||) > 1/2 whenever a unit is active.

    Eq (7): "the remaining term sum_{n>=1} (Diag[Phi'(Ax)] A)^n A^{-1} cannot be neglected". How we
    quantify it: the tail equals (I - DA)^{-1} D (sum the series), so D = (I - DA) T and
    1 = ||D|| <= (1 + ||A||) ||T||: the tail is at least about half an identity in size, not a
    perturbation that shrinks with ||A||, x or n. The tail is computed as dense inverse Hessian
    minus A^{-1}, not from the series.
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.95, margin=0.1))
    def check(problem):
        A, x = problem
        n = A.shape[0]
        tail = _dense_inverse_hessian(A, x) - np.linalg.inv(A)
        lower = 1.0 / (1.0 + spec(A))
        # The inverses are accurate to ~ cond n EPS with cond <= 1.95 / (0.05 * 0.2) ~ 200, norm <= 100.
        slack = 200 * n * EPS * 200 * 100
        got = spec(tail)
        assert got >= lower - slack, f"||tail|| = {got:.3g} < 1/(1+||A||) = {lower:.3g}"
        evidence.add(got / lower, "||tail||_2 (1 + ||A||_2), >= 1 claimed", worst="min")

    check()
    evidence.record()


@pytest.mark.claim("ND-neumann", role="assumption")
def test_nd_neumann_tail_vanishes_without_active_units(evidence):
    """With no active unit (Ax < 0, so Diag[Phi'(Ax)] = 0) A^{-1} is the exact inverse Hessian: 'not negligible' needs some (Ax)_i > 0.

    Eq (7)'s tail is (I - DA)^{-1} D, zero for D = 0. Sec 3.3's setting (A positive definite,
    x >= 0, x != 0) always has an active unit, since x^T A x > 0 forces some (Ax)_i > 0.
    """
    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.95, margin=0.1, active="none"))
    def check(problem):
        A, x = problem
        n = A.shape[0]
        tail = _dense_inverse_hessian(A, x) - np.linalg.inv(A)
        # Two inverses with cond <= 0.95 / 0.2 ~ 5 and norm <= 5: round-off ~ cond n EPS ||A^{-1}||.
        assert spec(tail) <= 100 * n * EPS * 5 * 5
        evidence.add(spec(tail), "||tail||_2 with no active unit")

    check()
    evidence.record()


@pytest.mark.claim("ND-neumann", role="assumption")
def test_nd_neumann_diverges_when_norm_above_one(evidence):
    """With ||A||_2 > 1 the Neumann partial sums move away from the inverse Hessian (error grows geometrically).

    Eq (7) assumes ||A||_2 < 1. Here all units are active (D = I), every |eig(A)| in [1.2, 2], so
    the inverse Hessian (A - A^2)^{-1} exists but the error of S_m is max_i |l_i|^{m+1}/|1 - l_i| / |l_i|,
    growing at least like 1.2^m. The truncation bound refuses such A.
    """

    @given(problem=nd_problems(min_abs_eig=1.2, max_abs_eig=2.0, margin=0.1, active="all"))
    def check(problem):
        A, x = problem
        ref = _dense_inverse_hessian(A, x)
        errors = np.linalg.norm(nd.neumann_partial_sums(A, x, 30) - ref, ord=2, axis=(1, 2))
        # Growth by >= 1.2^20 ~ 38 between m = 10 and m = 30 (largest |eigenvalue| >= 1.2); ask for 10.
        assert errors[30] > 10 * errors[10] > 10 * errors[0]
        evidence.add(errors[30] / errors[10], "error growth S_30 vs S_10 (||A|| >= 1.2)", worst="min")
        with pytest.raises(AssumptionError, match="spectral norm < 1"):
            nd.neumann_truncation_bound(A, 3)

    check()
    evidence.record()


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
def test_nd_linear_rate_m0_linear_not_superlinear(evidence):
    """For m = 0, ||x_{k+1}|| / ||x_k|| stays in [lambda_min(A), ||A||] subset (0, 1) and settles to a constant: linear, never superlinear.

    Sec 3.1 / Appendix B (not in our text): "the above quasi-Newton method only has a linear
    convergence rate". x* = 0 is the minimiser (A positive definite, ||A|| < 1). Bounds, for
    x_k >= 0: ||Phi(Ax)|| <= ||Ax|| <= ||A|| ||x||; and x^T Phi(Ax) >= x^T A x >= lambda_min ||x||^2
    gives ||x_{k+1}|| >= lambda_min ||x_k||. The iteration is positively homogeneous, so we
    normalise x_k each step (same ratios, no underflow over 200 steps).
    """

    @given(problem=_sec33_like())
    def check(problem):
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

    check()
    evidence.record()


@pytest.mark.claim("ND-linear-rate")
def test_nd_linear_rate_m_terms_vs_newton(evidence):
    """The m-term quasi-Newton step equals Phi((DA)^{m+1} x), so any finite m is still linear (rate <= ||A||^{m+1}), while the exact Newton step reaches x* = 0 at once.

    Eq (8)/(15): H_k A = sum_{n<=m} (DA)^n and Phi(Ax) - x = -(I - DA) x, so
    x + H_k A (Phi(Ax) - x) = (DA)^{m+1} x (telescoping). Eq (10) with the exact inverse gives
    x + U^{-1}(-U x) = 0. This explains Table 2's m = 0, 1, 2 counts of 72, 36, 24 = 72 / (m + 1).
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.1), m=st.integers(0, 4))
    def check(problem, m):
        A, x = problem
        n = A.shape[0]
        D = np.diag((A @ x > 0).astype(float))
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

    check()
    evidence.record()


# --- ND-resnet ---------------------------------------------------------------------------------
@pytest.mark.claim("ND-resnet")
def test_nd_resnet_block_is_quasi_newton_step(evidence):
    """Phi[(I - H A) x + H A Phi(Ax)] (eq (8)) as the ResNet block (9) equals P_C[x - H grad F(x)] (autograd gradient), for any H and for the Neumann H_k.

    Eq (8)-(9): x_{k+1} = P_C[x_k - H_k grad F(x_k)] = Phi[(I - H_k A) x_k + H_k A Phi(Ax_k)], read
    as Phi[W_s x + W_1 Phi(W_2 x)] with W_s = I - H_k A, W_1 = H_k A, W_2 = A (Fig. 1(b)); m = 0
    gives W_s = 0, the PlainNet.
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05),
           H=gaussian_matrices(rows=8, cols=8), m=st.integers(0, 3))
    def check(problem, H, m):
        A, x = problem
        n = A.shape[0]
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

    check()
    evidence.record()


# --- ND-cg -------------------------------------------------------------------------------------
def _dense_system(A, x):
    d = (A @ x > 0).astype(float)
    U = np.eye(A.shape[0]) - np.diag(d) @ A
    r = np.maximum(A @ x, 0.0) - x
    return d, U, r, U.T @ U, U.T @ r


@pytest.mark.claim("ND-cg")
def test_nd_cg_solves_u_y_eq_r_in_n_steps(evidence):
    """Alg. 1 on Q y = b (Q = U^T U, b = U^T r) reaches y = U^{-1} r (dense solve) in n steps.

    Eq (11)-(14), Alg. 1: "the CG method needs at most n iterations to get the solution". U and r
    are built here from the definitions, and y checked against np.linalg.solve(U, r).
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05), start=st.sampled_from(["x", "zero"]))
    def check(problem, start):
        A, x = problem
        n = A.shape[0]
        _, U, r, Q, b = _dense_system(A, x)
        y0 = x if start == "x" else np.zeros(n)
        result = nd.conjugate_gradient(Q, b, y0, n)
        y_star = np.linalg.solve(U, r)
        # ||DA|| <= 0.9 gives sigma(U) in [0.1, 1.9], cond(Q) <= 19^2 = 361. CG in float64 on n <= 8
        # unknowns reaches ~ cond(Q) n EPS relative accuracy (loss of orthogonality); 100x margin.
        tol = 100 * 361 * n * EPS * (np.linalg.norm(y_star) + np.linalg.norm(y0))
        err = np.linalg.norm(result.solution - y_star)
        assert err <= tol, f"|y_n - U^-1 r| = {err:.3g} > {tol:.3g} after {result.steps} steps"
        evidence.add(err / tol, "|y_n - U^-1 r| / tolerance after n CG steps")

    check()
    evidence.record()


@pytest.mark.claim("ND-cg")
def test_nd_cg_eq17_expansion(evidence):
    """Eq (17)'s expansion y - DAy - ADy + ADAy - b equals the direct product U^T U y - b for ReLU's 0/1 mask.

    Eq (17): g = Qy - b = [I - A Diag[Phi'(Ax)]][I - Diag[Phi'(Ax)] A] y - b
    = y - Diag[Phi'] A y - A Diag[Phi'] y + A Diag[Phi'] A y - b.
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.05), seed=seeds())
    def check(problem, seed):
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

    check()
    evidence.record()


@pytest.mark.claim("ND-cg", role="assumption")
def test_nd_cg_eq17_needs_binary_mask(evidence):
    """With a non-binary activation derivative (leaky ReLU, Phi' in {0.1, 1}) eq (17)'s expansion is not Qy - b.

    Eq (17) writes A Diag[Phi'] A y for A Diag[Phi']^2 A y, true only if Phi' is 0/1 (ReLU); the
    gap is A (D - D^2) A y with D - D^2 = 0.09 on the inactive units.
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=2.0, margin=0.05), seed=seeds())
    def check(problem, seed):
        A, x = problem
        n = A.shape[0]
        d = np.where(A @ x > 0, 1.0, 0.1)
        d[0] = 0.1  # at least one unit off the 0/1 set
        U = np.eye(n) - np.diag(d) @ A
        r = np.where(A @ x > 0, A @ x, 0.1 * A @ x) - x
        Q, b = U.T @ U, U.T @ r
        # y with A y = +-e_0 puts the whole gap on the non-binary unit: A (D - D^2) A y = +-0.09 A e_0,
        # of norm >= 0.09 * 0.2 (smallest |eigenvalue|), so a counterexample is guaranteed, not lucky.
        y = np.linalg.solve(A, rng(seed).choice([-1.0, 1.0]) * np.eye(n)[0])
        gap = np.linalg.norm(nd.cg_gradient_eq17(A, d, y, b) - (Q @ y - b))
        scale = (1 + spec(A)) ** 2 * np.linalg.norm(y)
        # Round-off would be ~ 20 n EPS scale ~ 1e-13 scale; 1e-6 scale is a genuine gap.
        assert gap > 1e-6 * scale, f"gap {gap:.3g} (scale {scale:.3g})"
        evidence.add(gap / scale, "|eq(17) - (Qy - b)| / scale, leaky-ReLU mask", worst="min")

    check()
    evidence.record()


# --- ND-block ----------------------------------------------------------------------------------


@pytest.mark.claim("ND-block")
def test_nd_block_reproduces_cg_iterates(evidence):
    """Alg. 2 with linear maps (W1 = -DA, W2 = -AD, W3 = DA, W4 = A or the mask as 'dropout'), threshold -b and Alg. 1's alpha_t, beta_t computes Alg. 1's y_t and x_{k+1} = ReLU(x_k + y_N).

    Alg. 2 lines 1-14 against Alg. 1 with y_0 = x_k (sec 3.3), eq (17) mapping: g^(1) ~ -DAy,
    g^(2) ~ -ADy, g^(3) ~ ADAy and the threshold ~ -b (the paper: "b can be simply viewed as a
    threshold"; Alg. 2 line 6 omits it). alpha_t, beta_t: Alg. 1's step sizes (learnable in the net).
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05), N=st.integers(1, 8),
           absorb=st.booleans())
    def check(problem, N, absorb):
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

    check()
    evidence.record()


@pytest.mark.claim("ND-block", role="assumption")
def test_nd_block_needs_threshold_b(evidence):
    """Alg. 2 as printed (no threshold b in line 6) does not compute Alg. 1's iterates: it runs CG on Q y = 0.

    Eq (17) has a -b term; Alg. 2 line 6 (g_t = y_t + g^(1) + g^(2) + g^(3)) drops it. Since
    b = U^T r = -Q x_k depends on x_k, no constant bias can stand in for it.
    """

    @given(problem=nd_problems(min_abs_eig=0.2, max_abs_eig=0.9, margin=0.05), N=st.integers(1, 8))
    def check(problem, N):
        A, x = problem
        _, U, r, Q, b = _dense_system(A, x)
        cg = nd.conjugate_gradient(Q, b, x, N)
        w = nd.newton_cg_block_weights(A, x)
        _, ys = nd.newton_cg_block(x, w.W1, w.W2, w.W3, w.W4, cg.alphas, cg.betas)
        gap = np.linalg.norm(ys[1] - cg.iterates[1])
        # y_1 differs by alpha_0 * b; |alpha_0| >= 1 / ||Q|| >= 1 / 3.61 and ||b|| = ||Q x|| >= 0.01 ||x||.
        assert gap > 1e-6 * np.linalg.norm(x), f"gap {gap:.3g}"
        evidence.add(gap / np.linalg.norm(x), "|y_1(no threshold) - y_1(Alg. 1)| / |x|", worst="min")

    check()
    evidence.record()
