"""Our evaluator against the loss-landscapes package (3.0.6), and facts about that version we avoid.

loss-landscapes' ``random_plane`` walks the grid in place: it starts at the corner
``theta - (s/2) d1 - (s/2) d2`` (d1, d2 its step vectors), and on row i evaluates, for even i,
the points ``(i - s/2, j + 1 - s/2)`` in order (moving by +d2 first), for odd i the points
``(i - s/2, j - s/2)`` walked backwards (moving by -d2 first, inserting at the front): the zig-zag
shifts odd rows one step against even rows. A recording metric keeps every point's parameters,
from which the tests recover d1, d2 and theta, inject d1, d2 into ``loss_landscape`` and compare
at the matching coordinates.
"""
from __future__ import annotations

import importlib.metadata

import numpy as np
import pytest
import torch
from torch import nn

from analysis.probes.landscape import Directions, loss_landscape
from analysis.models import build_model

loss_landscapes = pytest.importorskip("loss_landscapes")
if importlib.metadata.version("loss-landscapes") != "3.0.6":
    pytest.skip("these facts are about loss-landscapes 3.0.6", allow_module_level=True)

from loss_landscapes.metrics import Metric  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
STEPS = 4


class _Recorder(Metric):
    """Loss at each point plus a copy of that point's parameters, in call order."""

    def __init__(self, x, y):
        super().__init__()
        self.x, self.y, self.points = x, y, []

    def __call__(self, wrapper):
        model = wrapper.modules[0]
        self.points.append({k: p.detach().clone() for k, p in model.named_parameters()})
        with torch.no_grad():
            return float(nn.functional.cross_entropy(model(self.x), self.y))


def _model_and_data():
    torch.manual_seed(0)
    # every parameter tensor (weights and biases) nonzero, so its filter normalisation is defined
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 5)).double().eval()
    gen = torch.Generator().manual_seed(1)
    return model, (torch.randn(8, 3, 6, 6, generator=gen, dtype=torch.float64),
                   torch.randint(0, 5, (8,), generator=gen))


def _run_random_plane(model, data, distance=1.0):
    rec = _Recorder(*data)
    torch.manual_seed(3)
    grid = loss_landscapes.random_plane(model, rec, distance=distance, steps=STEPS, normalization="filter",
                                        deepcopy_model=True)
    s = STEPS
    p = rec.points
    d2 = {k: p[1][k] - p[0][k] for k in p[0]}
    d1 = {k: p[s][k] - p[s - 1][k] + d2[k] for k in p[0]}  # row 0 ends at (-s/2, s/2), row 1 starts at (1-s/2, s/2-1)
    theta = {k: p[0][k] + (s / 2) * d1[k] + (s / 2 - 1) * d2[k] for k in p[0]}
    return np.asarray(grid), d1, d2, theta


def test_our_grid_agrees_with_loss_landscapes_at_matching_coordinates():
    model, data = _model_and_data()
    grid, d1, d2, theta = _run_random_plane(model, data)
    assert grid.shape == (STEPS, STEPS)
    for k, w in model.named_parameters():
        # our reading of its start point: float64, a few in-place steps of rounding
        torch.testing.assert_close(theta[k], w.detach(), rtol=1e-12, atol=1e-14)
    s = STEPS
    alphas = np.arange(s) - s / 2
    betas = np.arange(s + 1) - s / 2
    ours = loss_landscape(model, Directions.given(d1, d2), data, alphas, betas)
    for i in range(s):
        shift = 1 if i % 2 == 0 else 0  # the zig-zag: even rows start one step further along d2
        # float64; its parameters drift by a few ulps over the in-place walk: 1e-10 is generous
        np.testing.assert_allclose(grid[i], ours.loss[i, shift:shift + s], rtol=1e-10, err_msg=f"row {i}")
    # and not at the naive position: odd and even rows really are shifted against each other
    assert np.abs(grid[0] - ours.loss[0, :s]).max() > 1e-6


def test_loss_landscapes_step_length_is_the_weight_norm_over_distance_times_steps():
    model, data = _model_and_data()
    theta_norm = torch.sqrt(sum(p.detach().square().sum() for p in model.parameters()))
    for distance in (1.0, 2.0):
        _, d1, d2, _ = _run_random_plane(model, data, distance)
        for d in (d1, d2):
            norm = torch.sqrt(sum(v.square().sum() for v in d.values()))
            # a documented defect: a larger "distance" gives a SMALLER grid (||theta|| / distance / steps)
            assert float(norm) == pytest.approx(float(theta_norm) / distance / STEPS, rel=1e-9)


def test_loss_landscapes_defects_we_avoid():
    model, data = _model_and_data()
    _, d1, _, _ = _run_random_plane(model, data)
    # uniform [0, 1) draws, not Gaussian: after the (positive) filter scaling every entry of d1 is >= 0
    assert all(bool((v >= 0).all()) for v in d1.values())
    assert sum(v.numel() for v in d1.values()) > 100  # a Gaussian would make ~half of these negative
    # 1-D tensors are normalised entry by entry, so a bias direction is |bias| times one constant
    for k, w in model.named_parameters():
        if w.dim() == 1:
            ratio = d1[k] / w.detach().abs()
            torch.testing.assert_close(ratio, ratio[0].expand_as(ratio), rtol=1e-9, atol=0)
    # a fresh ResNet-20 (every BatchNorm bias exactly zero) makes filter normalisation divide by zero
    fresh = build_model("resnet20", width=2).eval()
    metric = loss_landscapes.metrics.Loss(nn.functional.cross_entropy, torch.randn(2, 3, 8, 8),
                                          torch.tensor([0, 1]))
    with pytest.raises(ZeroDivisionError):
        loss_landscapes.random_plane(fresh, metric, steps=2, normalization="filter", deepcopy_model=True)
    # without deepcopy_model it leaves the model moved away from where it started
    before = [p.detach().clone() for p in model.parameters()]
    loss_landscapes.random_plane(model, loss_landscapes.metrics.Loss(nn.functional.cross_entropy, *data), steps=2)
    assert any(not torch.equal(b, p.detach()) for b, p in zip(before, model.parameters()))
