"""Theory checks for "Newton Residual Learning" (papers/000): claims NRL-block and NRL-poly.

Independent computations: the blocks are rebuilt here from ``torch.nn.Linear`` layers (a direct
torch forward pass), Jacobians come from torch autograd, the degree along a line is measured by
finite differences of that torch forward pass, and the best linear fit by a least-squares solve.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from analysis.theory.nrl import (
    newton_block,
    newton_block_activated,
    newton_block_unshared,
    newton_stack,
    newton_stack_leading_form,
    newton_stack_line_polynomial,
    residual_block,
    residual_block_activated,
    residual_stack,
    residual_stack_matrix,
)
from theory_checks import strategies as S

EPS = np.finfo(np.float64).eps
TORCH_ACT = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda z: z}


# --------------------------------------------------------------------------------------------
# independent torch blocks
# --------------------------------------------------------------------------------------------
def _linear(M: np.ndarray) -> nn.Linear:
    layer = nn.Linear(M.shape[1], M.shape[0], bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(np.array(M)))  # a copy: M may be a read-only view
    return layer


class TorchNewtonBlock(nn.Module):
    """x + f(x) + a N2(N1(x) * f(x)), then phi; f = C (linear, eq. (2)) or C2 phi(C1 x) (eq. (3))."""

    def __init__(self, C1, alpha, N1, N2, C2=None, act="identity"):
        super().__init__()
        self.C1, self.N1, self.N2 = _linear(C1), _linear(N1), _linear(N2)
        self.C2 = None if C2 is None else _linear(C2)
        self.alpha, self.act = alpha, TORCH_ACT[act]

    def forward(self, x):
        f = self.C1(x) if self.C2 is None else self.C2(self.act(self.C1(x)))
        return self.act(x + f + self.alpha * self.N2(self.N1(x) * f))


def _torch_newton_stack(x: np.ndarray, Cs, alphas, N1s, N2s) -> np.ndarray:
    out = torch.from_numpy(np.asarray(x, dtype=np.float64))
    with torch.no_grad():
        for C, a, N1, N2 in zip(Cs, alphas, N1s, N2s):
            out = TorchNewtonBlock(C, float(a), N1, N2)(out)
    return out.numpy()


@st.composite
def _newton_stacks(draw, d: int, L: int):
    """Cs, N1s, N2s random orthogonal, |a| in [0.5, 1.5]: generic weights that keep every entry O(1).

    Orthogonal maps neither shrink nor blow up the vectors, so the degree-2^L part stays of the
    size of the lower ones and round-off cannot hide it (Gaussian weights can make it 1e-14).
    """
    gen = S.rng(draw(S.seeds()))

    def orth():
        q, r = np.linalg.qr(gen.standard_normal((d, d)))
        return q * np.sign(np.diag(r))

    Cs, N1s, N2s = (np.stack([orth() for _ in range(L)]) for _ in range(3))
    alphas = gen.choice([-1.0, 1.0], size=L) * gen.uniform(0.5, 1.5, size=L)
    return Cs, alphas, N1s, N2s


# --------------------------------------------------------------------------------------------
# NRL-block
# --------------------------------------------------------------------------------------------
@pytest.mark.claim("NRL-block")
@given(d=S.dims(1, 6), n=st.integers(1, 5), act=st.sampled_from(["relu", "tanh", "identity"]), data=st.data())
def test_nrl_block_alpha_zero_is_residual_block(evidence, d, n, act, data):
    """With a = 0 the Newton block (eq. (2), and eq. (3) with activations) returns exactly the residual block's output.

    NRL eq. (1)-(3): "x_{t+1} = x_t + C x_t + a N2(N1(x_t) * C x_t)"; with activations
    phi(x + f(x) + a N2(N1(x) * f(x))), f(x) = C2 phi(C1 x); with a = 0 it is the residual block.
    Exact equality: 0 * (finite) = 0 and adding 0 is exact in IEEE arithmetic.
    """
    x = data.draw(S.gaussian_matrices(n, d))
    C, C2, N1, N2 = (data.draw(S.gaussian_matrices(d, d)) for _ in range(4))
    assert np.array_equal(newton_block(x, C, 0.0, N1, N2), residual_block(x, C))
    assert np.array_equal(newton_block_activated(x, C, C2, 0.0, N1, N2, act),
                          residual_block_activated(x, C, C2, act))
    # With a = 1 the difference is the quadratic term itself, so a = 0 really removes something.
    quad = ((x @ N1.T) * (x @ C.T)) @ N2.T
    diff = newton_block(x, C, 1.0, N1, N2) - residual_block(x, C)
    assert np.allclose(diff, quad, rtol=0, atol=64 * d * EPS * (1 + np.abs(x).max()) ** 2 * d)
    evidence.add(float(np.max(np.abs(quad))), worst="min")

    evidence.headline(f"a = 0: bitwise equal to the residual block; the quadratic term it removes (a = 1) "
                    f"has max entry >= {evidence.min():.2g}")


@pytest.mark.claim("NRL-block")
@given(d=S.dims(1, 6), n=st.integers(1, 5), act=st.sampled_from(["relu", "tanh"]),
       alpha=st.floats(-2.0, 2.0), data=st.data())
def test_nrl_block_matches_direct_torch_forward(evidence, d, n, act, alpha, data):
    """Eq. (1), (2), (3) and both residual blocks agree with a direct torch nn.Linear forward pass; eq. (2) with N1 = N2 = I is eq. (1) with S = C.

    NRL-block, eq. (1)-(3): "Newton block x_{t+1} = x_t + C x_t + a * N2(N1(x_t) * C x_t); with
    activations phi(x + f(x) + a*N2(N1(x)*f(x)))". The reference blocks are built here from
    ``torch.nn.Linear`` layers, independent of the library's matrix products.
    """
    x = data.draw(S.gaussian_matrices(n, d))
    C, C2, N1, N2 = (data.draw(S.gaussian_matrices(d, d)) for _ in range(4))
    xt = torch.from_numpy(x)
    eye = np.eye(d)
    with torch.no_grad():
        ref2 = TorchNewtonBlock(C, alpha, N1, N2)(xt).numpy()
        ref3 = TorchNewtonBlock(C, alpha, N1, N2, C2=C2, act=act)(xt).numpy()
        ref_res = TorchNewtonBlock(C, 0.0, eye, eye)(xt).numpy()
        ref_res_act = TorchNewtonBlock(C, 0.0, eye, eye, C2=C2, act=act)(xt).numpy()
        ref3_eye_relu = TorchNewtonBlock(C, alpha, eye, eye, C2=C2, act="relu")(xt).numpy()
    got = {
        # the defaults: N1 = N2 = I and ReLU
        "eq3-defaults": (newton_block_activated(x, C, C2, alpha), ref3_eye_relu),
        "eq2": (newton_block(x, C, alpha, N1, N2), ref2),
        "eq3": (newton_block_activated(x, C, C2, alpha, N1, N2, act), ref3),
        "res": (residual_block(x, C), ref_res),
        "res_act": (residual_block_activated(x, C, C2, act), ref_res_act),
        "eq1": (newton_block_unshared(x, C, C, alpha), newton_block(x, C, alpha)),
    }
    # Entries are sums of <= 3 d products of Gaussian entries of size ~1 (the quadratic term
    # ~ d); round-off <= 4 d eps times that magnitude, for two different summation orders.
    scale = (1.0 + abs(alpha)) * (1.0 + float(np.max(np.abs(x)))) ** 2 * d ** 2
    worst = 0.0
    for key, (a, b) in got.items():
        err = float(np.max(np.abs(a - b)))
        assert err <= 8 * d * EPS * scale, (key, err)
        worst = max(worst, err)
    evidence.add(worst / scale)

    evidence.headline(f"max |numpy - torch| / scale = {evidence.max():.1e} over eq (1)-(3) and residual blocks")


# --------------------------------------------------------------------------------------------
# NRL-poly
# --------------------------------------------------------------------------------------------
@pytest.mark.claim("NRL-poly")
@given(d=S.dims(1, 6), L=st.integers(1, 8), s=st.floats(-3, 3), t=st.floats(-3, 3), data=st.data())
def test_nrl_poly_residual_stack_is_one_linear_map(evidence, d, L, s, t, data):
    """Without activations a stack of L residual blocks is linear, h(s x + t y) = s h(x) + t h(y), and equals the single matrix (I + C_L)...(I + C_1).

    NRL sec. 3.1 / 4.2: a linear residual stack "can do no better than the best linear
    classifier". The matrix is checked against torch autograd Jacobians at two random points
    (a linear map has the same Jacobian everywhere).
    """
    gen = S.rng(data.draw(S.seeds()))
    Cs = gen.standard_normal((L, d, d)) / math.sqrt(d)
    x, y = gen.standard_normal(d), gen.standard_normal(d)
    M = residual_stack_matrix(Cs)

    def _autograd_stack(z):
        for C in Cs:
            z = z + z @ torch.from_numpy(C).T
        return z

    J1 = torch.autograd.functional.jacobian(_autograd_stack, torch.from_numpy(x)).numpy()
    J2 = torch.autograd.functional.jacobian(_autograd_stack, torch.from_numpy(y)).numpy()
    growth = float(np.prod(1.0 + np.linalg.norm(Cs, 2, axis=(1, 2))))
    # L products of d x d matrices of norm <= 1 + ||C_t||: round-off <= L d eps * growth; 10x.
    tol = 10.0 * L * d * EPS * growth
    lhs = residual_stack(s * x + t * y, Cs)
    rhs = s * residual_stack(x, Cs) + t * residual_stack(y, Cs)
    lin_err = float(np.max(np.abs(lhs - rhs)))
    assert lin_err <= tol * (abs(s) + abs(t)) * max(np.abs(x).max(), np.abs(y).max()) * 3
    assert float(np.max(np.abs(J1 - M))) <= tol and float(np.max(np.abs(J2 - M))) <= tol
    assert float(np.max(np.abs(residual_stack(x, Cs) - M @ x))) <= tol * np.abs(x).sum()
    evidence.add(float(np.max(np.abs(J1 - M))) / tol)

    evidence.headline(f"Jacobian = (I+C_L)...(I+C_1) everywhere, max error <= {evidence.max():.1e} x tolerance")


def _finite_difference(values: np.ndarray, order: int) -> np.ndarray:
    """Forward difference of the given order at the first node: sum_j (-1)^{m-j} C(m, j) f_j."""
    w = np.array([(-1) ** (order - j) * math.comb(order, j) for j in range(order + 1)], dtype=np.float64)
    return w @ values[: order + 1]


@pytest.mark.claim("NRL-poly")
@given(d=S.dims(1, 4), L=st.integers(1, 3), data=st.data())
def test_nrl_poly_newton_stack_has_degree_exactly_2_to_L(evidence, d, L, data):
    """Along a random line a stack of L Newton blocks is a polynomial of degree exactly 2^L: the (2^L+1)-th finite difference vanishes and the 2^L-th is 2^L! h^{2^L} Q_L(v) != 0.

    NRL sec. 3.1 / 4.2: "a stack of L Newton blocks is a polynomial of degree up to 2^L"; for
    generic weights the degree is reached. Finite differences of a torch forward pass (independent
    of the library's polynomial arithmetic); the library's exact line polynomial is also checked
    against that forward pass at random t.
    """
    Cs, alphas, N1s, N2s = data.draw(_newton_stacks(d, L))
    gen = S.rng(data.draw(S.seeds()))
    x0, v = gen.standard_normal(d), gen.standard_normal(d)
    # |v| = sqrt(d) (entries O(1)): the top coefficient is homogeneous of degree 2^L in v, so a
    # short v would shrink it below round-off without changing the degree.
    v *= math.sqrt(d) / np.linalg.norm(v)
    D = 2**L
    # Unit spacing: the top term then dominates the sampled values, and the D-th difference
    # D! a_D against round-off 2^D eps |a_D| (D/2)^D leaves a ratio D! / (2^D (D/2)^D eps) > 1e11.
    h = 1.0
    ts = h * (np.arange(D + 2) - (D + 1) / 2.0)
    pts = x0 + ts[:, None] * v
    f = _torch_newton_stack(pts, Cs, alphas, N1s, N2s)
    # Magnitude bound for round-off: the same forward pass with every weight and input replaced
    # by its absolute value dominates |every intermediate| (standard a-priori error analysis).
    f_abs = _torch_newton_stack(np.abs(pts), np.abs(Cs), np.abs(alphas), np.abs(N1s), np.abs(N2s))
    # Each output carries <= 4 L (d + 2) eps relative (to f_abs) error; a difference of order
    # m sums 2^m of them.
    unit = 4.0 * L * (d + 2) * EPS * float(np.max(f_abs))
    assert float(np.max(np.abs(newton_stack(pts, Cs, alphas, N1s, N2s) - f))) <= unit
    top = _finite_difference(f, D + 1)
    assert float(np.max(np.abs(top))) <= 2 ** (D + 1) * unit, top
    lead_fd = _finite_difference(f, D) / (math.factorial(D) * h**D)
    lead = newton_stack_leading_form(v, Cs, alphas, N1s, N2s)
    tol_lead = 2**D * unit / (math.factorial(D) * h**D)
    assert float(np.max(np.abs(lead_fd - lead))) <= tol_lead, (lead_fd, lead, tol_lead)
    # Degree reached: the top coefficient is far above what round-off could fake.
    assert float(np.max(np.abs(lead))) > 100 * tol_lead, (lead, tol_lead)
    # The library's exact line polynomial reproduces the forward pass off the nodes too.
    coef = newton_stack_line_polynomial(x0, v, Cs, alphas, N1s, N2s)
    t = gen.uniform(ts[0], ts[-1], size=3)
    direct = _torch_newton_stack(x0 + t[:, None] * v, Cs, alphas, N1s, N2s)
    assert np.max(np.abs(np.polynomial.polynomial.polyval(t, coef.T) - direct.T)) <= 2 * unit
    # The defaults: N1 = N2 = I (eq. (2)'s plain block) when none are given, and a scalar a for a
    # one-block stack; the same round-off analysis with the identity maps
    eye = np.broadcast_to(np.eye(d), (L, d, d))
    f_eye = _torch_newton_stack(pts, Cs, alphas, eye, eye)
    unit_eye = 4.0 * L * (d + 2) * EPS * float(np.max(_torch_newton_stack(np.abs(pts), np.abs(Cs), np.abs(alphas),
                                                                          eye, eye)))
    assert float(np.max(np.abs(newton_stack(pts, Cs, alphas) - f_eye))) <= unit_eye
    coef_eye = newton_stack_line_polynomial(x0, v, Cs, alphas)
    assert np.max(np.abs(np.polynomial.polynomial.polyval(ts, coef_eye.T) - f_eye.T)) <= 2 * unit_eye
    one = _torch_newton_stack(pts, Cs[:1], alphas[:1], N1s[:1], N2s[:1])
    assert float(np.max(np.abs(newton_stack(pts, Cs[:1], float(alphas[0]), N1s[:1], N2s[:1]) - one))) <= unit
    evidence.add(float(np.max(np.abs(lead))) / tol_lead, worst="min")

    evidence.headline(f"degree exactly 2^L (L <= 3): top coefficient >= {evidence.min():.1e} x its "
                    "round-off bound, next finite difference ~ 0")


@pytest.mark.claim("NRL-poly")
@given(half_width=st.floats(0.25, 4.0), k=st.integers(1, 5), depth=st.integers(1, 4), data=st.data())
def test_nrl_poly_one_newton_block_fits_x1_x2_where_residual_stacks_cannot(evidence, half_width, k, depth, data):
    """One Newton block outputs x1*x2 exactly; every linear residual stack (a linear map) leaves the whole target as error on a symmetric grid.

    NRL sec. 3.1 / 4.2 (the linear-network experiment's premise): the residual stack without
    activations is one linear map, so on a target like x1*x2, orthogonal to all linear and
    constant functions on a grid symmetric in x1, its best fit is no better than predicting 0.
    The Newton block with C = -I, N1 = [[0, 1], [0, 1]], N2 = [[1, 0], [0, 0]], a = -1 gives
    x + Cx + a N2((N1 x) * Cx) = (x1 x2, 0). Grid: {-w j/k, 0, w j/k : j = 1..k}^2, exactly
    symmetric; the residual stack (``residual_stack``, ``depth`` random Gaussian blocks) and its
    linear read-out are random per example.
    """
    h = half_width * np.arange(1, k + 1) / k
    g = np.concatenate([-h[::-1], [0.0], h])
    x = np.array([(a, b) for a in g for b in g])
    target = x[:, 0] * x[:, 1]
    C = -np.eye(2)
    N1 = np.array([[0.0, 1.0], [0.0, 1.0]])
    N2 = np.array([[1.0, 0.0], [0.0, 0.0]])
    out = newton_block(x, C, -1.0, N1, N2)
    with torch.no_grad():
        ref = TorchNewtonBlock(C, -1.0, N1, N2)(torch.from_numpy(x)).numpy()
    # Exact: x + (-x) = 0 and the product of two float64 grid values is rounded once either way.
    assert np.array_equal(out[:, 0], target) and np.array_equal(ref[:, 0], target)
    # Best affine fit (a superset of every residual stack with a linear read-out).
    design = np.column_stack([x, np.ones(len(x))])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    resid = float(np.linalg.norm(design @ coef - target))
    norm = float(np.linalg.norm(target))
    # Exactly orthogonal in exact arithmetic (the grid is symmetric bit for bit); lstsq round-off is
    # ~ n EPS cond(design) with n <= 121 points and cond <= ~3: 1e-12 relative is far above it.
    assert abs(resid - norm) <= 1e-12 * norm
    # And a residual stack is one of those linear maps: a random stack with a random read-out does no better.
    gen = S.rng(data.draw(S.seeds()))
    Cs = gen.standard_normal((depth, 2, 2))
    w = gen.standard_normal(2)
    pred = residual_stack(x, Cs) @ w
    # ||pred - target||^2 = ||pred||^2 + ||target||^2 (pred . target = 0 exactly in real arithmetic);
    # the rounded inner product is <= 121 EPS |pred| |target|, far inside 1e-12.
    miss = float(np.linalg.norm(pred - target))
    assert miss >= resid * (1 - 1e-12)
    evidence.add(miss / norm, "random residual stack: error / ||target||", worst="min")
    evidence.headline(f"Newton block error 0; best linear-map error = ||target||; random residual stacks "
                      f"(depth <= 4) leave >= {evidence.min('random residual stack: error / ||target||'):.3f} "
                      "x ||target||")
