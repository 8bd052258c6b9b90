"""Tests of analysis.theory.rn's input validation and of the moment-based least-squares solver."""
from __future__ import annotations

import numpy as np
import pytest

from analysis.theory import rn as rn
from analysis.validation import AssumptionError

EPS = np.finfo(np.float64).eps


@pytest.fixture
def problem():
    gen = np.random.default_rng(0)
    w0, blocks = rn.random_resnest(gen, 2, 5, [2, 2], act="tanh")
    x = gen.standard_normal((30, 2))
    y = gen.standard_normal((30, 2))
    return x, y, w0, blocks


def _lstsq(v, y):
    h, *_ = np.linalg.lstsq(v, y, rcond=None)
    return float(np.sum((y - v @ h) ** 2) / v.shape[0]), h


@pytest.mark.parametrize("rank_deficient", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_moments_agree_with_lstsq(seed, rank_deficient):
    gen = np.random.default_rng(seed)
    v = gen.standard_normal((50, 6))
    if rank_deficient:
        v[:, 4] = v[:, 0] - 2 * v[:, 1]  # exact linear dependence: rank 5
        v[:, 5] = v[:, 2]
    y = gen.standard_normal((50, 3))
    risk, h = rn.least_squares_risk_from_moments(v.T @ v, v.T @ y, float(np.sum(y * y)), 50)
    ref_risk, ref_h = _lstsq(v, y)
    # both solve a problem of condition number ~10; the risk differences are round-off of sums of 150
    # squares of O(1) residuals: 1e3 * eps covers it with margin
    assert abs(risk - ref_risk) <= 1e3 * EPS * max(ref_risk, 1.0)
    # both return the minimum-norm solution, also when V is rank-deficient
    np.testing.assert_allclose(h, ref_h, atol=1e-10)


def test_moments_streaming_equals_batch():
    gen = np.random.default_rng(1)
    v, y = gen.standard_normal((40, 4)), gen.standard_normal((40, 2))
    gram, cross, ysq = np.zeros((4, 4)), np.zeros((4, 2)), 0.0
    for i in range(0, 40, 7):
        vb, yb = v[i:i + 7], y[i:i + 7]
        gram, cross, ysq = gram + vb.T @ vb, cross + vb.T @ yb, ysq + float(np.sum(yb * yb))
    assert rn.least_squares_risk_from_moments(gram, cross, ysq, 40)[0] == pytest.approx(_lstsq(v, y)[0], abs=1e-12)


def test_moments_errors():
    with pytest.raises(ValueError, match="gram must be the square matrix"):
        rn.least_squares_risk_from_moments(np.ones((2, 3)), np.ones((2, 1)), 1.0, 3)
    with pytest.raises(ValueError, match=r"cross must be V\^T Y with 2 rows"):
        rn.least_squares_risk_from_moments(np.eye(2), np.ones((3, 1)), 1.0, 3)
    with pytest.raises(ValueError, match="n must be >= 1"):
        rn.least_squares_risk_from_moments(np.eye(2), np.ones((2, 1)), 1.0, 0)
    with pytest.raises(ValueError, match="target_sq must be >= 0"):
        rn.least_squares_risk_from_moments(np.eye(2), np.ones((2, 1)), -1.0, 3)


def test_moments_refuse_a_gram_that_is_not_v_transpose_v():
    gen = np.random.default_rng(2)
    v, y = gen.standard_normal((30, 3)), gen.standard_normal((30, 2))
    gram, cross, ysq = v.T @ v, v.T @ y, float(np.sum(y * y))
    asymmetric = gram.copy()
    asymmetric[0, 1] += 1.0  # symmetrising it would silently solve another problem
    with pytest.raises(ValueError, match=r"gram must be symmetric \(it is V\^T V\): max \|G - G\^T\| = 1 \(relative "):
        rn.least_squares_risk_from_moments(asymmetric, cross, ysq, 30)
    indefinite = gram - 2.0 * np.linalg.eigvalsh(gram)[0] * np.eye(3)  # smallest eigenvalue -lambda_min
    with pytest.raises(ValueError, match=r"gram must be positive semi-definite \(it is V\^T V\): smallest eigenvalue -"):
        rn.least_squares_risk_from_moments(indefinite, cross, ysq, 30)
    # round-off of an accumulated Gram matrix passes: an asymmetry of a few ulps in float64, and a
    # float32 accumulation (judged against float32's eps), rank-deficient so eigenvalues sit at ~0
    nudged = gram.copy()
    nudged[0, 1] *= 1 + 4 * EPS
    assert rn.least_squares_risk_from_moments(nudged, cross, ysq, 30)[0] == pytest.approx(_lstsq(v, y)[0], rel=1e-9)
    v32 = gen.standard_normal((2000, 5)).astype(np.float32)
    v32[:, 4] = v32[:, 0] - v32[:, 1]
    g32 = np.zeros((5, 5), np.float32)
    for i in range(0, 2000, 64):
        g32 += v32[i:i + 64].T @ v32[i:i + 64]
    g32[1, 2] += np.float32(4 * np.finfo(np.float32).eps) * g32[1, 2]
    risk, _ = rn.least_squares_risk_from_moments(g32, v32.T @ np.ones((2000, 1), np.float32), 2000.0, 2000)
    assert 0.99 < risk <= 1.0  # 1 - R^2 of a constant target on centred noise: close to 1


def test_best_linear_risk_matches_lstsq(problem):
    x, y, w0, blocks = problem
    feats = rn.resnest_features(x, blocks, w0)
    assert rn.best_linear_risk(feats, y)[0] == pytest.approx(_lstsq(np.hstack(feats), y)[0], abs=1e-12)
    sol = rn.a_resnest_risk(feats, y)
    assert sol.converged and sol.suboptimality_bound < 1e-20


def test_cross_entropy_certificate_brackets_the_optimum(problem):
    x, _, w0, blocks = problem
    feats = rn.resnest_features(x, blocks, w0)
    p = np.random.default_rng(3).dirichlet(np.ones(3), size=x.shape[0])
    sol = rn.a_resnest_risk(feats, p, "cross_entropy")
    assert sol.converged
    assert 0.0 <= sol.suboptimality_bound < 1e-10
    # a loose solve has a larger, still valid, duality gap
    loose = rn.a_resnest_risk(feats, p, "cross_entropy", gtol=1e-1, gap_tol=1.0)  # no polish
    assert loose.risk - loose.suboptimality_bound <= sol.risk + 1e-12 <= loose.risk + 1e-12
    assert loose.suboptimality_bound > 1e3 * sol.suboptimality_bound


def test_soft_targets_with_tiny_entries_get_a_tight_certificate():
    # A thorough-profile draw (N = 100, D = 6, min y = 4.5e-7): L-BFGS stops at ||g|| = 3.7e-7 with a duality
    # gap of 4.9e-4, because the dual point is mixed toward Y by ~|V corr| / min y. The Newton-CG polish
    # brings the gap under gap_tol (1e-6, default) without moving the risk by more than the old gap.
    from pathlib import Path
    data = np.load(Path(__file__).parent / "data" / "soft_targets_gap.npz")
    v, y = data["v"], data["y"]
    raw = rn.a_resnest_risk(v, y, "cross_entropy", gap_tol=1.0)
    assert raw.suboptimality_bound > 1e-4 and raw.converged
    sol = rn.a_resnest_risk(v, y, "cross_entropy")
    assert sol.converged and 0.0 <= sol.suboptimality_bound <= 1e-6
    assert sol.grad_norm < raw.grad_norm and sol.iterations > raw.iterations
    assert sol.risk - sol.suboptimality_bound <= raw.risk <= sol.risk + raw.suboptimality_bound
    with pytest.raises(ValueError, match="gap_tol"):
        rn.a_resnest_risk(v, y, "cross_entropy", gap_tol=-1.0)


def test_mismatched_sample_counts(problem):
    x, y, w0, blocks = problem
    feats = rn.resnest_features(x, blocks, w0)
    with pytest.raises(ValueError, match=r"features\[1\] has 29 samples .* features\[0\] has 30"):
        rn.a_resnest_risk([feats[0], feats[1][:-1]], y)
    with pytest.raises(ValueError, match="Y must have one row per sample: expected 30 rows"):
        rn.a_resnest_risk(feats, y[:-1])
    pf = rn.prediction_features(x, blocks, w0)
    with pytest.raises(ValueError, match="features.x_prev has 30 samples but features.v_last has 29"):
        rn.resnest_prediction_risk(np.zeros((5, 2)), np.zeros((2, 5)), (pf.x_prev, pf.v_last[:-1]), y)


def test_wrong_widths(problem):
    x, y, w0, blocks = problem
    pf = rn.prediction_features(x, blocks, w0)
    with pytest.raises(ValueError, match=r"W_L must have shape \(5, 2\)"):
        rn.resnest_prediction_risk(np.zeros((4, 2)), np.zeros((2, 5)), pf, y)
    with pytest.raises(ValueError, match="W_out must have N_o = 2 rows"):
        rn.resnest_prediction_risk(np.zeros((5, 2)), np.zeros((3, 5)), pf, y)
    bad = [rn.ResidualBlock(blocks[0].G, np.zeros((4, 2)))]
    with pytest.raises(ValueError, match=r"block 1: G_1 must read the residual stream of width M = 5|W_1 must have shape"):
        rn.resnest_features(x, bad, w0)
    with pytest.raises(ValueError, match=r"dense block 2: G_2 must read the concatenation"):
        gen = np.random.default_rng(0)
        rn.densenest_features(x, [rn.random_feature_map(gen, 2, 1), rn.random_feature_map(gen, 2, 1)])


def test_unknown_loss_lists_valid_ones(problem):
    x, y, w0, blocks = problem
    with pytest.raises(ValueError, match="loss must be one of 'squared', 'cross_entropy'; got 'hinge'"):
        rn.a_resnest_risk(rn.resnest_features(x, blocks, w0), y, loss="hinge")
    with pytest.raises(ValueError, match="activation must be one of 'identity', 'linear', 'relu'"):
        rn.activation("gelu")
    with pytest.raises(ValueError, match="activation must be one of"):
        rn.random_feature_map(np.random.default_rng(0), 2, 1, act="gelu")(np.zeros((1, 2)))


def test_cross_entropy_needs_probabilities(problem):
    x, y, w0, blocks = problem
    with pytest.raises(ValueError, match="Y must hold probability vectors"):
        rn.a_resnest_risk(rn.resnest_features(x, blocks, w0), y, loss="cross_entropy")


def test_assumption_checks(problem):
    x, y, w0, blocks = problem
    assert rn.assumption4_holds([w0, blocks[0].W])
    assert not rn.assumption4_holds([np.eye(2), np.ones((2, 1))])  # no expansion, L = 2
    assert rn.bottleneck_condition_holds(5, [2, 2]) and not rn.bottleneck_condition_holds(3, [2, 2])
    assert rn.assumption3_holds(5, 2) and not rn.assumption3_holds(1, 2)
    pf = rn.prediction_features(x, blocks, w0)
    assert rn.assumption1_holds(pf.v_last, y)
    with pytest.raises(AssumptionError, match="Assumption 1 of RN"):
        rn.nonconvexity_witness((pf.x_prev, np.zeros_like(pf.v_last)), y)
    with pytest.raises(ValueError, match=r"W_prev\[1\] must have M = 5 rows"):
        rn.assumption4_holds([w0, np.ones((4, 2))])


def test_gradient_matches_finite_differences(problem):
    x, y, w0, blocks = problem
    pf = rn.prediction_features(x, blocks, w0)
    gen = np.random.default_rng(2)
    w_l, w_o = gen.standard_normal((5, 2)), gen.standard_normal((2, 5))
    for loss, yy in (("squared", y), ("cross_entropy", gen.dirichlet(np.ones(2), size=30))):
        _, g_l, g_o = rn.resnest_prediction_risk(w_l, w_o, pf, yy, loss)
        d_l, d_o = gen.standard_normal(w_l.shape), gen.standard_normal(w_o.shape)
        h = 1e-6
        fp = rn.resnest_prediction_risk(w_l + h * d_l, w_o + h * d_o, pf, yy, loss)[0]
        fm = rn.resnest_prediction_risk(w_l - h * d_l, w_o - h * d_o, pf, yy, loss)[0]
        # central differences: error O(h^2 * third derivative) + O(eps * R / h) ~ 1e-9 here
        assert (fp - fm) / (2 * h) == pytest.approx(np.sum(g_l * d_l) + np.sum(g_o * d_o), rel=1e-6, abs=1e-7)


def test_densenest_conversion_shapes():
    gen = np.random.default_rng(4)
    maps = [rn.random_feature_map(gen, 2, 2), rn.random_feature_map(gen, 4, 1)]
    w0, blocks, w_out = rn.densenest_to_resnest(maps, gen.standard_normal((3, 5)), 2)
    assert w0.shape == (5, 2) and [b.W.shape for b in blocks] == [(5, 2), (5, 1)] and w_out.shape == (3, 5)
    with pytest.raises(ValueError, match=r"W_out must have shape \(\*, 5\)"):
        rn.densenest_to_resnest(maps, np.zeros((3, 4)), 2)


def test_lbfgs_minimize_stops_at_max_iter():
    """The chunked L-BFGS never runs past ``max_iter`` (a chunk is cut to the iterations left): a solver
    asked for 3 iterations on an ill-conditioned quadratic stops unconverged after at most 3."""
    import numpy as np

    from analysis.theory.rn import lbfgs_minimize

    scales = np.logspace(0, 4, 50)
    fun = lambda x: (float(0.5 * np.sum(scales * x * x)), scales * x)  # noqa: E731
    x, nit = lbfgs_minimize(fun, np.ones(50), 1e-10, 3)
    assert nit <= 3 and np.linalg.norm(fun(x)[1]) > 1e-10
    x, nit = lbfgs_minimize(fun, np.ones(50), 1e-8, 5000)
    assert np.linalg.norm(fun(x)[1]) <= 1e-8


def test_a_stalled_lbfgs_start_is_finished_by_the_newton_polish(monkeypatch):
    # A thorough-profile draw (cross-entropy, N = 100, M = 11, K_L = 3, N_o = 4, cond [x_{L-1}, v_L] ~ 900) on
    # which L-BFGS stalls at ||grad|| ~ 1e-3: trust-region Newton-CG takes it below gtol at a lower risk.
    from pathlib import Path

    from analysis.theory.rn import prediction
    data = np.load(Path(__file__).parent / "data" / "stalled_lbfgs.npz")
    pf = rn.PredictionFeatures(data["x_prev"], data["v_last"])
    y = data["y"]
    polished = rn.solve_resnest_prediction(pf, y, "cross_entropy", starts=1, max_iter=2000)[0]
    monkeypatch.setattr(prediction, "_newton_polish", lambda fun, x, gtol, budget: (x, 0))
    stalled = rn.solve_resnest_prediction(pf, y, "cross_entropy", starts=1, max_iter=2000)[0]
    assert not stalled.converged and stalled.grad_norm > 1e-4
    assert polished.converged and polished.grad_norm <= 1e-6 and polished.risk < stalled.risk
    assert stalled.iterations <= 2000 < polished.iterations <= 2000 + prediction._POLISH_ITER
