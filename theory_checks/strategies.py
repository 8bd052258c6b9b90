"""Hypothesis strategies shared by the theory checks.

Matrices are drawn as (dimension, seed, spectrum parameters) and built with numpy's seeded
generator. That keeps every example bounded and well-conditioned by construction (no
``assume``), fast to generate, and reproducible from the printed example: hypothesis shrinks the
dimension and the spectrum bounds, which is what a counterexample's reader needs.
"""
from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

MAX_DIM = 8

# The activations of OAI Table 1; the ND and NRL checks use ReLU from the same list.
ACTIVATION_NAMES = ("sigmoid", "tanh", "relu", "leaky_relu", "elu", "swish")


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
    return st.sampled_from(ACTIVATION_NAMES)


@st.composite
def vectors(draw, n: int, scale: float = 1.0):
    """An N(0, scale^2 I) vector of length n."""
    gen = rng(draw(seeds()))
    return scale * gen.standard_normal(n)
