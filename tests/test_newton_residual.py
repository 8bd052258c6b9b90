"""Input validation and shapes of analysis.theory.nrl (NRL, papers/000)."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.theory import nrl as nr


def test_shapes_one_input_and_batch():
    gen = np.random.default_rng(0)
    C = gen.standard_normal((3, 3))
    for x in (np.ones(3), np.ones((5, 3))):
        assert nr.residual_block(x, C).shape == x.shape
        assert nr.newton_block(x, C, 0.5).shape == x.shape
        assert nr.newton_block_activated(x, C, C, 0.5, activation_name="tanh").shape == x.shape
    Cs = gen.standard_normal((2, 3, 3))
    assert nr.newton_stack(np.ones((4, 3)), Cs, [0.1, 0.2]).shape == (4, 3)
    assert nr.residual_stack_matrix(Cs).shape == (3, 3)
    assert nr.newton_stack_line_polynomial(np.ones(3), np.ones(3), Cs, [0.1, 0.2]).shape == (3, 5)
    assert nr.newton_stack_leading_form(np.ones(3), Cs, [0.1, 0.2]).shape == (3,)


def test_single_block_stack_accepts_scalar_alpha_and_matches_block():
    gen = np.random.default_rng(1)
    C = gen.standard_normal((3, 3))
    x = gen.standard_normal(3)
    assert np.allclose(nr.newton_stack(x, C[None], 0.7), nr.newton_block(x, C, 0.7))


def test_dimension_mismatches_are_named():
    with pytest.raises(ValueError, match=r"C must have shape \(3, 3\) to act on inputs of dimension 3; got \(2, 2\)"):
        nr.residual_block(np.ones(3), np.eye(2))
    with pytest.raises(ValueError, match=r"N1 must have shape \(3, 3\)"):
        nr.newton_block(np.ones(3), np.eye(3), 1.0, N1=np.eye(2))
    with pytest.raises(ValueError, match=r"C must be a square matrix; got shape \(3, 2\)"):
        nr.residual_block(np.ones(3), np.ones((3, 2)))
    with pytest.raises(ValueError, match=r"x must be one input of shape \(d,\) or a batch of rows \(n, d\)"):
        nr.residual_block(np.ones((2, 2, 3)), np.eye(3))


def test_stack_arguments():
    with pytest.raises(ValueError, match=r"Cs must be L >= 1 square matrices.*got shape \(3, 3\)"):
        nr.residual_stack(np.ones(3), np.eye(3))
    with pytest.raises(ValueError, match=r"Cs must hold \(3, 3\) matrices.*got shape \(1, 2, 2\)"):
        nr.residual_stack(np.ones(3), np.eye(2)[None])
    with pytest.raises(ValueError, match="alphas must have length 2"):
        nr.newton_stack(np.ones(3), np.stack([np.eye(3)] * 2), [1.0])
    with pytest.raises(ValueError, match=r"N2s must hold one matrix per block \(L = 2"):
        nr.newton_stack(np.ones(3), np.stack([np.eye(3)] * 2), [1.0, 1.0], N2s=np.eye(3)[None])
    with pytest.raises(ValueError, match="v must have length 3"):
        nr.newton_stack_line_polynomial(np.ones(3), np.ones(2), np.eye(3)[None], 1.0)


def test_bad_alpha_and_activation():
    with pytest.raises(TypeError, match="alpha must be a real number"):
        nr.newton_block(np.ones(2), np.eye(2), "big")
    with pytest.raises(ValueError, match="alpha must be finite"):
        nr.newton_block(np.ones(2), np.eye(2), float("nan"))
    with pytest.raises(ValueError, match="activation must be one of 'identity', 'linear', 'relu', .*'softsign'; got 'gelu'"):
        nr.residual_block_activated(np.ones(2), np.eye(2), np.eye(2), "gelu")
