"""Input validation and shapes of analysis.theory.im (Hardt & Ma, papers/004)."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.theory import im as im
from analysis.validation import AssumptionError

D = 3


def _layers(depth=2, d=D, seed=0):
    return 0.1 * np.random.default_rng(seed).standard_normal((depth, d, d))


def test_shapes_of_product_network_risk_and_gradient():
    A, R, Sigma = _layers(4), np.eye(D), np.eye(D)
    assert im.residual_product(A).shape == (D, D)
    assert im.linear_residual_network(A, np.ones(D)).shape == (D,)
    assert im.linear_residual_network(A, np.ones((5, D))).shape == (5, D)
    assert np.allclose(im.linear_residual_network(A, np.eye(D)), im.residual_product(A).T)
    assert isinstance(im.population_risk(A, R, Sigma), float)
    assert im.population_risk_gradient(A, R, Sigma).shape == (4, D, D)
    # A list of matrices is accepted as well as an (l, d, d) array.
    assert np.array_equal(im.residual_layers(list(A)), A)


def test_risk_at_a_global_minimum_is_the_noise_term():
    R = np.random.default_rng(1).standard_normal((D, D))
    A = [R - np.eye(D)]
    assert im.population_risk(A, R, np.eye(D), noise_variance=0.5) == pytest.approx(D * 0.5)
    assert im.global_minimum_risk(R, 0.5) == D * 0.5


def test_mismatched_layer_shapes_are_named():
    with pytest.raises(ValueError, match=r"A\[1\] must have shape \(3, 3\) like A\[0\]; got \(2, 2\)"):
        im.residual_layers([np.eye(3), np.eye(2)])
    with pytest.raises(ValueError, match=r"A\[0\] must be a square matrix; got shape \(3, 2\)"):
        im.residual_layers([np.ones((3, 2))])
    with pytest.raises(ValueError, match=r"A\[0\] must have shape \(3, 3\) like R; got \(2, 2\)"):
        im.population_risk([np.eye(2)], np.eye(3), np.eye(3))


def test_empty_or_non_sequence_layers_are_rejected():
    with pytest.raises(ValueError, match="at least one layer"):
        im.residual_layers([])
    with pytest.raises(TypeError, match=r"Wrap a single layer as \[A_1\]"):
        im.residual_layers(np.eye(3))


def test_non_square_r_and_bad_sigma_and_negative_noise():
    A = _layers()
    with pytest.raises(ValueError, match=r"R must be a square matrix; got shape \(3, 2\)"):
        im.population_risk(A, np.ones((3, 2)), np.eye(3))
    with pytest.raises(ValueError, match=r"Sigma must have shape \(3, 3\); got \(2, 2\)"):
        im.population_risk(A, np.eye(3), np.eye(2))
    with pytest.raises(AssumptionError, match="Sigma must be positive definite"):
        im.population_risk(A, np.eye(3), -np.eye(3))
    with pytest.raises(ValueError, match="noise_variance must be >= 0; got -1"):
        im.population_risk(A, np.eye(3), np.eye(3), noise_variance=-1.0)


def test_bad_depth_is_rejected():
    with pytest.raises(ValueError, match="depth must be >= 1; got 0"):
        im.small_norm_global_minimum(np.eye(3), 0)
    with pytest.raises(TypeError, match="depth must be an integer; got float 2.5"):
        im.small_norm_global_minimum(np.eye(3), 2.5)


def test_small_norm_minimum_needs_positive_determinant():
    with pytest.raises(AssumptionError, match=r"det R > 0.*got det R = -1"):
        im.small_norm_global_minimum(np.diag([1.0, 1.0, -1.0]), 20)


def test_small_norm_minimum_handles_half_turns_and_depth_one():
    R = -np.eye(4)  # W = -I: every eigenvalue is -1, the case a principal logm gets wrong
    A = im.small_norm_global_minimum(R, 12)
    assert A.shape == (12, 4, 4)
    assert np.allclose(im.residual_product(A), R, atol=1e-12)
    assert np.array_equal(im.small_norm_global_minimum(2 * np.eye(2), 1)[0], np.eye(2))


def test_gradient_domination_constant_refuses_tau_one():
    with pytest.raises(AssumptionError, match=r"tau < 1.*got tau = 1"):
        im.gradient_domination_constant([-np.eye(2), np.zeros((2, 2))], np.eye(2))


def test_gradient_descent_arguments():
    with pytest.raises(ValueError, match="step_size must be > 0"):
        im.gradient_descent(_layers(), np.eye(3), np.eye(3), 0.0, 10)
    with pytest.raises(ValueError, match="num_steps must be >= 0"):
        im.gradient_descent(_layers(), np.eye(3), np.eye(3), 0.1, -1)
    final, gaps = im.gradient_descent(_layers(), np.eye(3), np.eye(3), 0.1, 5)
    assert final.shape == (2, 3, 3) and gaps.shape == (6,)


def test_fit_residual_relu_network_inputs_and_shapes():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((10, 3))
    labels = gen.integers(0, 3, 10)
    net = im.fit_residual_relu_network(x, labels, width=4, num_classes=3)
    assert net.U.shape == (net.depth, 4, 4) and net.V_out.shape == (3, 3)
    assert im.residual_relu_network_forward(net, x).shape == (10, 3)
    counts = im.count_parameters(net)
    assert counts["trainable"] == net.depth * (2 * 16 + 4) + 3 * 4 + 3 + 9
    with pytest.raises(ValueError, match=r"labels must be n = 10 integers"):
        im.fit_residual_relu_network(x, labels[:5], width=4)
    with pytest.raises(ValueError, match=r"labels must lie in 0..1 \(num_classes = 2\)"):
        im.fit_residual_relu_network(x, labels, width=4, num_classes=2)
    with pytest.raises(ValueError, match="width must be >= 2; got 1"):
        im.fit_residual_relu_network(x, labels, width=1)
    with pytest.raises(ValueError, match=r"x must have shape \(\*, 3\); got \(10, 2\)"):
        im.residual_relu_network_forward(net, x[:, :2])
    dup = x.copy()
    dup[4] = dup[2]
    with pytest.raises(AssumptionError, match="rows 2 and 4 coincide"):
        im.fit_residual_relu_network(dup, labels, width=4)
