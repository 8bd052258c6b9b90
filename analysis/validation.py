"""Input validation at the public boundary of ``analysis``.

Every check raises an error that names the parameter, says what was expected and what was
received, and, where a theorem's assumption is broken, which assumption of which paper.
Style follows scikit-learn's ``check_array``: the message tells the user how to fix the input.

``AssumptionError`` (a ``ValueError``) marks an input that is well-formed but violates the
hypothesis of a theorem (a non-symmetric matrix where Prop. 1 of ND needs symmetry, a spectral
norm >= 1 where the Neumann series needs < 1). Plain ``ValueError``/``TypeError`` mark
malformed input (wrong shape, non-finite entries, wrong type).
"""
from __future__ import annotations

from numbers import Integral, Real

import numpy as np

__all__ = [
    "AssumptionError",
    "as_float64_array",
    "as_vector",
    "as_matrix",
    "check_square",
    "check_symmetric",
    "check_positive_definite",
    "check_spectral_norm_below",
    "check_invertible",
    "check_bool",
    "check_int",
    "check_real",
    "check_choice",
]


class AssumptionError(ValueError):
    """An input violates an assumption of the theorem the function implements."""


def _where(assumption: str | None) -> str:
    return f" ({assumption})" if assumption else ""


def as_float64_array(name: str, value, ndim: int | None = None) -> np.ndarray:
    """Convert ``value`` to a finite float64 ndarray, checking its number of dimensions."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} must be a real array convertible to float64; got {type(value).__name__} ({exc})"
        ) from None
    if ndim is not None and arr.ndim != ndim:
        kind = {0: "a scalar", 1: "a 1-D vector", 2: "a 2-D matrix"}.get(ndim, f"{ndim}-D")
        hint = ""
        if ndim == 2 and arr.ndim == 1:
            hint = " Reshape it with value.reshape(-1, 1) for one column or value.reshape(1, -1) for one row."
        raise ValueError(f"{name} must be {kind}; got an array of shape {arr.shape}.{hint}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(f"{name} must be finite; it has {bad} NaN or infinite entries")
    return arr


def as_vector(name: str, value, dim: int | None = None) -> np.ndarray:
    """A finite float64 1-D vector, of length ``dim`` if given."""
    arr = as_float64_array(name, value, ndim=1)
    if dim is not None and arr.shape[0] != dim:
        raise ValueError(f"{name} must have length {dim} to match the matrix; got length {arr.shape[0]}")
    return arr


def as_matrix(name: str, value, shape: tuple[int | None, int | None] | None = None) -> np.ndarray:
    """A finite float64 2-D matrix; ``shape`` entries that are not None are enforced."""
    arr = as_float64_array(name, value, ndim=2)
    if shape is not None:
        for axis, want in enumerate(shape):
            if want is not None and arr.shape[axis] != want:
                want_text = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                raise ValueError(f"{name} must have shape {want_text}; got {arr.shape}")
    return arr


def check_square(name: str, value) -> np.ndarray:
    """A finite float64 square matrix."""
    arr = as_matrix(name, value)
    if arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{name} must be a square matrix; got shape {arr.shape}")
    return arr


def _sym_tol(arr: np.ndarray, rtol: float) -> float:
    # Relative to the largest entry so that scaling the matrix does not change the verdict.
    return rtol * max(1.0, float(np.max(np.abs(arr))) if arr.size else 1.0)


def check_symmetric(name: str, value, *, rtol: float = 1e-10, assumption: str | None = None) -> np.ndarray:
    """A square matrix equal to its transpose up to ``rtol`` times its largest entry.

    The default 1e-10 is ~5e5 float64 ulps: far above round-off of matrices built as
    (B + B^T)/2, far below any asymmetry that changes a gradient visibly.
    """
    arr = check_square(name, value)
    gap = float(np.max(np.abs(arr - arr.T))) if arr.size else 0.0
    if gap > _sym_tol(arr, rtol):
        raise AssumptionError(
            f"{name} must be symmetric{_where(assumption)}; max |{name} - {name}^T| = {gap:.3g}. "
            f"Symmetrize it with ({name} + {name}.T) / 2 if the asymmetry is round-off."
        )
    return arr


def check_positive_definite(name: str, value, *, rtol: float = 1e-12, assumption: str | None = None) -> np.ndarray:
    """A symmetric positive definite matrix: smallest eigenvalue > ``rtol`` * largest |eigenvalue|."""
    arr = check_symmetric(name, value, assumption=assumption)
    eig = np.linalg.eigvalsh((arr + arr.T) / 2)
    scale = max(float(np.max(np.abs(eig))), np.finfo(np.float64).tiny)
    if eig[0] <= rtol * scale:
        raise AssumptionError(
            f"{name} must be positive definite{_where(assumption)}; its smallest eigenvalue is "
            f"{eig[0]:.3g} (largest {eig[-1]:.3g})"
        )
    return arr


def check_spectral_norm_below(
    name: str, value, bound: float = 1.0, *, assumption: str | None = None
) -> np.ndarray:
    """A matrix whose spectral norm (largest singular value) is strictly below ``bound``."""
    arr = as_matrix(name, value)
    norm = float(np.linalg.norm(arr, 2)) if arr.size else 0.0
    if not norm < bound:
        raise AssumptionError(
            f"{name} must have spectral norm < {bound:g}{_where(assumption)}; got ||{name}||_2 = {norm:.6g}. "
            f"Rescale it, e.g. {name} * {0.9 * bound / norm if norm else 0:.3g}."
        )
    return arr


def check_invertible(name: str, value, *, max_condition: float = 1e12, assumption: str | None = None) -> np.ndarray:
    """A square matrix with condition number below ``max_condition`` (1e12 leaves ~4 digits in float64)."""
    arr = check_square(name, value)
    cond = float(np.linalg.cond(arr)) if arr.size else 1.0
    if not np.isfinite(cond) or cond > max_condition:
        raise AssumptionError(
            f"{name} must be invertible{_where(assumption)}; its condition number is {cond:.3g} "
            f"(limit {max_condition:.0e})"
        )
    return arr


def check_bool(name: str, value) -> bool:
    """A real bool: a truthy non-bool (1, "no") would silently pick a branch, so a config typo fails loudly."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {type(value).__name__} {value!r}")
    return value


def check_int(name: str, value, *, min_value: int | None = None, max_value: int | None = None) -> int:
    """An integer (not bool) within the closed range given."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer; got {type(value).__name__} {value!r}")
    value = int(value)
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be >= {min_value}; got {value}")
    if max_value is not None and value > max_value:
        raise ValueError(f"{name} must be <= {max_value}; got {value}")
    return value


def check_real(
    name: str,
    value,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    include_min: bool = True,
    include_max: bool = True,
) -> float:
    """A finite real number within the range given (bounds closed unless told otherwise)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if min_value is not None and (value < min_value or (not include_min and value == min_value)):
        op = ">=" if include_min else ">"
        raise ValueError(f"{name} must be {op} {min_value:g}; got {value:g}")
    if max_value is not None and (value > max_value or (not include_max and value == max_value)):
        op = "<=" if include_max else "<"
        raise ValueError(f"{name} must be {op} {max_value:g}; got {value:g}")
    return value


def check_choice(name: str, value, choices) -> str:
    """One of ``choices``; the error lists the valid ones."""
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value
