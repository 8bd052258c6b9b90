"""Tests of analysis/theory/oai.py, the shared activations (analysis/theory/activations.py), the
Table 2 nets (analysis/models/oai_table2.py) and the oai-table2 reproduction: errors, shapes, the
trained nets' recurrences, determinism and the command line end to end."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.models.oai_table2 import TABLE2_METHODS, Table2Net
from analysis.theory import activations, oai
from analysis.validation import AssumptionError
from experiments import cli
from experiments.reproduce import get_reproduction
from experiments.reproduce import oai_table2 as t2


def _spd(n=4, seed=0):
    g = np.random.default_rng(seed)
    b = g.standard_normal((n, n))
    w = b @ b.T / n + 0.5 * np.eye(n)
    return w / np.linalg.norm(w, 2)


# --- errors at the public boundary -----------------------------------------------------------

def test_unknown_activation_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"activation must be one of 'sigmoid', 'tanh', 'relu', 'leaky_relu', "
                                         r"'elu', 'swish', 'softplus', 'softsign'; got 'gelu'"):
        oai.psi("gelu", 1.0)
    with pytest.raises(ValueError, match="activation must be one of"):
        oai.gradient_descent_z(np.zeros(2), np.eye(2), "Sigmoid", 1)
    # The shared switch accepts every name of activations.NAMES; Lemma 1 needs Table 1's Psi.
    with pytest.raises(ValueError, match=r"activation must be one of 'sigmoid', .*'softsign'; got 'identity'"):
        oai.feedforward_x(np.zeros(2), np.eye(2), "identity", 1)


def test_shared_activation_errors_name_the_choices_and_parameters():
    with pytest.raises(ValueError, match=r"activation must be one of 'identity', 'linear', 'relu', .*; got 'gelu'"):
        activations.activation("gelu")
    with pytest.raises(ValueError, match=r"alpha must be >= 0; got -0.1"):
        activations.activation("leaky_relu", alpha=-0.1)
    with pytest.raises(ValueError, match=r"a must be > 0; got 0"):
        activations.activation("elu", a=0.0)
    assert oai.activation is activations.activation  # one switch, re-exported


def test_activation_values_at_the_kinks_and_the_linear_alias():
    assert activations.activation("linear")([2.5]) == activations.activation("identity")([2.5]) == 2.5
    np.testing.assert_array_equal(activations.activation("leaky_relu", alpha=0.5)([-2.0, 3.0]), [-1.0, 3.0])


@pytest.mark.parametrize("W, pattern", [
    (np.array([[1.0, 0.5], [0.0, 1.0]]), r"W must be symmetric \(OAI Lemma 1 needs W symmetric positive definite"),
    (np.diag([1.0, -0.5]), r"W must be positive definite \(OAI Lemma 1.*smallest eigenvalue is -0.5"),
    (np.diag([1.0, 0.0]), r"W must be positive definite"),
])
def test_lemma1_square_root_rejects_non_spd(W, pattern):
    with pytest.raises(AssumptionError, match=pattern):
        oai.lemma1_square_root(W)


def test_lemma1_square_root_is_the_symmetric_root():
    W = _spd()
    U = oai.lemma1_square_root(W)
    np.testing.assert_allclose(U, U.T, atol=0)
    np.testing.assert_allclose(U @ U, W, atol=1e-14)
    assert np.all(np.linalg.eigvalsh(U) > 0)


def test_wrong_shapes_are_named():
    with pytest.raises(ValueError, match=r"x0 must have length 3 to match the matrix; got length 2"):
        oai.feedforward_x(np.zeros(2), np.eye(3), "relu", 2)
    with pytest.raises(ValueError, match=r"W must be a square matrix; got shape \(2, 3\)"):
        oai.heavy_ball_x(np.zeros(2), np.zeros((2, 3)), "relu", 2, 0.3)
    with pytest.raises(ValueError, match=r"z must have shape \(2,\) or \(batch, 2\) to match U; got \(3,\)"):
        oai.objective(np.zeros(3), np.eye(2), "tanh")
    with pytest.raises(ValueError, match=r"alpha must have shape \(3, 3\); got \(2, 2\)"):
        oai.agd_structure(np.zeros(2), lambda k, j, v: v, 3, np.zeros((2, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"steps must be >= 0; got -1"):
        oai.nesterov_theta(-1)
    with pytest.raises(TypeError, match=r"steps must be an integer; got float 2.0"):
        oai.gradient_descent_z(np.zeros(2), np.eye(2), "relu", 2.0)
    with pytest.raises(ValueError, match=r"L must be >= 2; got 1"):
        oai.tuned_parameters("hb", 2.0, 1.0)
    with pytest.raises(ValueError, match=r"method must be one of 'gd', 'hb', 'agd'; got 'adam'"):
        oai.tuned_parameters("adam", 1.0, 2.0)


def test_table2net_errors():
    with pytest.raises(ValueError, match=r"method must be one of 'admm', 'gd', 'hb', 'agd', 'agd2'; got 'sgd'"):
        Table2Net("sgd", 3)
    net = Table2Net("gd", 2, 5, copies=2)
    with pytest.raises(ValueError, match=r"x must have shape \(copies=2, batch, width=5\); got \(1, 4, 5\)"):
        net(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="one generator per copy"):
        Table2Net("gd", 2, 5, copies=2, generators=[torch.Generator()])


def test_config_errors():
    with pytest.raises(ValueError, match=r"methods must include 'gd'"):
        t2.OAITable2Config(methods=("hb", "agd"))
    with pytest.raises(ValueError, match=r"methods must be one of .*; got 'sgd'"):
        t2.OAITable2Config(methods=("gd", "sgd"))
    with pytest.raises(ValueError, match=r"epochs must be >= 1; got 0"):
        t2.OAITable2Config(epochs=0)


# --- values ------------------------------------------------------------------------------------

def test_nesterov_coefficients_known_values():
    th = oai.nesterov_theta(3)
    # theta_1 solves theta^2 + theta - 1 = 0: (sqrt 5 - 1) / 2.
    np.testing.assert_allclose(th[:2], [1.0, (np.sqrt(5) - 1) / 2], rtol=1e-15)
    np.testing.assert_allclose((1 - th[1:]) / th[1:] ** 2, 1 / th[:-1] ** 2, rtol=1e-13)
    H = oai.nesterov_h_weights(3)
    beta = oai.nesterov_momentum(3)
    np.testing.assert_allclose(H[1, 0], 1.0)
    np.testing.assert_allclose(H[3, 2], 1 + beta[3])
    np.testing.assert_allclose(H[3, 1], beta[3] * (H[2, 1] - 1))


def test_psi_known_values():
    # Psi(0): log 2 (sigmoid), log 2 (tanh: log(2 cosh 0)), pi^2/12 (swish, softplus: -Li2(-1)).
    np.testing.assert_allclose(oai.psi("sigmoid", 0.0), np.log(2), rtol=1e-15)
    np.testing.assert_allclose(oai.psi("tanh", 0.0), np.log(2), rtol=1e-15)
    np.testing.assert_allclose(oai.psi("swish", [0.0, -1e-9, 1e-9]), np.pi ** 2 / 12, rtol=1e-12)
    np.testing.assert_allclose(oai.psi("softplus", 0.0), np.pi ** 2 / 12, rtol=1e-12)
    # Far tails stay finite (no overflow of e^{-t}): swish Psi -> pi^2/6 at -inf; Psi - t^2/2 -> 0 at +inf.
    np.testing.assert_allclose(oai.psi("swish", -800.0), np.pi ** 2 / 6, rtol=1e-12)
    np.testing.assert_allclose(oai.psi("swish", 800.0), 800.0 ** 2 / 2, rtol=1e-15)
    assert oai.psi("elu", 0.0, as_printed=True) == 1.0 and oai.psi("elu", 0.0) == 0.0


def test_iterations_to_accuracy_reports_divergence():
    A = np.eye(2)[None] * np.array([1.0, 10.0])[None, :, None]
    counts = oai.iterations_to_accuracy(A, np.ones((1, 2)), np.zeros((1, 2)), "gd", 0.5, 0.0, 1e-6, 50)
    assert counts[0] == 51  # step 0.5 > 2 / L = 0.2 diverges


@pytest.mark.parametrize("method", TABLE2_METHODS)
def test_table2net_is_the_papers_recurrence(method):
    """With one shared W, no bias and float64, each net is the numpy recurrence of its equation."""
    n, depth = 5, 6
    W = np.random.default_rng(1).standard_normal((n, n)) / np.sqrt(n)
    x0 = np.random.default_rng(2).standard_normal(n)
    net = Table2Net(method, depth, n, bias=False, dtype=torch.float64)
    with torch.no_grad():
        for w in net.weight:
            w.copy_(torch.tensor(W)[None])
        out = net(torch.tensor(x0)[None, None])[0, 0].numpy()
    ref = {
        "gd": lambda: oai.feedforward_x(x0, W, "sigmoid", depth)[-1],
        "hb": lambda: oai.heavy_ball_x(x0, W, "sigmoid", depth, 0.3)[-1],
        "agd": lambda: oai.nesterov_x(x0, W, "sigmoid", depth)[-1],
        "agd2": lambda: oai.nesterov_form4_x(x0, W, "sigmoid", depth)[-1],
        "admm": lambda: oai.admm_x(x0, W, "sigmoid", depth)[1][-1],
    }[method]()
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13)


def test_table2net_same_generators_same_init_across_methods():
    nets = [Table2Net(m, 3, 4, copies=2, generators=[torch.Generator().manual_seed(s) for s in (0, 1)])
            for m in ("gd", "admm")]
    for a, b in zip(nets[0].parameters(), nets[1].parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(nets[0].weight[0][0], nets[0].weight[0][1])  # copies differ


# --- reproduction ------------------------------------------------------------------------------

TINY = ["--depths", "2", "3", "--epochs", "3", "--seeds", "0", "1", "--samples", "64", "--heldout", "32",
        "--width", "8", "--batch-size", "16", "--checkpoints", "3"]


def test_cli_reproduce_oai_table2_end_to_end(tmp_path, capsys):
    code = cli.main(["reproduce", "oai-table2", "--out", str(tmp_path), "--no-progress", *TINY])
    assert code == 0
    out = capsys.readouterr().out
    assert "OAI-table2: inconclusive - reduced run" in out
    for name in ("oai_table2.csv", "oai_table2.md", "oai_table2_curves.csv", "oai_table2_curves.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "oai_table2_curves.png").stat().st_size < 100_000
    table = pd.read_csv(tmp_path / "oai_table2.csv")
    assert len(table) == 2 * 5 and set(table.method) == set(TABLE2_METHODS)
    curves = pd.read_csv(tmp_path / "oai_table2_curves.csv")
    assert sorted(curves.epoch.unique()) == t2.checkpoint_epochs(3, 3)
    assert set(curves.split) == {"train", "heldout"} and curves.mse.gt(0).all()
    assert "paper MSE" in (tmp_path / "oai_table2.md").read_text()


def test_cli_bad_flag_value_is_a_clear_error(tmp_path, capsys):
    code = cli.main(["reproduce", "oai-table2", "--out", str(tmp_path), "--no-progress", "--epochs", "0"])
    assert code == 2
    assert "epochs must be >= 1; got 0" in capsys.readouterr().err


def test_reproduction_is_deterministic(tmp_path):
    rep = get_reproduction("oai-table2")
    config = t2.OAITable2Config(depths=(2,), epochs=2, seeds=(0, 1), samples=48, heldout=16, width=6,
                                batch_size=16, checkpoints=2)
    a = rep.run(config, tmp_path / "a", progress=False)
    b = rep.run(config, tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert a.verdicts[0].claim_id == "OAI-table2" and a.verdicts[0].status == "inconclusive"


def test_config_from_args_quick_default_and_full_flag():
    import argparse

    p = argparse.ArgumentParser()
    t2.add_arguments(p)
    assert t2.config_from_args(p.parse_args([])) == t2.quick_config()
    full = t2.config_from_args(p.parse_args(["--full"]))
    assert full.paper_scale and full.epochs == 1000 and full.depths == (10, 20, 30, 40)
    assert not t2.quick_config().paper_scale
    over = t2.config_from_args(p.parse_args(["--full", "--seeds", "3", "4", "--lr", "0.01"]))
    assert over.seeds == (3, 4) and over.lr == 0.01 and over.epochs == 1000


def test_verdict_rule_on_synthetic_curves():
    """holds / fails / inconclusive from constructed numbers (paper scale config, 3 seeds)."""
    config = t2.full_config()

    def curves(offsets):
        rows = []
        for depth in config.depths:
            for m in config.methods:
                for s in config.seeds:
                    for split in ("train", "heldout"):
                        rows.append(dict(depth=depth, method=m, seed=s, epoch=config.epochs, split=split,
                                         mse=1.0 + 0.01 * s + offsets[m] + 1e-5 * s * (m == "hb")))
        return pd.DataFrame(rows)

    def verdict(offsets):
        c = curves(offsets)
        comps = t2._comparisons(c, config, "train", config.epochs)
        held = t2._comparisons(c, config, "heldout", config.epochs)
        return t2._verdict(comps, held, config, "n/a").status

    paper = dict(admm=0.07, gd=0.006, hb=0.004, agd=0.002, agd2=0.001)
    assert verdict(paper) == "holds"
    assert verdict({**paper, "hb": 0.008}) == "fails"
    assert verdict({**paper, "hb": 0.006}) == "inconclusive"  # HB - GD = 1e-5 s: within the noise
