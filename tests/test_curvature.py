"""Curvature estimators against the dense float64 Hessian of a tiny BatchNorm network."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from analysis.plotting.curvature import plot_spectral_density
from analysis.plotting.landscape import save_figure
from analysis.probes.curvature import (
    HessianOperator,
    SpectralDensity,
    hessian_eigenvalues,
    hutchinson_trace,
    hutchpp_trace,
    lanczos,
    power_iteration_eigenvalues,
    spectral_density,
)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Tanh(), nn.Conv2d(3, 2, 3),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        bn = net[1]
        bn.running_mean.copy_(0.2 * torch.randn(3, generator=gen, dtype=torch.float64))
        bn.running_var.copy_(0.5 + torch.rand(3, generator=gen, dtype=torch.float64))
        bn.weight.copy_(0.5 + torch.rand(3, generator=gen, dtype=torch.float64))
        bn.bias.copy_(0.2 * torch.randn(3, generator=gen, dtype=torch.float64))
    return net.eval()


def _batches():
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(n, 3, 5, 5, generator=gen, dtype=torch.float64), torch.randint(0, 3, (n,), generator=gen))
            for n in (4, 3)]


def _dense_hessian(model: nn.Module, batches, *, train_bn: bool = False) -> torch.Tensor:
    """Independent ground truth: torch.autograd.functional.hessian of the mean loss over all samples,
    through the model's own nn.BatchNorm2d (eval, or train mode on copies of the buffers)."""
    names = [k for k, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    total = sum(x.shape[0] for x, _ in batches)
    if train_bn:
        model = model.train()

    def loss(th):
        params = {k: c.reshape(s) for k, c, s in zip(names, torch.split(th, sizes), shapes)}
        out = 0
        for x, y in batches:
            buffers = {k: b.clone() for k, b in model.named_buffers()}
            logits = functional_call(model, (params, buffers), (x,))
            out = out + nn.functional.cross_entropy(logits, y, reduction="sum") / total
        return out

    h = torch.autograd.functional.hessian(loss, theta)
    model.eval()
    return (h + h.T) / 2


@pytest.fixture(scope="module")
def setup():
    model, batches = _net(), _batches()
    op = HessianOperator(model, batches)
    dense = _dense_hessian(model, batches)
    return model, batches, op, dense, torch.linalg.eigvalsh(dense)


def test_hvp_batched_matches_dense_hessian(setup):
    _, _, op, dense, eig = setup
    assert op.dim == dense.shape[0] == 155
    v = torch.randn(5, op.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    # float64 second derivatives through ~10 ops: round-off ~1e-15 * ||H||; 1e-11 leaves room
    scale = float(eig.abs().max())
    assert float((op.matvec(v) - v @ dense).abs().max()) < 1e-11 * scale * np.sqrt(op.dim)
    assert float((op.matvec(v[0]) - dense @ v[0]).abs().max()) < 1e-11 * scale * np.sqrt(op.dim)
    assert float(eig.min()) < 0 < float(eig.max())  # an indefinite test case, as at init
    for mode in ("forward_over_reverse", "double_backward"):
        forced = HessianOperator(setup[0], setup[1], hvp=mode)
        assert float((forced.matvec(v[:2]) - v[:2] @ dense).abs().max()) < 1e-11 * scale * np.sqrt(op.dim)
        assert float((forced.matvec(v[2]) - dense @ v[2]).abs().max()) < 1e-11 * scale * np.sqrt(op.dim)


def test_bn_batch_mode_matches_dense_hessian_with_batch_statistics():
    model, batches = _net(), _batches()
    op = HessianOperator(model, batches, bn="batch")
    dense = _dense_hessian(model, batches, train_bn=True)
    v = torch.randn(3, op.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    assert float((op.matvec(v) - v @ dense).abs().max()) < 1e-10 * float(dense.abs().max())
    eval_dense = _dense_hessian(model, batches)
    assert float((dense - eval_dense).abs().max()) > 1e-3  # the two BN choices are different Hessians


def test_submodule_restriction_is_the_principal_block(setup):
    model, batches, _, dense, _ = setup
    op = HessianOperator(model, batches, submodule="3")
    sizes = [p.numel() for p in model.parameters()]
    start = sum(sizes[:2 + 2])  # conv0 weight+bias, bn weight+bias come first
    idx = slice(start, start + sizes[4] + sizes[5])
    assert op.param_names == ("3.weight", "3.bias") and op.dim == idx.stop - idx.start
    assert float((op.dense() - dense[idx, idx]).abs().max()) < 1e-11 * float(dense.abs().max())


def test_top_k_eigenvalues_match_dense(setup):
    _, _, op, dense, eig = setup
    res = hessian_eigenvalues(op, 3, num_steps=40, return_vectors=True)
    scale = float(eig.abs().max())
    truth = eig.flip(0)[:3].numpy()
    # 40 steps on a 155-dim operator converge the extreme eigenvalues to round-off here; the
    # Lanczos bound must hold too (an eigenvalue within |beta_m s_mi|, up to rounding)
    assert np.abs(res.values - truth).max() < 1e-9 * scale
    assert np.all(np.abs(res.values - truth) <= res.error_bounds + 1e-12 * scale)
    for value, vec in zip(res.values, res.vectors):
        assert float((dense @ vec - value * vec).norm()) < 1e-7 * scale
        assert abs(float(vec.norm()) - 1) < 1e-10
    assert res.num_matvecs == 40


def test_most_negative_eigenvalues_match_dense(setup):
    _, _, op, _, eig = setup
    res = hessian_eigenvalues(op, 2, which="smallest", num_steps=40)
    assert np.abs(res.values - eig[:2].numpy()).max() < 1e-9 * float(eig.abs().max())
    assert res.values[0] < 0


def test_lanczos_basis_is_orthonormal_and_full_run_is_exact(setup):
    model, batches, _, dense, _ = setup
    op = HessianOperator(model, batches, submodule="3")  # 56 parameters: a full run stays cheap
    eig = torch.linalg.eigvalsh(dense[90:146, 90:146])  # "3.weight", "3.bias" follow 90 entries
    res = lanczos(op, op.dim + 10, num_starts=1, seed=3)  # capped at dim
    q = res.basis[0]
    # full reorthogonalisation: Q^T Q = I to ~dim * eps
    assert float((q @ q.T - torch.eye(op.dim, dtype=q.dtype)).abs().max()) < 1e-12
    theta, _ = res.ritz(0)
    assert np.abs(np.sort(theta) - eig.numpy()).max() < 1e-10 * float(eig.abs().max())


class _DiagonalOperator:
    """A known operator: diag(values). Starting at e_0 makes Lanczos break down at once."""

    def __init__(self, values):
        self.values = torch.as_tensor(values, dtype=torch.float64)
        self.dim, self.dtype, self.device, self.num_matvecs = len(values), torch.float64, torch.device("cpu"), 0

    def matvec(self, v):
        self.num_matvecs += 1 if v.dim() == 1 else v.shape[0]
        return v * self.values


def test_lanczos_breakdown_restarts_without_nan():
    op = _DiagonalOperator([3.0, 1.0, -2.0, 0.5, 5.0])
    start = torch.zeros(1, 5, dtype=torch.float64)
    start[0, 0] = 1.0  # an eigenvector: beta_1 = 0, the invariant subspace is found immediately
    res = lanczos(op, 5, start_vectors=start)
    assert np.all(np.isfinite(res.alpha)) and res.beta[0, 0] == 0.0
    q = res.basis[0]
    assert float((q @ q.T - torch.eye(5, dtype=torch.float64)).abs().max()) < 1e-12
    np.testing.assert_allclose(np.sort(res.ritz(0)[0]), np.sort(op.values.numpy()), atol=1e-12)


def test_power_iteration_pyhessian_baseline(setup):
    _, _, op, _, eig = setup
    res = power_iteration_eigenvalues(op, 1, max_iter=200, tol=1e-10, seed=1)
    top = float(eig[eig.abs().argmax()])
    # |lambda_2 / lambda_1| ~ 0.53 here: the Rayleigh quotient error shrinks like 0.53^(2n), so once
    # successive quotients differ by < 1e-10 relative the error is below ~1e-10 as well
    assert abs(res.values[0] - top) < 1e-8 * abs(top)
    assert res.num_matvecs < 200
    assert res.method == "power_iteration"


def test_hutchinson_trace_within_its_standard_deviation(setup):
    _, _, op, dense, _ = setup
    m = 300
    res = hutchinson_trace(op, m, seed=0)
    exact = float(torch.trace(dense))
    # Rademacher variance: 2 (||H||_F^2 - sum H_ii^2) / m (Hutchinson 1990); 4 sigma with a fixed seed
    sigma = np.sqrt(2 * (float(dense.square().sum()) - float(torch.diagonal(dense).square().sum())) / m)
    assert abs(res.value - exact) < 4 * sigma
    assert res.num_matvecs == m and 0 < res.std_error < 3 * sigma


def test_hutchpp_exact_with_a_full_sketch_and_bounded_otherwise(setup):
    _, _, op, dense, _ = setup
    exact = float(torch.trace(dense))
    full = hutchpp_trace(op, 3 * op.dim, seed=0)
    # the sketch spans R^dim: the trace is computed exactly up to round-off
    assert abs(full.value - exact) < 1e-10 * float(dense.abs().sum())
    m = 60
    part = hutchpp_trace(op, m, seed=1)
    # the remainder is Hutchinson on P H P with m/3 probes, ||P H P||_F <= ||H||_F
    sigma = np.sqrt(2 / (m - 2 * (m // 3))) * float(dense.norm())
    assert abs(part.value - exact) < 4 * sigma


def test_slq_quadrature_is_exact_for_low_degree_moments(setup):
    _, _, op, dense, eig = setup
    gen = torch.Generator().manual_seed(5)
    starts = torch.randn(3, op.dim, generator=gen, dtype=torch.float64)
    steps = 8
    sd = spectral_density(op, num_steps=steps, start_vectors=starts)
    assert sd.nodes.shape == (3, steps) and abs(sd.weights.sum() - 1) < 1e-12
    # Gauss quadrature with m nodes integrates degree <= 2m-1 exactly: v^T H^p v / ||v||^2
    for i, v in enumerate(starts):
        v = v / v.norm()
        hp = v.clone()
        for p in range(6):
            want = float(v @ hp)
            got = float(np.sum(sd.weights[i] * 3 * sd.nodes[i] ** p))
            assert abs(got - want) < 1e-10 * float(eig.abs().max()) ** p, (i, p)
            hp = dense @ hp
    assert sd.nodes.min() >= float(eig.min()) - 1e-10 and sd.nodes.max() <= float(eig.max()) + 1e-10


def test_slq_density_estimates_the_spectrum(setup, tmp_path):
    _, _, op, dense, eig = setup
    sd = spectral_density(op, num_vectors=8, num_steps=12, seed=0)
    grid, dens = sd.curve(num=4000)
    assert abs(np.trapezoid(dens, grid) - 1) < 1e-3  # a probability density
    # the first moment estimates tr(H)/dim; each probe's v^T H v has variance <= 2||H||_F^2/dim^2
    sigma = np.sqrt(2 / 8) * float(dense.norm()) / op.dim
    assert abs(sd.moment(1) - float(torch.trace(dense)) / op.dim) < 4 * sigma
    assert isinstance(sd, SpectralDensity) and sd.num_matvecs == 8 * 12
    path = save_figure(plot_spectral_density(sd), tmp_path / "density")
    assert 2_000 < path.stat().st_size < 300_000


def test_operator_leaves_the_model_unchanged_and_validates(setup):
    model, batches, op, _, _ = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    op.matvec(torch.ones(op.dim, dtype=torch.float64))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match=r"vectors must have shape \(155,\) or \(k, 155\); got \(3,\)"):
        op.matvec(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="k must be <= 155"):
        hessian_eigenvalues(op, 200)
    with pytest.raises(ValueError, match="which must be one of 'largest', 'smallest'"):
        hessian_eigenvalues(op, 1, which="top")
    with pytest.raises(ValueError, match="submodule 'blocks.9' is not a submodule"):
        HessianOperator(model, batches, submodule="blocks.9")
    with pytest.raises(ValueError, match="submodule '2' has no parameters"):
        HessianOperator(model, batches, submodule="2")
    train = _net().train()
    with pytest.raises(ValueError, match="train mode and has BatchNorm layers.*bn='eval'.*bn='batch'"):
        HessianOperator(train, batches)
    with pytest.raises(ValueError, match="hvp must be one of 'auto', 'forward_over_reverse', 'double_backward'"):
        HessianOperator(model, batches, hvp="exact")
    with pytest.raises(TypeError, match="op must be a HessianOperator"):
        hutchinson_trace(object())


def test_error_bounds_have_a_rounding_floor(setup):
    _, _, op, _, eig = setup
    scale = float(eig.abs().max())
    # H = diag(3) of dimension 1: Lanczos ends with beta_1 = 0 exactly, yet the Ritz value is only
    # as exact as the arithmetic; the floor is m * eps * max |theta| = 1 * eps * 3
    res = hessian_eigenvalues(_DiagonalOperator([3.0]), 1)
    assert res.values[0] == 3.0 and res.error_bounds[0] == 3.0 * np.finfo(np.float64).eps
    for which, truth in (("largest", eig.flip(0)[:3].numpy()), ("smallest", eig[:3].numpy())):
        res = hessian_eigenvalues(op, 3, which=which, num_steps=40)
        # converged: |beta_m s_mi| is ~1e-40 here, so the bound is the floor 40 * eps * max |theta|;
        # it must still cover the true error (~1e-15, rounding) with no slack added, and stay small
        assert np.all(res.error_bounds > 0) and np.all(res.error_bounds < 1e-12 * scale)
        assert np.all(np.abs(res.values - truth) <= res.error_bounds)


@pytest.mark.parametrize("hvp", ["double_backward", "forward_over_reverse"])
def test_operator_is_a_snapshot_of_all_parameters(hvp):
    model, batches = _net(), _batches()
    full = HessianOperator(model, batches, hvp=hvp)
    block = HessianOperator(model, batches, submodule="3", hvp=hvp)
    v_full = torch.randn(full.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    v_block = torch.randn(block.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    before = full.matvec(v_full), block.matvec(v_block), full.loss(), block.loss()
    with torch.no_grad():  # edit every parameter in place, the frozen ones of ``block`` included
        for p in model.parameters():
            p.mul_(1.5).add_(0.1)
        model[1].running_var.mul_(2.0)
    after = full.matvec(v_full), block.matvec(v_block), full.loss(), block.loss()
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])
    assert before[2:] == after[2:]
    # and a fresh operator does see the edit (the comparison above is not vacuous)
    assert not torch.equal(HessianOperator(model, batches, submodule="3", hvp=hvp).matvec(v_block), before[1])


def test_operator_refuses_a_reducing_loss():
    model, batches = _net(), _batches()
    with pytest.raises(ValueError, match=r"loss_fn must return one loss per sample, shape \(4,\) on data\[0\]; "
                                         r"got a scalar .*reduction='none'.*nn\.CrossEntropyLoss\(reduction='none'\)"):
        HessianOperator(model, batches, loss_fn=nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match=r"shape \(4,\) on data\[0\]; got shape \(4, 3\)"):
        HessianOperator(model, batches, loss_fn=lambda logits, y: logits.square())
    # the per-sample form is the default's Hessian
    per_sample = HessianOperator(model, batches, loss_fn=nn.CrossEntropyLoss(reduction="none"))
    v = torch.ones(per_sample.dim, dtype=torch.float64)
    assert torch.allclose(per_sample.matvec(v), HessianOperator(model, batches).matvec(v), rtol=0, atol=1e-14)


def test_operator_refuses_non_finite_data():
    model, batches = _net(), _batches()
    x, y = batches[1]
    x = x.clone()
    x[0, 0, :2, 0] = torch.tensor([float("nan"), float("inf")], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"data\[1\] inputs must be finite; got 2 NaN or infinite entries of 225"):
        HessianOperator(model, [batches[0], (x, y)])
    soft = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    soft[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"data\[0\] targets must be finite; got 1 NaN or infinite entries of 12"):
        HessianOperator(model, (batches[0][0], soft))


def _tiny_double_net():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    return net, (torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 2, (16,)))


def test_hessian_operator_follows_torch_func_conventions():
    # Float64 throughout: H @ v, scipy's eigsh on the LinearOperator and the dense H agree to
    # round-off (1e-10 relative is ~1e6 eps for a 23-parameter net: a wrong transpose or sign is O(1)).
    import copy

    from scipy.sparse.linalg import eigsh

    net, data = _tiny_double_net()
    op = HessianOperator(net, data)
    H = op.dense()
    v = torch.randn(op.dim, dtype=torch.float64)
    V = torch.randn(op.dim, 3, dtype=torch.float64)
    scale = float(H.abs().max())
    assert op.shape == (op.dim, op.dim)
    assert float((op @ v - H @ v).abs().max()) <= 1e-10 * scale * float(v.abs().sum())
    assert float((op @ V - H @ V).abs().max()) <= 1e-10 * scale * float(V.abs().sum())
    top, vec = eigsh(op.as_linear_operator(), k=1, which="LA")
    assert top[0] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-8)
    parts = op.unflatten(torch.as_tensor(vec[:, 0]))
    assert {k: tuple(t.shape) for k, t in parts.items()} == {k: tuple(p.shape) for k, p in net.named_parameters()}
    # Evaluated at a given point: the same as the Hessian of a model holding those weights.
    point = {k: 2 * p.detach() for k, p in net.named_parameters() if k.startswith("2.")}
    moved = copy.deepcopy(net)
    with torch.no_grad():
        for k, p in moved.named_parameters():
            if k in point:
                p.copy_(point[k])
    at_point = HessianOperator(net, data, params=point).dense()
    assert torch.allclose(at_point, HessianOperator(moved, data).dense(), rtol=0, atol=1e-12 * scale)
    assert not torch.allclose(at_point, H)  # and the model itself kept its weights
    with pytest.raises(ValueError, match="not parameters of the model"):
        HessianOperator(net, data, params={"fc.weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="params shapes differ"):
        HessianOperator(net, data, params={"2.weight": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match=r"expected a tensor of shape \(23,\)"):
        op.unflatten(torch.zeros(5))
