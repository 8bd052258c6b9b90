"""Newton Residual Learning (papers/000): the linear residual and Newton blocks and their stacks.

Dense float64 versions of the blocks (a convolution is a linear map; a dense matrix is the
general case), acting on one input of shape (d,) or a batch of rows (n, d):

- residual block (sec. 3.1)                     x_{t+1} = x_t + C x_t
- Newton block, unshared (eq. (1))              x_{t+1} = x_t + C x_t + a x_t * S x_t
- Newton block (eq. (2))                        x_{t+1} = x_t + C x_t + a N2(N1(x_t) * C x_t)
- with activations (sec. 3.2, eq. (3))          x_{t+1} = phi(x_t + f(x_t) + a N2(N1(x_t) * f(x_t))),
                                                f(x) = C2 phi(C1 x); the residual block is phi(x + f(x))

``*`` is the elementwise product. N1, N2 are the paper's "normalization operators, e.g. batch
normalization or 1x1 convolutions"; we take them as linear maps (a 1x1 convolution; batch norm at
inference is affine, and its shift would only add lower-degree terms), the identity by default.
With a = 0 every Newton block is the corresponding residual block. phi is named by
``activation_name``: any of ``ACTIVATIONS``, through the shared switch
``analysis.theory.activations.activation`` (re-exported here as ``activation``).

Reading of Alg. 1 (recorded, not implemented): read literally it differs from eq. (2)-(3) in three
ways: the shortcut adds the *projected* x_t (line 6 overwrites x_t by phi2(conv1x1(x_t)) before
line 9), there is no outer phi, and the transformation path ends with phi (line 4), unlike
f = C2 phi(C1 x). Line 6 with x_proj = 0 and phi2 = identity gives eq. (2) with a absorbed into
the lin_proj 1x1 convolution. We follow the equations, which CLAIMS.md quotes.

**Polynomial structure (NRL-poly, sec. 3.1 and 4.2).** Without activations, a stack of L residual
blocks is the single matrix (I + C_L) ... (I + C_1) (:func:`residual_stack_matrix`). A Newton block
maps a polynomial of degree m to one of degree 2m (the product term), so a stack of L Newton blocks
is a polynomial map of degree at most 2^L. :func:`newton_stack_line_polynomial` gives it exactly on a
line x0 + t v, as the coefficients of a univariate polynomial in t, by exact polynomial arithmetic
(convolution of coefficient arrays) through the blocks; :func:`newton_stack_leading_form` gives its
top-degree (2^L) homogeneous part Q_L(v), from Q_0 = v, Q_t = a_t N2_t((N1_t Q_{t-1}) * (C_t Q_{t-1})).
"""
from __future__ import annotations

import numpy as np

from analysis.theory.activations import NAMES as ACTIVATIONS
from analysis.theory.activations import activation
from analysis.validation import as_float64_array, as_vector, check_real, check_square

__all__ = [
    "ACTIVATIONS",
    "activation",
    "residual_block",
    "newton_block",
    "newton_block_unshared",
    "residual_block_activated",
    "newton_block_activated",
    "residual_stack",
    "residual_stack_matrix",
    "newton_stack",
    "newton_stack_line_polynomial",
    "newton_stack_leading_form",
]

# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------
def _inputs(x) -> np.ndarray:
    arr = as_float64_array("x", x)
    if arr.ndim not in (1, 2):
        raise ValueError(f"x must be one input of shape (d,) or a batch of rows (n, d); got shape {arr.shape}")
    return arr


def _square(name: str, m, d: int) -> np.ndarray:
    m = check_square(name, m)
    if m.shape[0] != d:
        raise ValueError(f"{name} must have shape ({d}, {d}) to act on inputs of dimension {d}; got {m.shape}")
    return m


def _apply(M: np.ndarray, x: np.ndarray) -> np.ndarray:
    """M x for one input (d,) or each row of a batch (n, d)."""
    return x @ M.T


def _stack(name: str, Ms, d: int | None = None) -> np.ndarray:
    arr = as_float64_array(name, Ms)
    if arr.ndim != 3 or arr.shape[1] != arr.shape[2] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be L >= 1 square matrices, an array of shape (L, d, d); got shape {arr.shape}")
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"{name} must hold ({d}, {d}) matrices to act on inputs of dimension {d}; "
                         f"got shape {arr.shape}")
    return arr


def _newton_params(Cs, alphas, N1s, N2s, d: int | None = None):
    Cs = _stack("Cs", Cs, d)
    L, d = Cs.shape[0], Cs.shape[1]
    alphas = as_float64_array("alphas", alphas)
    # A scalar a is accepted for a one-block stack only; longer stacks need one a per block.
    alphas = as_vector("alphas", alphas.reshape(1) if alphas.ndim == 0 and L == 1 else alphas, dim=L)
    eye = np.broadcast_to(np.eye(d), (L, d, d))
    N1s = eye if N1s is None else _stack("N1s", N1s, d)
    N2s = eye if N2s is None else _stack("N2s", N2s, d)
    for name, arr in (("N1s", N1s), ("N2s", N2s)):
        if arr.shape[0] != L:
            raise ValueError(f"{name} must hold one matrix per block (L = {L}, the length of Cs); got {arr.shape[0]}")
    return Cs, alphas, N1s, N2s


# --------------------------------------------------------------------------------------------
# blocks
# --------------------------------------------------------------------------------------------
def residual_block(x, C) -> np.ndarray:
    """x + C x (NRL sec. 3.1)."""
    x = _inputs(x)
    C = _square("C", C, x.shape[-1])
    return x + _apply(C, x)


def newton_block(x, C, alpha: float, N1=None, N2=None) -> np.ndarray:
    """x + C x + a N2(N1(x) * C x) (NRL eq. (2)); N1 = N2 = I by default."""
    x = _inputs(x)
    d = x.shape[-1]
    C = _square("C", C, d)
    alpha = check_real("alpha", alpha)
    N1 = np.eye(d) if N1 is None else _square("N1", N1, d)
    N2 = np.eye(d) if N2 is None else _square("N2", N2, d)
    Cx = _apply(C, x)
    return x + Cx + alpha * _apply(N2, _apply(N1, x) * Cx)


def newton_block_unshared(x, C, S, alpha: float) -> np.ndarray:
    """x + C x + a x * S x (NRL eq. (1), before S and C are shared)."""
    x = _inputs(x)
    d = x.shape[-1]
    C, S = _square("C", C, d), _square("S", S, d)
    alpha = check_real("alpha", alpha)
    return x + _apply(C, x) + alpha * x * _apply(S, x)


def _transformation(x, C1, C2, phi):
    """f(x) = C2 phi(C1 x), the two-convolution transformation path of sec. 3.2."""
    return _apply(C2, phi(_apply(C1, x)))


def residual_block_activated(x, C1, C2, activation_name: str = "relu") -> np.ndarray:
    """phi(x + f(x)), f(x) = C2 phi(C1 x) (NRL sec. 3.2, batch norm left out as in the paper)."""
    x = _inputs(x)
    d = x.shape[-1]
    C1, C2 = _square("C1", C1, d), _square("C2", C2, d)
    phi = activation(activation_name)
    return phi(x + _transformation(x, C1, C2, phi))


def newton_block_activated(x, C1, C2, alpha: float, N1=None, N2=None, activation_name: str = "relu") -> np.ndarray:
    """phi(x + f(x) + a N2(N1(x) * f(x))), f(x) = C2 phi(C1 x) (NRL eq. (3))."""
    x = _inputs(x)
    d = x.shape[-1]
    C1, C2 = _square("C1", C1, d), _square("C2", C2, d)
    alpha = check_real("alpha", alpha)
    N1 = np.eye(d) if N1 is None else _square("N1", N1, d)
    N2 = np.eye(d) if N2 is None else _square("N2", N2, d)
    phi = activation(activation_name)
    f = _transformation(x, C1, C2, phi)
    return phi(x + f + alpha * _apply(N2, _apply(N1, x) * f))


# --------------------------------------------------------------------------------------------
# stacks and their polynomial structure
# --------------------------------------------------------------------------------------------
def residual_stack(x, Cs) -> np.ndarray:
    """L residual blocks x <- x + C_t x, t = 1..L (Cs[0] first), without activations."""
    x = _inputs(x)
    Cs = _stack("Cs", Cs, x.shape[-1])
    for C in Cs:
        x = x + _apply(C, x)
    return x


def residual_stack_matrix(Cs) -> np.ndarray:
    """The single matrix (I + C_L) ... (I + C_1) that a linear residual stack equals (NRL sec. 4.2)."""
    Cs = _stack("Cs", Cs)
    d = Cs.shape[1]
    M = np.eye(d)
    for C in Cs:
        M = (np.eye(d) + C) @ M
    return M


def newton_stack(x, Cs, alphas, N1s=None, N2s=None) -> np.ndarray:
    """L Newton blocks (eq. (2)) without activations; block t uses Cs[t], alphas[t], N1s[t], N2s[t]."""
    x = _inputs(x)
    Cs, alphas, N1s, N2s = _newton_params(Cs, alphas, N1s, N2s, x.shape[-1])
    for C, a, N1, N2 in zip(Cs, alphas, N1s, N2s):
        Cx = _apply(C, x)
        x = x + Cx + a * _apply(N2, _apply(N1, x) * Cx)
    return x


def _poly_mul(p: np.ndarray, q: np.ndarray, length: int) -> np.ndarray:
    """Coefficient-wise product of d univariate polynomials (rows of p, q), truncated to ``length``.

    Truncation drops nothing: every intermediate degree is <= 2^L < length by construction.
    """
    out = np.zeros((p.shape[0], length))
    for k in range(p.shape[0]):
        prod = np.convolve(p[k], q[k])
        out[k] = prod[:length]
    return out


def newton_stack_line_polynomial(x0, v, Cs, alphas, N1s=None, N2s=None) -> np.ndarray:
    """Coefficients c (d, 2^L + 1) with newton_stack(x0 + t v) = sum_k c[:, k] t^k, exactly.

    Computed by propagating the d coordinate polynomials through the blocks with exact
    polynomial arithmetic (linear maps act on coefficient columns, the elementwise product is a
    convolution), not by fitting. Degree 2^L is the most a stack of L blocks can reach.
    """
    x0 = as_vector("x0", x0)
    d = x0.shape[0]
    v = as_vector("v", v, dim=d)
    Cs, alphas, N1s, N2s = _newton_params(Cs, alphas, N1s, N2s, d)
    length = 2 ** Cs.shape[0] + 1
    p = np.zeros((d, length))
    p[:, 0], p[:, 1] = x0, v
    for C, a, N1, N2 in zip(Cs, alphas, N1s, N2s):
        Cp = C @ p
        p = p + Cp + a * (N2 @ _poly_mul(N1 @ p, Cp, length))
    return p


def newton_stack_leading_form(v, Cs, alphas, N1s=None, N2s=None) -> np.ndarray:
    """Q_L(v), the degree-2^L homogeneous part of the Newton stack evaluated at v.

    Q_0 = v, Q_t = a_t N2_t((N1_t Q_{t-1}) * (C_t Q_{t-1})): only the product term doubles the
    degree, so the top part of block t is built from the top part of block t-1 alone. It is the
    t^{2^L} coefficient of the stack along any line x0 + t v, whatever x0.
    """
    v = as_vector("v", v)
    Cs, alphas, N1s, N2s = _newton_params(Cs, alphas, N1s, N2s, v.shape[0])
    Q = v
    for C, a, N1, N2 in zip(Cs, alphas, N1s, N2s):
        Q = a * (N2 @ ((N1 @ Q) * (C @ Q)))
    return Q
