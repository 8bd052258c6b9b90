"""Hypothesis strategies shared by the theory checks.

Matrices are drawn as (dimension, seed, spectrum parameters) and built with numpy's seeded
generator. That keeps every example bounded and well-conditioned by construction (no
``assume``), fast to generate, and reproducible from the printed example: hypothesis shrinks the
dimension and the spectrum bounds, which is what a counterexample's reader needs.
"""
from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from analysis.theory.oai import ACTIVATIONS as ACTIVATION_NAMES
from analysis.theory.rn import random_resnest, resnest_features

MAX_DIM = 8


def seeds() -> st.SearchStrategy[int]:
    return st.integers(min_value=0, max_value=2**32 - 1)


def dims(min_value: int = 2, max_value: int = MAX_DIM) -> st.SearchStrategy[int]:
    return st.integers(min_value=min_value, max_value=max_value)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _orthogonal(n: int, gen: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(gen.standard_normal((n, n)))
    return q * np.sign(np.diag(r))


@st.composite
def gaussian_matrices(draw, rows: int | None = None, cols: int | None = None, max_dim: int = MAX_DIM):
    """An iid N(0, 1/cols) matrix: entries of order 1/sqrt(cols), spectral norm of order 1."""
    rows = draw(dims(1, max_dim)) if rows is None else rows
    cols = draw(dims(1, max_dim)) if cols is None else cols
    gen = rng(draw(seeds()))
    return gen.standard_normal((rows, cols)) / np.sqrt(cols)


@st.composite
def symmetric_matrices(draw, n: int | None = None, max_abs_eig: float = 1.0, min_abs_eig: float = 0.0):
    """A symmetric matrix Q diag(lam) Q^T with min_abs_eig <= |lam_i| <= max_abs_eig, random signs.

    With min_abs_eig > 0 it is invertible with condition number <= max_abs_eig / min_abs_eig.
    """
    n = draw(dims()) if n is None else n
    gen = rng(draw(seeds()))
    mags = gen.uniform(min_abs_eig, max_abs_eig, size=n)
    signs = gen.choice([-1.0, 1.0], size=n)
    q = _orthogonal(n, gen)
    a = (q * (signs * mags)) @ q.T
    return (a + a.T) / 2


@st.composite
def spd_matrices(draw, n: int | None = None, max_condition: float = 100.0, scale: float = 1.0):
    """A symmetric positive definite matrix with eigenvalues in [scale / max_condition, scale]."""
    n = draw(dims()) if n is None else n
    cond = draw(st.floats(min_value=1.0, max_value=max_condition))
    gen = rng(draw(seeds()))
    eig = scale * np.exp(gen.uniform(-np.log(cond), 0.0, size=n))
    eig[gen.integers(n)] = scale  # pin the top so the spectrum really spans the drawn condition number
    q = _orthogonal(n, gen)
    a = (q * eig) @ q.T
    return (a + a.T) / 2


@st.composite
def norm_bounded_matrices(draw, rows: int | None = None, cols: int | None = None, bound: float = 1.0,
                          min_fraction: float = 0.05, max_fraction: float = 0.95):
    """A random matrix rescaled to spectral norm t * bound, t drawn in [min_fraction, max_fraction].

    max_fraction < 1 keeps a margin below the bound so round-off never crosses it.
    """
    rows = draw(dims()) if rows is None else rows
    cols = rows if cols is None else cols
    t = draw(st.floats(min_value=min_fraction, max_value=max_fraction))
    gen = rng(draw(seeds()))
    m = gen.standard_normal((rows, cols))
    return m * (t * bound / np.linalg.norm(m, 2))


def activation_names() -> st.SearchStrategy[str]:
    """The six activations of the claim OAI-table1 (``analysis.theory.oai.ACTIVATIONS``)."""
    return st.sampled_from(ACTIVATION_NAMES)


@st.composite
def vectors(draw, n: int, scale: float = 1.0):
    """An N(0, scale^2 I) vector of length n."""
    gen = rng(draw(seeds()))
    return scale * gen.standard_normal(n)


# --- ND (Newton design, papers/001): problems (A, x) for F(x) = x^T A x / 2 - 1^T P(Ax) ---------
@st.composite
def nd_problems(draw, n: int | None = None, min_abs_eig: float = 0.2, max_abs_eig: float = 0.9,
                margin: float = 0.1, active: str = "mixed"):
    """(A, x): A symmetric with |eigenvalues| in [min_abs_eig, max_abs_eig] (random signs), and
    x = A^{-1} z with |z_i| in [margin, 1], so every (Ax)_i = z_i is at least ``margin`` from the
    ReLU kink. ``active``: "mixed" (random signs, at least one unit active), "all" (z > 0, so
    Diag[Phi'(Ax)] = I) or "none" (z < 0, so Diag[Phi'(Ax)] = 0).
    """
    a = draw(symmetric_matrices(n=n, max_abs_eig=max_abs_eig, min_abs_eig=min_abs_eig))
    gen = rng(draw(seeds()))
    size = a.shape[0]
    z = gen.uniform(margin, 1.0, size=size)
    if active == "mixed":
        signs = gen.choice([-1.0, 1.0], size=size)
        signs[gen.integers(size)] = 1.0
        z = z * signs
    elif active == "none":
        z = -z
    return a, np.linalg.solve(a, z)


# --- IM (Hardt & Ma, identity matters) ------------------------------------------------------
@st.composite
def residual_layer_stacks(draw, n: int, depth: int, max_tau: float = 0.9):
    """Layers A_1..A_depth, shape (depth, n, n), each of spectral norm in (0, tau], tau <= max_tau."""
    tau = draw(st.floats(min_value=0.01, max_value=max_tau))
    gen = rng(draw(seeds()))
    layers = gen.standard_normal((depth, n, n))
    fractions = gen.uniform(0.1, 1.0, size=depth)
    fractions[gen.integers(depth)] = 1.0  # one layer sits at the bound so tau is really reached
    return layers * (tau * fractions / np.linalg.norm(layers, 2, axis=(1, 2)))[:, None, None]


@st.composite
def positive_determinant_matrices(draw, n: int, max_gamma: float = 2.0):
    """R = U diag(s) V^T, det R > 0, |log s_i| <= gamma <= max_gamma; sometimes U V^T has a half turn.

    The half-turn case (a pair of -1 eigenvalues in the rotation part) is the one a principal
    matrix logarithm handles worst, so it is drawn on purpose.
    """
    gamma = draw(st.floats(min_value=0.0, max_value=max_gamma))
    half_turn = draw(st.booleans()) and n >= 2
    gen = rng(draw(seeds()))
    u, v = _orthogonal(n, gen), _orthogonal(n, gen)
    s = np.exp(gen.uniform(-gamma, gamma, size=n))
    if n:
        s[0] = np.exp(gamma)  # pin gamma
    if np.linalg.det(u) * np.linalg.det(v) < 0:
        u[:, 0] = -u[:, 0]
    if half_turn:
        flip = np.ones(n)
        flip[:2] = -1.0
        u = v * flip  # U V^T = V diag(-1, -1, 1, ..) V^T: a half turn, eigenvalue -1 twice
    return (u * s) @ v.T


# --- RN (ResNEsts and DenseNEsts) ------------------------------------------------------------
# A (P_phi) problem: a random tanh ResNEst on N Gaussian inputs, Gaussian targets (or soft labels for
# cross-entropy). Its sizes grow with the hypothesis profile (``rn_sizes``): the ci and dev profiles
# keep widths <= 6 and N = 40 so that L-BFGS and dense Hessians take milliseconds; the thorough
# profile draws wider, deeper nets on more samples.
RN_SAMPLES = 40  # N under the ci / dev profiles


def rn_sizes() -> dict:
    """The RN problem sizes for the loaded hypothesis profile, read when an example is drawn.

    ``settings().max_examples`` is the loaded profile's (a test's own ``@settings`` does not change
    it): from 200 examples on (``thorough``: 500; ci: 25, dev: 5, hypothesis' default: 100) the nets
    get up to 4 inputs, 4 blocks of up to 3 features and N = 100 samples; otherwise up to 2 inputs,
    3 blocks of up to 2 features and N = 40 (residual width <= 6).
    """
    large = settings().max_examples >= 200
    return dict(samples=100 if large else RN_SAMPLES, max_in=4 if large else 2, max_feature=3 if large else 2,
                max_blocks=4 if large else 3, max_n_out=4 if large else 3, large=large)


@st.composite
def rn_problems(draw, *, bottleneck: bool = True, min_blocks: int = 1, max_blocks: int | None = None,
                loss: str = "squared", last_width_at_least_n_out: bool = False, max_n_out: int | None = None,
                planted: bool = False, out_margin: int = 0):
    """dict(x, Y, W0, blocks, M, n_out): the residual width M is >= sum_{i<L} K_i (eq (10)) when
    ``bottleneck``, else M = N_in (no expansion, L >= 2 so the condition fails). Sizes: ``rn_sizes``
    (``max_blocks`` / ``max_n_out`` default to the profile's). M >= N_o + ``out_margin`` (Assumption 3
    is M >= N_o)."""
    size = rn_sizes()
    max_blocks = size["max_blocks"] if max_blocks is None else max_blocks
    max_n_out = size["max_n_out"] if max_n_out is None else max_n_out
    n_in = draw(dims(1 + (0 if bottleneck else out_margin), max(size["max_in"], 1 + out_margin)))
    n_blocks = draw(st.integers(min_value=max(min_blocks, 1 if bottleneck else 2), max_value=max(max_blocks, min_blocks)))
    n_out = draw(st.integers(min_value=1 if loss == "squared" else 2, max_value=max(max_n_out, 2)))
    widths = [draw(st.integers(min_value=1, max_value=size["max_feature"])) for _ in range(n_blocks)]
    if last_width_at_least_n_out:
        widths[-1] = max(widths[-1], n_out)
    if bottleneck:
        width = max(n_in + sum(widths[:-1]) + draw(st.integers(min_value=0, max_value=1)), n_out + out_margin)
    else:
        width = n_in
        # keep Assumption 3 (M >= N_o) so only Assumption 4 is dropped; squared loss only here
        n_out = min(n_out, width - out_margin)
    gen = rng(draw(seeds()))
    w0, blocks = random_resnest(gen, n_in, width, widths, act="tanh")
    n = size["samples"]
    x = gen.standard_normal((n, n_in))
    if planted:
        # targets with a planted A-ResNEst signal: every block's coefficients are O(1), so the (P_phi)
        # minimiser has a well-conditioned W_{L+1} and moderate W_L (pure-noise targets make the
        # coefficients on x_{L-1} tiny and push W_L ~ 1e3, out of L-BFGS's reach in float64)
        v = np.hstack(resnest_features(x, blocks, w0))
        z = v @ gen.standard_normal((v.shape[1], n_out)) + 0.5 * gen.standard_normal((n, n_out))
        if loss == "squared":
            y = z
        else:
            y = np.exp(z - z.max(axis=1, keepdims=True))
            y /= y.sum(axis=1, keepdims=True)
    elif loss == "squared":
        y = gen.standard_normal((n, n_out))
    else:
        y = gen.dirichlet(np.ones(n_out), size=n)
    return dict(x=x, Y=y, W0=w0, blocks=blocks, M=width, n_out=y.shape[1], loss=loss)


def _rn_prediction_coefficients(problem) -> tuple[np.ndarray, np.ndarray]:
    """The least-squares (P_phi) optimum on z = [x_{L-1}; v_L]: Theta = [Theta_1; Theta_2] (rows: z's
    coordinates) with y ~ z^T Theta. Every global minimiser of (P_phi) (squared loss) has
    W_{L+1} = Theta_1^T and W_{L+1} W_L = Theta_2^T."""
    x, blocks, w0 = problem["x"], problem["blocks"], problem["W0"]
    v = resnest_features(x, blocks, w0)
    x_prev = sum(f @ w.T for f, w in zip(v[:-1], [w0] + [b.W for b in blocks[:-1]]))
    theta = np.linalg.lstsq(np.hstack([x_prev, v[-1]]), problem["Y"], rcond=None)[0]
    m = x_prev.shape[1]
    return theta[:m], theta[m:]


def _rn_well_conditioned(problem, max_coef: float = 30.0, min_out_sv: float = 0.05) -> bool:
    v = np.hstack(resnest_features(problem["x"], problem["blocks"], problem["W0"]))
    h = np.linalg.lstsq(v, problem["Y"], rcond=None)[0]
    sv = np.linalg.svd(v, compute_uv=False)
    if not (float(np.linalg.norm(h, 2)) <= max_coef and sv[-1] >= 1e-2 * sv[0]):
        return False
    # the (P_phi) design z = [x_{L-1}; v_L] too: x_{L-1} = U B^T adds the conditioning of B = [W_0..W_{L-1}]
    # (a thorough-profile cross-entropy draw with cond(z) ~ 3e3 stalled every start at |grad| ~ 1e-3)
    x, blocks, w0 = problem["x"], problem["blocks"], problem["W0"]
    feats = resnest_features(x, blocks, w0)
    x_prev = sum(f @ w.T for f, w in zip(feats[:-1], [w0] + [b.W for b in blocks[:-1]]))
    z = np.hstack([x_prev, feats[-1]])
    sz = np.linalg.svd(z, compute_uv=False)
    sz = sz[sz > max(z.shape) * np.finfo(np.float64).eps * sz[0]]  # zero padding (Prop. 4's nets) is no harm
    if sz[-1] < 1e-3 * sz[0]:
        return False
    if problem.get("loss", "squared") != "squared":
        # cross-entropy fixes W_{L+1} only up to a shift 1 c^T (softmax ignores it): no unique optimum
        return True
    # the (P_phi) optimum itself: W_{L+1} = Theta_1^T well conditioned, the least-norm W_L moderate
    theta1, theta2 = _rn_prediction_coefficients(problem)
    s = np.linalg.svd(theta1, compute_uv=False)
    if s.size < theta1.shape[1] or s[-1] < min_out_sv * max(s[0], 1.0):
        return False
    w_l = np.linalg.pinv(theta1.T) @ theta2.T
    return bool(float(np.linalg.norm(w_l, 2)) <= max_coef)


def rn_well_conditioned(problem) -> bool:
    """Whether a problem dict (x, Y, W0, blocks[, loss]) meets ``rn_solver_problems``' conditioning
    (``_rn_well_conditioned``): for checks that build their nets themselves and ``assume`` it."""
    return _rn_well_conditioned(problem)


def rn_solver_problems(**kwargs):
    """``rn_problems`` with planted targets, best A-ResNEst coefficients ||H*||_2 <= 30, features
    V = [v_0..v_L] with condition number <= 100, z = [x_{L-1}; v_L] with condition number (over its nonzero singular values) <= 1e3, and
    (squared loss) a (P_phi) optimum with
    s_min(W_{L+1}) >= 0.05 (relative to max(s_max, 1)) and least-norm ||W_L||_2 <= 30
    (``_rn_well_conditioned``), and M > N_o (``out_margin=1``).

    The (P_phi) minimiser then has a moderate, well-conditioned W_{L+1}. On nearly collinear features
    (cond(V) ~ 1e3), or when the optimum's W_{L+1} is nearly singular, L-BFGS from random starts often
    stalls with gradient ~1e-7 at points where W_{L+1} is nearly rank-deficient (s_min ~ 1e-2),
    ||W_L|| ~ 1e2..1e3 and eps ~ 1e-3..1e-2: not critical points (the certificate says so), so no
    evidence against Thm 1, but out of reach of a float64 check. The filter reads the problem only
    (never a solver's output), so it cannot hide a spurious local minimum.

    M > N_o: with a square W_{L+1}, (P_phi) splits into the components det W_{L+1} > 0 and < 0, separated
    by the singular matrices; the one without the minimiser has its infimum on that boundary
    (W_{L+1} -> singular, ||W_L|| -> inf), and in the thorough profile all of 30 random starts of the
    project's solver ended there on some draws. The M = N_o case of Thm 1 is thus not exercised by the
    solver checks."""
    kwargs.setdefault("out_margin", 1)
    return rn_problems(planted=True, **kwargs).filter(_rn_well_conditioned)


# --- ND, continued: problems with a genuinely mixed ReLU mask ---------------------------------
@st.composite
def nd_mixed_problems(draw, n: int | None = None, min_abs_eig: float = 0.2, max_abs_eig: float = 0.9,
                      margin: float = 0.1):
    """(A, x) as ``nd_problems(active="mixed")``, but with at least one active *and* at least one
    inactive unit: 1 <= #{i: (Ax)_i > 0} <= n - 1, each (Ax)_i at least ``margin`` from the kink.

    Diag[Phi'(Ax)] is then neither 0 (every formula of eq (6), (7), (11)-(17) collapses to one in A
    alone) nor I (the mask is invisible), so a formula that drops or misplaces the mask shows.
    Needs n >= 2.
    """
    n = draw(dims()) if n is None else n
    if n < 2:
        raise ValueError(f"a mixed mask needs n >= 2 units; got n = {n}")
    a = draw(symmetric_matrices(n=n, max_abs_eig=max_abs_eig, min_abs_eig=min_abs_eig))
    gen = rng(draw(seeds()))
    z = gen.uniform(margin, 1.0, size=n) * gen.choice([-1.0, 1.0], size=n)
    on, off = gen.choice(n, size=2, replace=False)
    z[on], z[off] = abs(z[on]), -abs(z[off])
    return a, np.linalg.solve(a, z)
