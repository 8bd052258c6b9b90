import numpy as np
import pytest

from analysis.validation import (
    AssumptionError, as_matrix, check_bool, as_vector, check_choice, check_int, check_invertible,
    check_positive_definite, check_real, check_spectral_norm_below, check_square, check_symmetric,
)


def test_matrix_checks_name_the_parameter_and_the_shape():
    with pytest.raises(ValueError, match=r"A must be a 2-D matrix; got an array of shape \(3,\).*Reshape"):
        as_matrix("A", np.ones(3))
    with pytest.raises(ValueError, match=r"A must be a square matrix; got shape \(2, 3\)"):
        check_square("A", np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"W must have shape \(\*, 4\); got \(2, 3\)"):
        as_matrix("W", np.ones((2, 3)), shape=(None, 4))
    with pytest.raises(ValueError, match="x must have length 3 to match the matrix; got length 2"):
        as_vector("x", [1.0, 2.0], dim=3)


def test_non_finite_and_non_numeric_inputs_are_rejected():
    with pytest.raises(ValueError, match="x must be finite; it has 1 NaN or infinite entries"):
        as_vector("x", [1.0, np.nan])
    with pytest.raises(TypeError, match="x must be a real array"):
        as_vector("x", ["a", "b"])


def test_symmetry_is_an_assumption_error_that_names_the_theorem():
    a = np.array([[1.0, 2.0], [0.0, 1.0]])
    with pytest.raises(AssumptionError, match=r"A must be symmetric \(ND Prop. 1\); max \|A - A\^T\| = 2"):
        check_symmetric("A", a, assumption="ND Prop. 1")
    # Round-off asymmetry far below the tolerance passes.
    b = np.array([[1.0, 2.0], [2.0 + 1e-14, 1.0]])
    check_symmetric("B", b)


def test_positive_definite_spectral_norm_and_invertibility():
    with pytest.raises(AssumptionError, match="W must be positive definite.*smallest eigenvalue is -1"):
        check_positive_definite("W", np.diag([2.0, -1.0]))
    check_positive_definite("W", np.diag([2.0, 1.0]))
    with pytest.raises(AssumptionError, match=r"A must have spectral norm < 1 \(ND eq \(7\)\); got \|\|A\|\|_2 = 2"):
        check_spectral_norm_below("A", np.diag([2.0, 0.5]), assumption="ND eq (7)")
    check_spectral_norm_below("A", np.diag([0.99, 0.5]))
    with pytest.raises(AssumptionError, match="A must be invertible"):
        check_invertible("A", np.diag([1.0, 0.0]))


def test_scalar_checks():
    assert check_int("m", 3, min_value=0) == 3
    with pytest.raises(TypeError, match="m must be an integer; got bool True"):
        check_int("m", True)
    with pytest.raises(ValueError, match="m must be >= 0; got -1"):
        check_int("m", -1, min_value=0)
    with pytest.raises(ValueError, match="tau must be < 1; got 1"):
        check_real("tau", 1.0, max_value=1.0, include_max=False)
    with pytest.raises(ValueError, match="loss must be one of 'squared', 'cross_entropy'; got 'l1'"):
        check_choice("loss", "l1", ["squared", "cross_entropy"])


def test_bool_check_rejects_truthy_non_bools():
    assert check_bool("activations", False) is False
    with pytest.raises(TypeError, match="activations must be True or False; got int 0"):
        check_bool("activations", 0)
