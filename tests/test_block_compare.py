"""Generic probes that compare a block with its baseline (analysis.probes.block_compare)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.models import build_model, count_parameters
from analysis.probes.block_compare import (activation_peaks, block_gradient_norms, forward_flops, parameter_count,
                                           train_throughput)


def test_parameters_and_flops_count_what_they_should():
    model = build_model("resnet20", width=8)
    assert parameter_count(model) == count_parameters("resnet20", width=8)
    conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False))
    assert forward_flops(conv) == 2 * 3 * 4 * 9 * 32 * 32  # one multiply-add = 2 FLOPs per output tap
    assert conv.training  # mode restored


def test_activation_peaks_find_the_module_that_would_overflow_float16():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.ReLU())
    with torch.no_grad():
        model[1].weight.fill_(1e4)
    out = activation_peaks(model, torch.ones(4, 3, 2, 2))
    assert out["where"] == "1" and out["peak"] == pytest.approx(12e4 + float(model[1].bias.detach().abs().max()), rel=1e-3)
    assert out["headroom"] < 1.0  # 65504 / 1.2e5


def test_block_gradient_norms_leave_the_model_as_it_was():
    torch.manual_seed(0)
    model = build_model("resnet20", width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    norms = block_gradient_norms(model, x, y)
    assert len(norms) == 9 and all(0 < n < float("inf") for n in norms)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics restored
    assert all(p.grad is None for p in model.parameters())
    with pytest.raises(TypeError, match="has no `blocks` ModuleList"):
        block_gradient_norms(nn.Sequential(nn.Flatten(), nn.Linear(3072, 10)), x, y)


def test_throughput_is_measured_without_moving_the_weights():
    model = build_model("resnet20", width=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rate = train_throughput(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)), steps=2, warmup=1)
    assert rate > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_audits_top_eigenvalue_is_certified_and_never_an_unconverged_ritz_value(monkeypatch):
    import numpy as np

    from analysis.probes.curvature import HessianOperator
    from experiments.audit import block_probes

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    data = (torch.randn(32, 6), torch.randint(0, 3, (32,)))
    op = HessianOperator(model, data)
    exact = float(np.linalg.eigvalsh(op.dense().double().numpy())[-1])
    top, residual = block_probes.top_eigenvalue(op, seed=0)
    # a relative residual r puts an eigenvalue within r |lambda|; the bound and 1e-6 of float32 products
    assert residual <= block_probes.TOP_RESIDUAL and top == pytest.approx(exact, rel=block_probes.TOP_RESIDUAL + 1e-6)

    # LOBPCG returning a wrong pair (as it once did: 0.0047 against 43.5) falls back to Lanczos
    def wrong(linear, start, **kw):
        return np.array([1e-3] * start.shape[1]), start
    monkeypatch.setattr(block_probes, "lobpcg", wrong)
    top, residual = block_probes.top_eigenvalue(op, seed=0)
    assert residual <= block_probes.TOP_RESIDUAL and top == pytest.approx(exact, rel=block_probes.TOP_RESIDUAL + 1e-6)
    # and when Lanczos cannot converge either (2 steps on a 53-dim H), no value comes back
    monkeypatch.setitem(block_probes.PROBE_SETTINGS, "lanczos_steps", 2)
    with pytest.raises(RuntimeError, match="top Hessian eigenvalue did not converge"):
        block_probes.top_eigenvalue(op, seed=0)
