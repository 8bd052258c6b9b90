"""Theory checks for OAI: Li et al., "Optimization Algorithm Inspired Deep Neural Network Structure
Design" (2018), papers/002_605766797e3c4bb5.txt. One test (or a small group) per claim id.

The references are independent of the formula under test: direct evaluation of phi(W x)
recurrences, central finite differences and quadrature of Table 1's objectives, the z-space
algorithms of Sec. 2 run on the gradient (9) (itself checked by finite differences), dense solves
for the minimiser of the quadratics, and torch float64 modules for ResNet / DenseNet / DMRNet.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, optimize

from analysis.theory import oai
from theory_checks.strategies import activation_names, dims, norm_bounded_matrices, rng, seeds, spd_matrices

EPS = np.finfo(np.float64).eps
# Activations that are injective: phi(a) = phi(b) forces a = b, so a wrong linear map shows.
INJECTIVE = ("sigmoid", "tanh", "leaky_relu", "elu")
# Max Lipschitz constant of the six activations (swish' peaks at ~1.0998).
LIP_PHI = 1.1


def _direct_feedforward(x0, W, name, steps):
    """x_{k+1} = phi(W x_k) evaluated directly (the right-hand side of Lemma 1)."""
    xs = [x0]
    for _ in range(steps):
        xs.append(oai.activation(name)(W @ xs[-1]))
    return np.array(xs)


def _propagation_tol(steps: int, n: int, cond_u: float, scale: float) -> float:
    # Each step rounds a length-n matrix product and a solve with U (relative error ~ n eps cond(U));
    # the map x -> phi(W x) is Lipschitz with constant <= LIP_PHI ||W|| <= LIP_PHI (||W|| <= 1 here), so
    # errors grow at most geometrically: sum_k LIP_PHI^k <= steps * LIP_PHI^steps. Factor 8 for the
    # constants hidden in "~" (LAPACK's solve bound is a small multiple of n eps cond).
    return 8 * steps * LIP_PHI ** steps * n * EPS * cond_u * max(1.0, scale)


def _spd_setup(draw_w, x_seed):
    W = draw_w
    U = oai.lemma1_square_root(W)
    x0 = rng(x_seed).standard_normal(W.shape[0])
    return W, U, x0


# --------------------------------------------------------------------------------------------
# OAI-lemma1
# --------------------------------------------------------------------------------------------

def _objective_here(z, U, name) -> float:
    """f(z) = ||z||^2/2 - sum_i Psi(U_i^T z), eq (8), U_i the i-th column of U (Psi from Table 1)."""
    return 0.5 * float(z @ z) - float(np.sum(oai.psi(name, U.T @ z)))


@pytest.mark.claim("OAI-lemma1")
@given(U=norm_bounded_matrices(min_fraction=0.3), name=activation_names(), seed=seeds())
def test_oai_lemma1_gradient_formula(evidence, U, name, seed):
    """Eq (9), grad f(z) = z - U phi(U^T z), matches central differences of f of eq (8) for every activation and a general (non-symmetric) U.

    Lemma 1's proof: with Psi' = phi, grad_z sum_i Psi(U_i^T z) = U phi(U^T z), so
    grad f(z_k) = z_k - U phi(U^T z_k) (9); the paper writes U phi(U z) because its U is symmetric.
    That step of the lemma needs no symmetry, so U is a Gaussian matrix (||U||_2 in [0.3, 0.95]):
    a gradient that swaps U and U^T fails here. f is evaluated in the test from eq (8) (U_i the
    columns of U), and the project's ``objective`` is checked against it.
    """
    n = U.shape[0]
    z = rng(seed).standard_normal(n) * 2
    t = U.T @ z
    phi = oai.activation(name)
    # Size of everything summed in f: its rounding is <= n EPS times this per evaluation (sums of n
    # terms), Psi's own evaluation (the dilogarithm for swish) a few ulps more: 4 n EPS mag in all.
    mag = (1.0 + 0.5 * float(z @ z) + float(np.sum(np.abs(oai.psi(name, t))))
           + float(np.abs(phi(t)) @ (np.abs(U).T @ np.abs(z))))
    f_err = abs(float(oai.objective(z, U, name)) - _objective_here(z, U, name))
    assert f_err <= 8 * n * EPS * mag, f"objective (8) differs from its definition by {f_err:.3g}"
    g = oai.objective_gradient(z, U, name)
    h = 1e-6
    fd = np.array([(_objective_here(z + e, U, name) - _objective_here(z - e, U, name)) / (2 * h)
                   for e in np.eye(n) * h])
    # Central differences: rounding 2 * 4 n EPS mag / (2 h); truncation h^2 |f'''| / 6 with
    # |f'''| = |sum_i phi''(t_i) U_ji^3| <= n max|phi''| <= n (|U_ji| <= ||U|| < 1, |phi''| <= 1 for the
    # six). If a kink of phi (relu, leaky relu: phi' jumps; elu: phi'' jumps) lies within h of some
    # t_i = U_i^T z (|t_i| <= h ||U|| <= h), the central difference errs by at most h n (jump <= 1).
    # A wrong gradient (U and U^T swapped, a wrong sign) is off by O(||U||^2) >= 0.09.
    kink = h * n if name in oai.KINKS and float(np.min(np.abs(t))) <= h else 0.0
    tol = 4 * n * EPS * mag / h + h * h * n / 6 + kink
    err = float(np.max(np.abs(g - fd)))
    evidence.add(err / tol, "|eq (9) - central differences| / tolerance")
    evidence.add(float(np.linalg.norm(U - U.T, 2) / np.linalg.norm(U, 2)), "||U - U^T|| / ||U||", worst="min")
    assert err <= tol, f"eq (9) vs central differences: {err:.3g} > {tol:.3g} for {name}"
    evidence.headline(f"general U (||U - U^T|| / ||U|| >= {evidence.min('||U - U^T|| / ||U||'):.2g}): max |eq (9) - "
                      f"central differences| = {evidence.max('|eq (9) - central differences| / tolerance'):.2g} "
                      "x its tolerance")


@pytest.mark.claim("OAI-lemma1")
@given(W=spd_matrices(max_condition=100.0), name=activation_names(), steps=st.integers(1, 8), seed=seeds())
def test_oai_lemma1_gd_in_z_maps_back_to_feedforward(evidence, W, name, steps, seed):
    """Gradient descent (1) on f of eq (8) in z = U x, U = sqrt(W), mapped back by x = U^{-1} z, equals x_{k+1} = phi(W x_k).

    Lemma 1, eq (8)-(10): for W symmetric positive definite, GD with unit step on
    f(z) = ||z||^2/2 - sum_i Psi(U_i^T z) gives z_{k+1} = U phi(U z_k), hence
    x_{k+1} = phi(U^2 x_k) = phi(W x_k). Reference: direct evaluation of phi(W x_k).
    """
    W, U, x0 = _spd_setup(W, seed)
    # U really is the symmetric square root (an independent property, not the lemma's conclusion).
    cond_u = float(np.linalg.cond(U))
    assert np.allclose(U, U.T, rtol=0, atol=0) and np.allclose(U @ U, W, rtol=0, atol=16 * W.shape[0] * EPS)
    xs = oai.map_back(U, oai.gradient_descent_z(U @ x0, U, name, steps))
    ref = _direct_feedforward(x0, W, name, steps)
    tol = _propagation_tol(steps, W.shape[0], cond_u, float(np.max(np.abs(ref))))
    err = float(np.max(np.abs(xs - ref)))
    evidence.add(err / tol)
    assert err <= tol
    # the project's x_{k+1} = phi(W x_k) (eq (7)) is the right-hand side: the same products, so equal to
    # the mat-vec's round-off, propagated like the comparison above
    ff = oai.feedforward_x(x0, W, name, steps)
    assert ff.shape == ref.shape and float(np.max(np.abs(ff - ref))) <= tol

    evidence.headline(f"max |U^-1 z_k - phi(W x_k)| = {evidence.max():.2g} x its round-off tolerance, cond(W) <= 100")


def _non_symmetric_positive(gen: np.random.Generator, n: int) -> np.ndarray:
    """S + A with S SPD (eigenvalues in [0.3, 1]) and A antisymmetric of norm 0.5: eigenvalues have
    real part >= 0.3 (x^H (S + A) x has real part x^H S x), so the principal sqrt is real."""
    q = np.linalg.qr(gen.standard_normal((n, n)))[0]
    S = (q * gen.uniform(0.3, 1.0, n)) @ q.T
    B = gen.standard_normal((n, n))
    A = (B - B.T) / 2
    return (S + S.T) / 2 + 0.5 * A / np.linalg.norm(A, 2)


def _one_step_tol(n: int, U: np.ndarray, M: np.ndarray, x0: np.ndarray) -> float:
    """Round-off of U^-1 z_1 (one GD step on (8), mapped back) against phi(M x_0) with M = U^T U: the
    products U x_0, U^T z and M x_0 round by n EPS ||U||^2 ||x_0|| each (times LIP_PHI through phi),
    z_1 = z_0 - grad f(z_0) by EPS (|z_0| + |grad|), and the solve with U by n EPS cond(U); factor 8."""
    cond_u = float(np.linalg.cond(U))
    size = (1.0 + float(np.linalg.norm(U, 2)) ** 2) * float(np.linalg.norm(x0))
    return 8 * n * EPS * cond_u * LIP_PHI * max(1.0, size)


@pytest.mark.claim("OAI-lemma1", role="assumption")
@given(n=dims(2, 6), name=st.sampled_from(INJECTIVE), seed=seeds())
def test_oai_lemma1_fails_without_symmetry(evidence, n, name, seed):
    """With W not symmetric, the lemma's recipe U = sqrt(W) (real, U^2 = W) maps the project's GD back to phi(U^T U x), not phi(W x).

    Lemma 1 assumes W symmetric. For any real U, grad of sum_i Psi(U_i^T z) is U phi(U^T z), so
    GD on (8) mapped back is x_{k+1} = phi(U^T U x_k); U^T U is symmetric, so it cannot be W.
    Counterexample: W = S + A (S SPD, A antisymmetric), U = principal sqrtm(W) (real). The
    project's ``gradient_descent_z`` and ``map_back`` must land on phi(U^T U x_0) (computed here)
    to round-off, and therefore miss phi(W x_0): a gradient with U and U^T swapped lands elsewhere.
    """
    gen = rng(seed)
    W = _non_symmetric_positive(gen, n)
    U = np.real_if_close(scipy.linalg.sqrtm(W))
    assert np.isrealobj(U) and np.allclose(U @ U, W, atol=1e-10)  # the literal "U = sqrt(W)" exists
    phi = oai.activation(name)
    UtU = U.T @ U
    gaps, fits = [], []
    for x0 in np.eye(n):  # every basis vector: the first step exposes every column of U^T U - W
        x1 = oai.map_back(U, oai.gradient_descent_z(U @ x0, U, name, 1))[1]
        gaps.append(np.max(np.abs(x1 - phi(W @ x0))))
        fits.append(np.max(np.abs(x1 - phi(UtU @ x0))) / _one_step_tol(n, U, UtU, x0))
    gap, fit = float(max(gaps)), float(max(fits))
    evidence.add(gap, "|U^-1 z_1 - phi(W x_0)|", worst="min")
    evidence.add(fit, "|U^-1 z_1 - phi(U^T U x_0)| / round-off bound")
    # What the project computes is the predicted phi(U^T U x_0), to round-off.
    assert fit <= 1.0, f"one GD step mapped back is not phi(U^T U x_0): {fit:.3g} x its tolerance"
    # Round-off is ~1e-15 here (the bound above); a gap 1e7 times larger is a real discrepancy.
    assert gap > 1e-8
    evidence.headline(f"with U = sqrtm(W), W != W^T, one step: |U^-1 z_1 - phi(W x_0)| >= "
                      f"{evidence.min('|U^-1 z_1 - phi(W x_0)|'):.2g}, while it equals phi(U^T U x_0) to "
                      f"{evidence.max('|U^-1 z_1 - phi(U^T U x_0)| / round-off bound'):.2g} x round-off")


@pytest.mark.claim("OAI-lemma1", role="assumption")
@given(n=dims(2, 6), name=st.sampled_from(INJECTIVE), seed=seeds())
def test_oai_lemma1_fails_without_positive_definiteness(evidence, n, name, seed):
    """With W symmetric but indefinite, sqrt(W) is not real and the real stand-in sqrt(|W|) maps the project's GD back to phi(|W| x), not phi(W x).

    Lemma 1 assumes W positive definite. Any real U has U^T U positive semi-definite, while W has
    v^T W v < 0 for an eigenvector v: no real U gives U^T U = W (certificate: the eigenvalue).
    The project's GD, mapped back, lands on phi(|W| x_0) (computed here) to round-off.
    """
    gen = rng(seed)
    q = np.linalg.qr(gen.standard_normal((n, n)))[0]
    eig = gen.uniform(0.2, 1.0, n)
    eig[gen.integers(n)] *= -1
    W = (q * eig) @ q.T
    W = (W + W.T) / 2
    principal = scipy.linalg.sqrtm(W.astype(complex))
    assert np.max(np.abs(np.imag(principal))) > 0.1  # no real principal square root
    v = q[:, int(np.argmin(eig))]
    assert v @ W @ v < -0.1  # the certificate that U^T U = W has no real solution
    U = (q * np.sqrt(np.abs(eig))) @ q.T
    absW = (q * np.abs(eig)) @ q.T
    phi = oai.activation(name)
    gaps, fits = [], []
    for x0 in np.eye(n):
        x1 = oai.map_back(U, oai.gradient_descent_z(U @ x0, U, name, 1))[1]
        gaps.append(np.max(np.abs(x1 - phi(W @ x0))))
        fits.append(np.max(np.abs(x1 - phi(absW @ x0))) / _one_step_tol(n, U, absW, x0))
    gap, fit = float(max(gaps)), float(max(fits))
    evidence.add(gap, "|U^-1 z_1 - phi(W x_0)|", worst="min")
    evidence.add(fit, "|U^-1 z_1 - phi(|W| x_0)| / round-off bound")
    assert fit <= 1.0, f"one GD step mapped back is not phi(|W| x_0): {fit:.3g} x its tolerance"
    assert gap > 1e-8  # round-off is ~1e-15
    evidence.headline(f"W indefinite, U = sqrt(|W|), one step: gap >= {evidence.min('|U^-1 z_1 - phi(W x_0)|'):.2g} "
                      f"(it lands on phi(|W| x_0) to round-off); sqrtm(W) complex")


# --------------------------------------------------------------------------------------------
# OAI-table1
# --------------------------------------------------------------------------------------------

def _points_away_from_kinks(seed: int, size: int = 16, half_width: float = 20.0) -> np.ndarray:
    # |t| >= 1e-3 keeps the finite-difference stencil (h <= 2e-5) clear of the kink at 0.
    gen = rng(seed)
    return gen.choice([-1.0, 1.0], size) * (1e-3 + half_width * gen.uniform(0, 1, size))


@pytest.mark.claim("OAI-table1")
@given(name=st.sampled_from(oai.TABLE1_ACTIVATIONS), seed=seeds(), as_printed=st.booleans())
def test_oai_table1_objective_derivative_is_activation(evidence, name, seed, as_printed):
    """Table 1's objectives Psi (as printed and continuous) have Psi' = phi for every activation, by central differences away from kinks.

    Table 1 lists f(x) = ||x||^2/2 - sum_i Psi(U_i^T x) with Psi' = phi for sigmoid, tanh, ReLU,
    leaky ReLU, ELU, swish (and softplus, softsign). Swish and softplus use the dilogarithm.
    """
    t = _points_away_from_kinks(seed)
    h = 1e-6 * np.maximum(1.0, np.abs(t))
    p = lambda u: oai.psi(name, u, as_printed=as_printed)  # noqa: E731
    fd = (p(t + h) - p(t - h)) / (2 * h)
    # Rounding of the difference: 2 eps (|Psi| + 1) / (2h); truncation h^2 max|phi''| / 6 with
    # max|phi''| <= 1 for all eight activations (ELU: e^t <= 1 for t <= 0; swish <= 0.5). Factor 4 margin.
    tol = 4 * (EPS * (np.abs(p(t)) + 1) / h + h * h / 6)
    err = np.abs(fd - oai.activation(name)(t))
    evidence.add(float(np.max(err / tol)))
    assert np.all(err <= tol), f"{name}: worst t = {t[np.argmax(err / tol)]}"

    evidence.headline(f"8 activations, as printed and continuous: max |FD Psi' - phi| = {evidence.max():.2g} "
                    "x tolerance")


@pytest.mark.claim("OAI-table1")
@given(name=st.sampled_from(oai.TABLE1_ACTIVATIONS), lo=st.floats(-15, -1e-3), hi=st.floats(1e-3, 15))
def test_oai_table1_objective_is_antiderivative_across_zero(evidence, name, lo, hi):
    """Our continuous Psi satisfies Psi(b) - Psi(a) = integral of phi over [a, b] for a < 0 < b, across the kinks.

    The fundamental theorem of calculus, checked with adaptive quadrature (scipy.integrate.quad,
    the kink at 0 passed as a breakpoint): Psi is an antiderivative of phi on all of R.
    """
    ref, abserr = integrate.quad(lambda u: float(oai.activation(name)(u)), lo, hi, points=[0.0],
                                 epsabs=1e-11, epsrel=1e-11, limit=200)
    got = float(oai.psi(name, hi) - oai.psi(name, lo))
    # quad's own error estimate plus rounding of Psi at |t| <= 15 (|Psi| <= 113).
    tol = 10 * abserr + 64 * EPS * (1 + abs(ref) + 113)
    evidence.add(abs(got - ref))
    assert abs(got - ref) <= tol

    evidence.headline(f"max |Psi(b) - Psi(a) - quad| = {evidence.max():.1e}")


@pytest.mark.claim("OAI-table1", role="refutes")
@given(a=st.floats(0.1, 3.0))
def test_oai_table1_printed_elu_objective_jumps_at_zero(evidence, a):
    """Table 1's ELU objective as printed, a(e^t - t) for t <= 0 and t^2/2 for t > 0, jumps by a at 0: it is no antiderivative of ELU (fix: a(e^t - t - 1)).

    Table 1, ELU row. Its derivative is ELU on each side of 0, but at t = 0 the t <= 0 branch is
    a and the t > 0 branch tends to 0, so Psi has no derivative at 0 and
    Psi(b) - Psi(a') != integral of ELU for a' < 0 < b. Harmless for the networks (only Psi' is
    used), but the table's claim "objective with derivative phi" fails for this row as printed.
    """
    below = float(oai.psi("elu", -1e-12, a=a, as_printed=True))
    above = float(oai.psi("elu", 1e-12, a=a, as_printed=True))
    ref, _ = integrate.quad(lambda u: float(oai.activation("elu", a=a)(u)), -1.0, 1.0, points=[0.0])
    printed = float(oai.psi("elu", 1.0, a=a, as_printed=True) - oai.psi("elu", -1.0, a=a, as_printed=True))
    evidence.add((below - above) / a)
    # The jump is a up to the O(1e-12) offset of the evaluation points; a >= 0.1 is far above that.
    assert abs((below - above) - a) < 1e-9
    assert abs(printed - ref - (-a)) < 1e-9

    evidence.headline(f"printed ELU Psi jumps at 0 by {evidence.min():.6g}..{evidence.max():.6g} x a (a in [0.1, 3]); "
                    "Psi(1) - Psi(-1) misses the integral of ELU by a")


# --------------------------------------------------------------------------------------------
# OAI-hb-agd-admm
# --------------------------------------------------------------------------------------------

_CASE = dict(W=spd_matrices(max_condition=100.0), name=activation_names(), steps=st.integers(1, 10), seed=seeds())


def _check_mapped(xs_z, U, xs_x, steps, label) -> float:
    """Assert U^{-1} z_k = x_k to round-off; returns the error as a fraction of its tolerance."""
    ref_scale = float(np.max(np.abs(xs_x)))
    # As for Lemma 1, times 4: momentum (beta <= 0.9, |beta_k| < 1, |h| <= 2) adds at most a factor
    # (1 + beta) per step to the growth of errors, and ADMM halves two terms per step.
    tol = _propagation_tol(steps, U.shape[0], float(np.linalg.cond(U)), ref_scale) * 4 * 1.9 ** steps
    err = float(np.max(np.abs(oai.map_back(U, xs_z) - xs_x)))
    assert err <= tol, f"{label}: {err:.3g} > {tol:.3g}"
    return err / tol


@pytest.mark.claim("OAI-hb-agd-admm")
@given(**_CASE, beta=st.floats(0.0, 0.9))
def test_oai_hb_agd_admm_heavy_ball(evidence, W, name, steps, seed, beta):
    """Heavy ball (2) on f of eq (8), mapped back by x = U^{-1} z, is x_{k+1} = phi(W x_k) + beta (x_k - x_{k-1}), eq (11).

    Sec. 4, eq (11); z_{-1} = z_0 (x_{-1} = x_0).
    """
    W, U, x0 = _spd_setup(W, seed)
    zs = oai.heavy_ball_z(U @ x0, U, name, steps, beta)
    xs = oai.heavy_ball_x(x0, W, name, steps, beta)
    evidence.add(_check_mapped(zs, U, xs, steps, "HB (11)"))

    evidence.headline(f"heavy ball (2) -> (11): max |U^-1 z_k - x_k| = {evidence.max():.2g} x its round-off tolerance")


@pytest.mark.claim("OAI-hb-agd-admm")
@given(**_CASE)
def test_oai_hb_agd_admm_nesterov_form3(evidence, W, name, steps, seed):
    """Nesterov (3) on f of eq (8), z mapped back, is x_{k+1} = phi(W (x_k + beta_k (x_k - x_{k-1}))), eq (12).

    Sec. 4, eq (12) with beta_k = theta_k (1 - theta_{k-1}) / theta_{k-1}.
    """
    W, U, x0 = _spd_setup(W, seed)
    zs, _ = oai.nesterov_z(U @ x0, U, name, steps)
    evidence.add(_check_mapped(zs, U, oai.nesterov_x(x0, W, name, steps), steps, "AGD (12)"))

    evidence.headline(f"Nesterov (3) -> (12): max |U^-1 z_k - x_k| = {evidence.max():.2g} x its round-off tolerance")


@pytest.mark.claim("OAI-hb-agd-admm")
@given(**_CASE)
def test_oai_hb_agd_admm_nesterov_form4(evidence, W, name, steps, seed):
    """Nesterov form (4)-(5) on f of eq (8), mapped back, is eq (13): x_{k+1} = sum_j h_{k+1,j} phi(W x_j) + x_k - sum_j h_{k+1,j} x_j.

    Sec. 4, eq (13); the x of (13) is U^{-1} y.
    """
    W, U, x0 = _spd_setup(W, seed)
    ys = oai.nesterov_form4_z(U @ x0, U, name, steps)
    evidence.add(_check_mapped(ys, U, oai.nesterov_form4_x(x0, W, name, steps), steps, "AGD2 (13)"))

    evidence.headline(f"Nesterov (4) -> (13): max |U^-1 z_k - x_k| = {evidence.max():.2g} x its round-off tolerance")


@pytest.mark.claim("OAI-hb-agd-admm")
@given(**_CASE)
def test_oai_hb_agd_admm_linearized_admm(evidence, W, name, steps, seed):
    """Linearized ADMM (6) on f(z) + f(y), y = z, mapped back (x' = U^{-1} z, x = U^{-1} y), is eq (14).

    Sec. 4, eq (14), lambda_0 = 0, x'_0 = x_0. Each z-space iterate is also checked to be the
    argmin of its subproblem in (6): the subproblem gradient vanishes there (Hessian 2 I, so the
    stationary point is the argmin).
    """
    W, U, x0 = _spd_setup(W, seed)
    z, y, lam = oai.linearized_admm_z(U @ x0, U @ x0, U, name, steps)
    grad = lambda v: oai.objective_gradient(v, U, name)  # noqa: E731
    for k in range(steps):
        gz = grad(z[k]) + (z[k + 1] - z[k]) + lam[k] + (z[k + 1] - y[k])
        gy = grad(y[k]) + (y[k + 1] - y[k]) - lam[k] - (z[k + 1] - y[k + 1])
        assert np.max(np.abs(gz)) < 1e-12 * (1 + np.max(np.abs(z))) * 64
        assert np.max(np.abs(gy)) < 1e-12 * (1 + np.max(np.abs(y))) * 64
        assert np.allclose(lam[k + 1], lam[k] + z[k + 1] - y[k + 1], rtol=0, atol=1e-13)
    xps, xs = oai.admm_x(x0, W, name, steps)
    evidence.add(max(_check_mapped(z, U, xps, steps, "ADMM (14) x'"),
                     _check_mapped(y, U, xs, steps, "ADMM (14) x")))

    evidence.headline(f"ADMM (6) -> (14): max |U^-1 (z_k, y_k) - (x'_k, x_k)| = {evidence.max():.2g} x its "
                    "round-off tolerance; every iterate solves its subproblem")


# --------------------------------------------------------------------------------------------
# OAI-agd-forms
# --------------------------------------------------------------------------------------------

def _theta_reference(steps: int) -> np.ndarray:
    """theta_0..theta_steps from their definition in eq (3), computed here, not by the project:
    theta_0 = 1 and theta_k the root in (0, 1) of (1 - theta) / theta^2 = 1 / theta_{k-1}^2, i.e. of
    q(theta) = theta^2 - (1 - theta) theta_{k-1}^2, by bracketing (scipy's brentq on [0, 1], where q
    goes from -theta_{k-1}^2 < 0 to 1 > 0 and has exactly one root) to brentq's finest rtol, 4 EPS."""
    th = [1.0]
    for _ in range(steps):
        c = th[-1] ** 2
        th.append(optimize.brentq(lambda t, c=c: t * t - (1.0 - t) * c, 0.0, 1.0, xtol=1e-300, rtol=4 * EPS,
                                  maxiter=500))
    return np.array(th)


def _beta_reference(steps: int) -> np.ndarray:
    """beta_k = theta_k (1 - theta_{k-1}) / theta_{k-1} (eq (3)) from ``_theta_reference``; beta_0 = 0
    (it multiplies z_0 - z_{-1} = 0; see analysis/theory/oai.py's module doc)."""
    th = _theta_reference(steps)
    beta = np.zeros(steps + 1)
    beta[1:] = th[1:] * (1 - th[:-1]) / th[:-1]
    return beta


@pytest.mark.claim("OAI-agd-forms")
@given(steps=st.integers(1, 60))
def test_oai_agd_forms_theta_schedule(evidence, steps):
    """The project's theta_k solves eq (3)'s (1 - theta_k)/theta_k^2 = 1/theta_{k-1}^2 with theta_0 = 1, and equals the root computed here; its beta_k = theta_k (1 - theta_{k-1}) / theta_{k-1}.

    Sec. 2, eq (3): "theta_k is computed via (1 - theta_k)/theta_k^2 = 1/theta_{k-1}^2 and
    theta_0 = 1". The recurrence's residual is evaluated here on the project's theta
    (``nesterov_theta``), and theta is compared with an independent root-finder (``_theta_reference``);
    the momentum (``nesterov_momentum``) with eq (3)'s beta_k from the reference theta.
    """
    th = oai.nesterov_theta(steps)
    ref = _theta_reference(steps)
    k = np.arange(steps + 1)
    assert th.shape == (steps + 1,) and th[0] == 1.0 and np.all((th[1:] > 0) & (th[1:] < 1))
    # Recurrence, as printed, on the project's numbers: r_k = (1 - theta_k) theta_{k-1}^2 / theta_k^2 = 1.
    # theta_k is computed from theta_{k-1} in ~6 operations (relative error <= 6 EPS), and
    # |d ln r_k / d ln theta_k| = 2 + theta_k / (1 - theta_k) <= 3.7 (theta_k <= theta_1 = 0.618 for
    # k >= 1); evaluating r_k here adds 6 EPS: 3.7 * 6 + 6 < 32 EPS.
    resid = np.abs((1 - th[1:]) * th[:-1] ** 2 / th[1:] ** 2 - 1)
    assert np.all(resid <= 32 * EPS), f"recurrence broken at k = {int(np.argmax(resid)) + 1}: |r_k - 1| = {resid.max():.3g}"
    # Against the reference: a relative error in theta_{k-1} reaches theta_k multiplied by
    # 2 theta_k / (2 theta_k + theta_{k-1}^2) < 1 (differentiate theta_k^2 = (1 - theta_k) theta_{k-1}^2),
    # so errors do not grow; each step adds <= 6 EPS (project) + 4 EPS (brentq's rtol): 10 k EPS, 16 k EPS.
    rel = np.abs(th - ref) / ref
    assert np.all(rel <= 16 * k * EPS), f"theta_k differs from its definition at k = {int(np.argmax(rel))}"
    # beta_k <= 1 combines theta_k, theta_{k-1} (16 k EPS each) and 1 - theta_{k-1} (relative error
    # amplified by theta / (1 - theta) <= 1.62): <= (16 k (2 + 1.62) + 4) EPS <= 64 k EPS for k >= 1.
    beta = oai.nesterov_momentum(steps)
    beta_ref = _beta_reference(steps)
    assert np.all(np.abs(beta - beta_ref) <= 64 * np.maximum(k, 1) * EPS)
    evidence.add(float(resid.max() / EPS), "max |(1 - theta_k) theta_{k-1}^2 / theta_k^2 - 1| / EPS")
    evidence.add(float(np.max(rel[1:] / (k[1:] * EPS))), "max_k |theta_k - reference| / (theta_k k EPS)")


@pytest.mark.claim("OAI-agd-forms")
@given(n=dims(), name=activation_names(), steps=st.integers(1, 20), seed=seeds())
def test_oai_agd_forms_form4_equals_form3(evidence, n, name, steps, seed):
    """Nesterov form (4) with the weights h of eq (5) produces the same y_k as form (3) run here with theta_k from its definition, for f of eq (8) with any U.

    Sec. 2, eq (3)-(5). The identity is algebraic (it holds for any gradient map), so U is a
    general (non-symmetric) Gaussian matrix; up to 20 steps exercise all three branches of (5).
    The reference is form (3) written out here with the gradient (9) and beta_k from
    ``_beta_reference`` (theta by root-finding, not the project's schedule), so a wrong theta in the
    project breaks the equality from y_2 on (beta_1 = 0 for any theta with theta_0 = 1). The
    project's own form (3), ``nesterov_z``, must match the same reference.
    """
    gen = rng(seed)
    U = gen.standard_normal((n, n))
    U *= 0.9 / np.linalg.norm(U, 2)
    y0 = gen.standard_normal(n)
    phi = oai.activation(name)
    beta = _beta_reference(steps)
    z_prev = z = y0
    ref = []
    for k in range(steps + 1):  # y_k = z_k + beta_k (z_k - z_{k-1}), z_{k+1} = y_k - grad f(y_k), eq (3), (9)
        y = z + beta[k] * (z - z_prev)
        ref.append(y)
        z, z_prev = y - (y - U @ phi(U.T @ y)), z
    ref = np.array(ref)
    y4 = oai.nesterov_form4_z(y0, U, name, steps)
    _, y3 = oai.nesterov_z(y0, U, name, steps)
    # The three evaluate the gradient at the same points up to rounding: form (4) sums k terms with
    # |h| <= 2 (h_{k+1,k} = 1 + beta <= 2, the others decay geometrically), form (3) recurses: ~4 k EPS |y|
    # per step, 4 steps^2 EPS accumulated, factor 4 margin: 16 steps^2 EPS. The reference's beta differs
    # from the project's by <= 64 k EPS (previous test), times |z_k - z_{k-1}| <= 2 |y|: another
    # 128 k EPS |y| per step, 64 steps^2 EPS accumulated, factor 2: 128. Errors are carried forward by
    # e_{k+1} = J_k ((1 + beta_k) e_k - beta_k e_{k-1}), J_k = U diag(phi') U^T with ||J_k|| <= 0.81 LIP_PHI
    # < 0.9 and J_k >= -0.1 * 0.81 I (phi' >= -0.1): on that spectrum the momentum recurrence with
    # beta < 1 is stable, so they are not amplified from step to step.
    scale = 1 + float(np.max(np.abs(ref)))
    tol = (16 + 128) * steps ** 2 * EPS * scale
    err4 = float(np.max(np.abs(y4 - ref)))
    err3 = float(np.max(np.abs(y3 - ref[:steps])))
    evidence.add(err4 / tol, "|y_k(4) - y_k(3, reference theta)| / tolerance")
    evidence.add(err3 / tol, "|y_k(3, project) - y_k(3, reference theta)| / tolerance")
    assert err4 <= tol, f"form (4) vs form (3): {err4:.3g} > {tol:.3g}"
    assert err3 <= tol, f"the project's form (3) vs form (3) with the reference theta: {err3:.3g} > {tol:.3g}"
    evidence.headline(f"max |y_k(4) - y_k(3)| = {evidence.max('|y_k(4) - y_k(3, reference theta)| / tolerance'):.2g} "
                      "x its round-off tolerance, up to 20 steps, form (3) run with theta_k from its definition")


# --------------------------------------------------------------------------------------------
# OAI-rates
# --------------------------------------------------------------------------------------------

KAPPAS = np.geomspace(10.0, 300.0, 4)
RATE_EPS = 1e-6


def _quadratics(seed: int, n: int):
    """One quadratic per kappa in KAPPAS: mu = 1, L = kappa (both pinned), the other eigenvalues
    log-uniform between; random rotation; the initial error has every eigen-component of size in
    [0.5, 1] so the slowest mode is always present (no lucky start)."""
    gen = rng(seed)
    A, b, z0 = [], [], []
    for kappa in KAPPAS:
        eig = np.exp(gen.uniform(0.0, np.log(kappa), n))
        eig[:2] = (1.0, kappa)
        q = np.linalg.qr(gen.standard_normal((n, n)))[0]
        Ak = (q * eig) @ q.T
        bk = gen.standard_normal(n)
        zstar = np.linalg.solve(Ak, bk)
        A.append((Ak + Ak.T) / 2)
        b.append(bk)
        z0.append(zstar + q @ (gen.choice([-1.0, 1.0], n) * gen.uniform(0.5, 1.0, n)))
    return np.array(A), np.array(b), np.array(z0)


def _iterations(A, b, z0, method, momentum=None):
    counts = []
    for i, kappa in enumerate(KAPPAS):
        step, mom = oai.tuned_parameters(method, 1.0, float(kappa))
        if momentum is not None:
            # A fixed momentum with the unit step of the paper (step 1/L once f is scaled to L = 1);
            # Polyak's step ~4/L would diverge with beta = 0.3 (stability needs step < 2 (1 + beta) / L).
            step, mom = 1.0 / float(kappa), momentum
        counts.append(oai.iterations_to_accuracy(A[i:i + 1], b[i:i + 1], z0[i:i + 1], method, step, mom,
                                                 RATE_EPS, 200_000)[0])
    return np.array(counts, dtype=float)


def _slope(counts):
    return float(np.polyfit(np.log(KAPPAS), np.log(counts), 1)[0])


# Tolerance on the fitted exponent. Iterations k(kappa) = ln(c / eps) / (-ln rho(kappa)):
# - c, the initial error along the slowest mode relative to the whole, lies in [0.5 / sqrt(n), 1]
#   (by construction): ln(c / eps) varies by at most ln(2 sqrt 8) = 1.7 of 13.8, slope error
#   <= ln(1.14) / ln(30) = 0.04 (kappa spans 10..300, ln 30 = 3.4);
# - -ln rho differs from 1/kappa (GD), 2/sqrt(kappa) (HB), 1/sqrt(kappa) (AGD) by a factor <= 1.17 at
#   kappa = 10 and -> 1 as kappa grows: slope error <= ln(1.17) / ln(30) = 0.046;
# - HB's double roots at mu and L give k rho^k: ln k (3 to 5) adds to ln(1/eps), slope error <= 0.035.
# Sum < 0.125; 0.15 leaves margin while still separating 1 from 1/2.
SLOPE_TOL = 0.15


def _count_alone(A, b, z0, method, step, momentum, eps, max_iter):
    """One problem's iteration count, written here from eq (1)-(3): (count, whether the crossing was a near tie)."""
    zstar = np.linalg.solve(A, b)
    target = eps * np.linalg.norm(z0 - zstar)
    if np.linalg.norm(z0 - zstar) <= target:
        return 0, False
    z, prev = z0.copy(), z0.copy()
    for k in range(1, max_iter + 1):
        with np.errstate(over="ignore", invalid="ignore"):
            y = z + momentum * (z - prev) if method == "agd" else z
            new = y - step * (A @ y - b) + (0.0 if method == "agd" else momentum * (z - prev))
            z, prev = new, z
            err = np.linalg.norm(z - zstar)
        if not np.isfinite(err):
            return max_iter + 1, False
        if err <= target:
            return k, abs(err / target - 1.0) < 1e-9
    return max_iter + 1, False


@pytest.mark.claim("OAI-rates")
@given(seed=seeds(), n=dims(2, 6), method=st.sampled_from(oai.RATE_METHODS))
def test_oai_rates_counts_are_the_methods_iterations(evidence, seed, n, method):
    """``iterations_to_accuracy`` (what the rate check fits) counts the iterations of GD (1), HB (2) and AGD (3) on a batch: the same counts as each problem iterated alone here.

    The batch holds a solved start (count 0), problems that converge, one that cannot within
    ``max_iter`` (count max_iter + 1) and one that diverges (step 10 / L: count max_iter + 1, and the
    others of the batch go on). A count may differ by one only where the error crosses the target
    within 1e-9 relative (the batched and the single mat-vec round differently).
    """
    A, b, z0 = _quadratics(seed, n)
    kappa = float(KAPPAS[0])
    step, mom = oai.tuned_parameters(method, 1.0, kappa)
    A = np.concatenate([A[:1], A[:1], A])
    b = np.concatenate([b[:1], b[:1], b])
    z0 = np.concatenate([np.linalg.solve(A[0], b[0])[None], z0[:1], z0])
    max_iter = 400
    got = oai.iterations_to_accuracy(A, b, z0, method, step, mom, RATE_EPS, max_iter)
    want = [_count_alone(A[i], b[i], z0[i], method, step, mom, RATE_EPS, max_iter) for i in range(len(A))]
    for g, (w, tie) in zip(got, want):
        assert g == w or (tie and abs(g - w) == 1), f"{method}: counts {got.tolist()} vs {[c for c, _ in want]}"
    assert got[0] == 0 and got[-1] == max_iter + 1  # kappa = 300 needs more than 400 iterations at 1e-6 for GD
    # a problem that diverges does not stop the batch
    wild = oai.iterations_to_accuracy(A[1:3], b[1:3], z0[1:3], "gd", 10.0 / kappa, 0.0, RATE_EPS, 5000)
    alone = _count_alone(A[2], b[2], z0[2], "gd", 10.0 / kappa, 0.0, RATE_EPS, 5000)[0]
    assert wild[0] == 5001 and alone == 5001 and np.isfinite(wild[1])
    evidence.add(float(got[2]), f"{method} iterations, kappa = 10")


@pytest.mark.claim("OAI-rates")
@settings(max_examples=6)  # each example runs ~8k GD iterations in Python; 6 x 4 kappas suffice
@given(seed=seeds(), n=dims(2, 8))
def test_oai_rates_gd_kappa_hb_agd_sqrt_kappa(evidence, seed, n):
    """On quadratics with kappa = L/mu from 10 to 300, iterations to eps = 1e-6 grow like kappa for GD and like sqrt(kappa) for HB and AGD.

    Sec. 2: HB and AGD need O(sqrt(L/mu) log 1/eps) iterations, GD O(L/mu log 1/eps). Standard
    tuned parameters (``oai.tuned_parameters``); the minimiser by a dense solve; the exponent of
    iterations vs kappa is fitted on log-log axes.
    """
    A, b, z0 = _quadratics(seed, n)
    counts = {m: _iterations(A, b, z0, m) for m in oai.RATE_METHODS}
    slopes = {m: _slope(c) for m, c in counts.items()}
    speedup = counts["gd"][-1] / np.maximum(counts["hb"][-1], counts["agd"][-1])
    for method in oai.RATE_METHODS:
        evidence.add(slopes[method], method)
    evidence.add(speedup, "speedup", worst="min")
    assert abs(slopes["gd"] - 1.0) <= SLOPE_TOL
    assert abs(slopes["hb"] - 0.5) <= SLOPE_TOL
    assert abs(slopes["agd"] - 0.5) <= SLOPE_TOL
    # The ratio predicted at kappa = 300 is ~2 sqrt(kappa) = 35 (HB) and ~sqrt(kappa) = 17 (AGD);
    # sqrt(kappa) / 4 = 4.3 fails if HB or AGD were no faster than GD.
    assert speedup >= np.sqrt(KAPPAS[-1]) / 4

    fitted = ", ".join(f"{m.upper()} {evidence.min(m):.2f}..{evidence.max(m):.2f}" for m in oai.RATE_METHODS)
    evidence.headline(f"fitted exponent of iterations vs kappa: {fitted}; at kappa = 300 GD needs "
                      f">= {evidence.min('speedup'):.0f}x the iterations of HB/AGD")


@pytest.mark.claim("OAI-rates", role="assumption")
@settings(max_examples=6)
@given(seed=seeds(), n=dims(2, 8))
def test_oai_rates_hb_needs_momentum_tuned_to_kappa(evidence, seed, n):
    """Heavy ball with a fixed momentum (beta = 0.3, the value of Sec. 5.3) loses the sqrt(kappa) rate: iterations grow like kappa.

    The O(sqrt(kappa)) rate of Sec. 2 assumes momentum tuned to kappa (beta -> 1 as kappa grows).
    With beta = 0.3 and step 1/L the slowest mode contracts by ~1 - 1/((1 - beta) kappa) per step.
    """
    A, b, z0 = _quadratics(seed, n)
    slope = _slope(_iterations(A, b, z0, "hb", momentum=0.3))
    evidence.add(slope, worst="min")
    assert slope >= 1.0 - SLOPE_TOL

    evidence.headline(f"fitted exponent with fixed beta = 0.3: {evidence.min():.2f}..{evidence.max():.2f} (kappa-like)")


# --------------------------------------------------------------------------------------------
# OAI-special (Table 3), dense (MLP) reading
# --------------------------------------------------------------------------------------------

_TORCH_ACT = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
              "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.01),
              "elu": torch.nn.functional.elu, "swish": torch.nn.functional.silu}


def _layers(gen, depth, n_in, n_out):
    return [gen.standard_normal((n_out, n_in)) / np.sqrt(n_in) for _ in range(depth)]


def _structural_tol(depth: int, n: int, xs) -> float:
    # Same float64 operations in a different order: each layer rounds a length-n (or k n) product and a
    # few additions; errors grow by at most (1 + ||W|| LIP_PHI + 1) per layer (||W|| ~ 2 for N(0, 1/n)).
    return 64 * depth * n * EPS * (4.2 ** depth) * (1 + float(np.max(np.abs(xs))))


@pytest.mark.claim("OAI-special")
@given(n=dims(), depth=st.integers(1, 6), name=activation_names(), seed=seeds(),
       beta=st.floats(0.0, 0.9))
def test_oai_special_resnet_is_hb_form16(evidence, n, depth, name, seed, beta):
    """A ResNet (x + T(x), torch) equals form (16) with beta1 = 1, beta2 = 0; HB (11) equals (16) with beta1 = beta, beta2 = -beta.

    Sec. 6 and Table 3 (HB row): x_{k+1} = T(x_k) + beta1 x_k + beta2 x_{k-1}, T(x) = phi(W_k x);
    Table 3 names beta2 = 0 only (beta1 = 1 is implied by ResNet's identity skip).
    """
    gen = rng(seed)
    Ws = _layers(gen, depth, n, n)
    x0 = gen.standard_normal(n)
    act = _TORCH_ACT[name]
    x = torch.tensor(x0)
    res = [x]
    for W in Ws:
        x = x + act(torch.tensor(W) @ x)
        res.append(x)
    resnet = torch.stack(res).numpy()
    form16 = oai.hb_structure(x0, lambda k, v: oai.activation(name)(Ws[k] @ v), depth, 1.0, 0.0)
    tol = _structural_tol(depth, n, resnet)
    err = float(np.max(np.abs(form16 - resnet)))
    assert err <= tol
    # HB (11) with one shared W is (16) with beta1 = beta, beta2 = -beta.
    hb = oai.heavy_ball_x(x0, Ws[0], name, depth, beta)
    hb16 = oai.hb_structure(x0, lambda k, v: oai.activation(name)(Ws[0] @ v), depth, beta, -beta)
    assert np.max(np.abs(hb - hb16)) <= _structural_tol(depth, n, hb)
    evidence.add(err)

    evidence.headline(f"max |ResNet - (16)| = {evidence.max():.1e}")


def _densenet_torch(x0, Ws, act, pre_activation: bool):
    """A dense block, torch: z_{k+1} = W_{k+1} phi([z_0..z_k]) (pre-activation, BN-ReLU-conv order)
    or phi(W_{k+1} [z_0..z_k]) (post-activation); W_{k+1} acts on the concatenation."""
    zs = [torch.tensor(x0)]
    for W in Ws:
        cat = torch.cat(zs)
        zs.append(torch.tensor(W) @ act(cat) if pre_activation else act(torch.tensor(W) @ cat))
    return torch.stack(zs).numpy()


@pytest.mark.claim("OAI-special")
@given(n=dims(), depth=st.integers(1, 6), name=activation_names(), seed=seeds())
def test_oai_special_densenet_is_agd_form18(evidence, n, depth, name, seed):
    """A pre-activation dense block (W phi(concatenation), torch) equals form (18) with alpha = 1, beta = 0; AGD2 (13) is (18) with alpha = h, beta = I - h.

    Table 3 (AGD row): DenseNet is (18) with beta = 0, alpha = 1, "up to concatenation vs sum".
    With T_{k+1,j}(x) = W_{k+1}[:, block j] phi(x), a linear map of a concatenation is the sum of
    the blocks' maps and phi acts entrywise, so the two agree exactly in the pre-activation order
    DenseNet uses (BN-ReLU-conv; BN and ReLU are channel-wise).
    """
    gen = rng(seed)
    Ws = [gen.standard_normal((n, (k + 1) * n)) / np.sqrt((k + 1) * n) for k in range(depth)]
    x0 = gen.standard_normal(n)
    dense = _densenet_torch(x0, Ws, _TORCH_ACT[name], pre_activation=True)
    T = lambda k, j, v: Ws[k][:, j * n:(j + 1) * n] @ oai.activation(name)(v)  # noqa: E731
    form18 = oai.agd_structure(x0, T, depth, np.tril(np.ones((depth, depth))), np.zeros((depth, depth)))
    err = float(np.max(np.abs(form18 - dense)))
    assert err <= _structural_tol(depth, n, dense)
    # AGD2 (13) with shared W: alpha_{k+1}^j = h_{k+1,j}, beta_{k+1}^j = [j = k] - h_{k+1,j}.
    W = Ws[0][:, :n]
    H = oai.nesterov_h_weights(depth)[1:, :]
    agd2 = oai.nesterov_form4_x(x0, W, name, depth)
    form = oai.agd_structure(x0, lambda k, j, v: oai.activation(name)(W @ v), depth, H, np.eye(depth) - H)
    assert np.max(np.abs(agd2 - form)) <= _structural_tol(depth, n, agd2)
    evidence.add(err)

    evidence.headline(f"max |pre-activation DenseNet - (18)| = {evidence.max():.1e}")


@pytest.mark.claim("OAI-special", role="assumption")
@given(n=dims(2, 8), depth=st.integers(2, 4), name=st.sampled_from(("sigmoid", "tanh")), seed=seeds())
def test_oai_special_densenet_sum_differs_with_post_activation(evidence, n, depth, name, seed):
    """With the nonlinearity after the linear map, phi(W [z_0..z_k]) differs from the sum form (18), sum_j phi(W_j z_j).

    The "up to concatenation vs sum" of Table 3 is a real caveat: the identity needs T's linear
    map last (pre-activation). Post-activation dense layers are not (18) with alpha = 1, beta = 0.
    Sigmoid and tanh are not additive (sigmoid(0 + 0) = 1/2 != 1; tanh(a + b) = tanh a + tanh b only
    if a = 0, b = 0 or a = -b), unlike piecewise-linear activations on same-sign inputs.
    """
    gen = rng(seed)
    Ws = [gen.standard_normal((n, (k + 1) * n)) / np.sqrt((k + 1) * n) for k in range(depth)]
    x0 = gen.standard_normal(n)
    dense = _densenet_torch(x0, Ws, _TORCH_ACT[name], pre_activation=False)
    T = lambda k, j, v: oai.activation(name)(Ws[k][:, j * n:(j + 1) * n] @ v)  # noqa: E731
    form18 = oai.agd_structure(x0, T, depth, np.tril(np.ones((depth, depth))), np.zeros((depth, depth)))
    # The first layer has one block, so it agrees; from the second layer (two blocks) on, it does not.
    gap = float(np.max(np.abs(form18[2:] - dense[2:])))
    evidence.add(gap, worst="min")
    assert gap > 1e-6  # round-off is ~1e-15

    evidence.headline(f"post-activation: gap >= {evidence.min():.2g} from the second layer on")


def _dmrnet_torch(x0, Ws, Wps, act):
    """Merge-and-run (DMRNet), torch: both paths take the average of the two inputs as their skip."""
    x = xp = torch.tensor(x0)
    xs, xps = [x], [xp]
    for W, Wp in zip(Ws, Wps):
        mean = (x + xp) / 2
        xp, x = act(torch.tensor(Wp) @ xp) + mean, act(torch.tensor(W) @ x) + mean
        xs.append(x)
        xps.append(xp)
    return torch.stack(xps).numpy(), torch.stack(xs).numpy()


@pytest.mark.claim("OAI-special")
@given(n=dims(), depth=st.integers(1, 6), name=activation_names(), seed=seeds())
def test_oai_special_dmrnet_is_admm_form20(evidence, n, depth, name, seed):
    """DMRNet (merge-and-run, torch) equals form (20) with alpha_{k+1}^k = beta_{k+1}^k = 1/2 and all other coefficients 0.

    Table 3 (ADMM row), eq (20) and the DMRNet form after it; reading: coefficients depend on the
    step and the sums run over t = 0..k (DMRNet's first block mixes x_0 and x'_0).
    """
    gen = rng(seed)
    Ws, Wps = _layers(gen, depth, n, n), _layers(gen, depth, n, n)
    x0 = gen.standard_normal(n)
    ref_p, ref = _dmrnet_torch(x0, Ws, Wps, _TORCH_ACT[name])
    half = np.eye(depth) / 2
    got_p, got = oai.admm_structure(x0, lambda k, v: oai.activation(name)(Ws[k] @ v), depth, half, half,
                                    transform_prime=lambda k, v: oai.activation(name)(Wps[k] @ v))
    err = max(float(np.max(np.abs(got - ref))), float(np.max(np.abs(got_p - ref_p))))
    evidence.add(err)
    assert err <= _structural_tol(depth, n, ref)

    evidence.headline(f"max |DMRNet - (20)| = {evidence.max():.1e}")


@pytest.mark.claim("OAI-special", role="assumption")
@given(n=dims(), depth=st.integers(2, 6), name=activation_names(), seed=seeds())
def test_oai_special_dmrnet_needs_step_dependent_coefficients(evidence, n, depth, name, seed):
    """Read literally (alpha_t = beta_t = 1/2 for every t <= k), eq (20) is not DMRNet from the second block on.

    Table 3 writes "alpha_k = beta_k = 1/2 in (20)"; with coefficients that do not depend on the
    step, every earlier state enters each block, which is not merge-and-run.
    """
    gen = rng(seed)
    Ws, Wps = _layers(gen, depth, n, n), _layers(gen, depth, n, n)
    x0 = gen.standard_normal(n)
    _, ref = _dmrnet_torch(x0, Ws, Wps, _TORCH_ACT[name])
    literal = np.tril(np.full((depth, depth), 0.5))
    _, got = oai.admm_structure(x0, lambda k, v: oai.activation(name)(Ws[k] @ v), depth, literal, literal,
                                transform_prime=lambda k, v: oai.activation(name)(Wps[k] @ v))
    gap = float(np.max(np.abs(got - ref)))
    evidence.add(gap, worst="min")
    # At block 2 the literal form adds (x'_0 + x_0) / 2 = x_0 on top of DMRNet: O(1) >> round-off.
    assert gap > 1e-6

    evidence.headline(f"step-independent alpha_t = beta_t = 1/2: gap to DMRNet >= {evidence.min():.2g}")
