"""The activations phi of the papers: one switch for every theory module.

    >>> from analysis.theory.activations import activation
    >>> phi = activation("leaky_relu", alpha=0.1)
    >>> phi([-1.0, 2.0])
    array([-0.1,  2. ])

Contract: ``activation(name, *, alpha=0.01, a=1.0)`` returns phi, a function of one array
(anything ``np.asarray`` turns into float64) evaluated elementwise in float64. ``name`` is one of
``NAMES``; ``alpha`` is the leaky-ReLU slope (>= 0) and ``a`` the ELU scale (> 0), ignored by the
other activations. Unknown names and bad parameters raise a ``ValueError`` that names the
parameter and lists the valid choices.

The names: ``identity`` (``linear`` is the same map, the word the RN paper uses for a block whose
features are linearly predictable), ``relu``, ``leaky_relu`` phi(t) = t for t > 0 and alpha t
otherwise, ``elu`` phi(t) = t for t > 0 and a (e^t - 1) otherwise, ``sigmoid``, ``tanh``,
``swish`` phi(t) = t sigmoid(t), ``softplus`` log(1 + e^t), ``softsign`` t / (1 + |t|).

No claim of the papers rests on phi' (ND's Hessian uses the ReLU mask of ``analysis.theory.nd``),
so there is no derivative here to keep correct. Paper-specific pieces stay with their paper: OAI's objectives
Psi with Psi' = phi (Table 1) are ``analysis.theory.oai.psi``.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from scipy import special

from analysis.validation import check_choice, check_real

__all__ = ["NAMES", "KINKS", "activation", "check_activation"]

NAMES = ("identity", "linear", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "swish", "softplus", "softsign")
# Points where phi or phi' is not differentiable: finite-difference checks keep away from them.
KINKS = {"relu": (0.0,), "leaky_relu": (0.0,), "elu": (0.0,), "softsign": (0.0,)}

Elementwise = Callable[[np.ndarray], np.ndarray]


def _phi(name: str, alpha: float, a: float, t) -> np.ndarray:
    t = np.asarray(t, dtype=np.float64)
    if name in ("identity", "linear"):
        return t
    if name == "relu":
        return np.maximum(t, 0.0)
    if name == "leaky_relu":
        return np.where(t > 0, t, alpha * t)
    if name == "elu":
        return np.where(t > 0, t, a * np.expm1(np.minimum(t, 0.0)))
    if name == "sigmoid":
        return special.expit(t)
    if name == "tanh":
        return np.tanh(t)
    if name == "swish":
        return t * special.expit(t)
    if name == "softplus":
        return np.logaddexp(0.0, t)
    return t / (1.0 + np.abs(t))  # softsign


def check_activation(name: str, *, alpha: float = 0.01, a: float = 1.0) -> tuple[str, float, float]:
    """(name, alpha, a) checked as ``activation`` checks them: a name of ``NAMES``, alpha >= 0, a > 0."""
    name = check_choice("activation", name, NAMES)
    alpha = check_real("alpha", alpha, min_value=0.0)
    a = check_real("a", a, min_value=0.0, include_min=False)
    return name, alpha, a


def activation(name: str, *, alpha: float = 0.01, a: float = 1.0) -> Elementwise:
    """phi called ``name`` (one of ``NAMES``), elementwise in float64; ``alpha``: leaky-ReLU slope, ``a``: ELU scale."""
    return partial(_phi, *check_activation(name, alpha=alpha, a=a))
