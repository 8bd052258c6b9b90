"""Loss landscapes: directions, batched grids against a per-point reference, BN choices, I/O, plots."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from analysis.models import build_model
from analysis.plotting.landscape import plot_contour, plot_curve, plot_side_by_side, save_figure
from analysis.probes.landscape import (
    Directions,
    LandscapeResult,
    auto_chunk_size,
    directions_to_models,
    filter_norms,
    grid_axis,
    loss_landscape,
    loss_landscape_reference,
    merge_landscapes,
    normalize_direction,
    random_directions,
    trajectory_pca_directions,
)
from analysis.probes.landscape.engines.sequential import cpu_channels_last_safe


pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Float32 engines against each other: the tolerance is _ENGINE_MARGIN times the noise floor the
# test measures (conftest.measure_noise_floor: the reference engine on images moved by 1-2 ulps and
# with another thread count). On 5 emulated CPUs (AVX512, AVX2 and no-SIMD ATen kernels, oneDNN at
# AVX2, 1 and 2 threads) the engines differed by at most 1.2x that floor; 10x covers a worse
# rounding draw. float32 eps is a floor under the floor for probes that round to the same bits.
_ENGINE_MARGIN = 10.0
_F32_EPS = float(torch.finfo(torch.float32).eps)
# What the engine tests exist to catch (a point evaluated at the wrong grid position, a direction
# applied to the wrong layer, float16 left where float32 was due) moves the loss by 1e-3 relative or
# more: neighbouring points of these grids differ by 1e-2 or more. A tolerance must stay below.
_ENGINE_FAULT = 1e-4


def _max_rel_gap(a, b) -> float:
    return float(np.abs(np.asarray(a) / np.asarray(b) - 1).max())


def _perturb_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, as a trained model has."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
    return model


def _tiny_bn_net(seed: int = 0, dtype=torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3),
                        nn.BatchNorm2d(3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5))
    return _perturb_bn(net.to(dtype), seed).eval()


def _tiny_plain_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 5)).double().eval()


def _data(n: int, classes: int, size: int = 6, seed: int = 1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=gen, dtype=dtype), torch.randint(0, classes, (n,), generator=gen)


@pytest.fixture(scope="module")
def zoo():
    torch.manual_seed(0)
    model = _perturb_bn(build_model("resnet20", num_classes=10, width=2)).eval()
    return model, _data(8, 10, size=16, dtype=torch.float32)


def _direct_loss(model, directions, coords, data) -> float:
    """Cross entropy at theta* + sum_i coords[i] d_i, computed on a fresh copy by hand."""
    clone = copy.deepcopy(model).eval()
    with torch.no_grad():
        for name, p in clone.named_parameters():
            p.add_(sum(c * d[name] for c, d in zip(coords, directions.vectors)))
        x, y = data
        return float(nn.functional.cross_entropy(clone(x), y))


# ----------------------------------------------------------------------------------------------
# grids against the per-point reference
# ----------------------------------------------------------------------------------------------

def test_grid_matches_per_point_evaluation_eval_bn_zoo_model(zoo, noise_floor):
    model, data = zoo
    dirs = random_directions(model, 2, seed=3)
    alphas, betas = grid_axis(-1, 1, 3), grid_axis(-0.5, 0.5, 4)
    # chunk of 5 on a 3x4 grid: chunks straddle rows, so a row/column mix-up would show
    fast = loss_landscape(model, dirs, data, alphas, betas, bn="eval", chunk_size=5)
    ref = loss_landscape_reference(model, dirs, data, alphas, betas, bn="eval")
    assert fast.loss.shape == (3, 4) and fast.complete
    rel = np.abs(fast.loss / ref.loss - 1).max()
    # float32, 20 layers: batched and plain convs round differently. Tolerance from this machine's
    # noise floor: the reference again on images moved by 1-2 ulps and with another thread count.
    x, y = data
    floor = noise_floor(lambda r: loss_landscape_reference(model, dirs, (x * (1 + r), y), alphas, betas,
                                                           bn="eval").loss,
                        _max_rel_gap, at_least=_F32_EPS)
    tol = _ENGINE_MARGIN * floor
    assert tol < _ENGINE_FAULT, f"noise floor {floor:.3g} too high to tell a misplaced grid point"
    assert rel <= tol, f"engines differ by {rel:.3g}; noise floor {floor:.3g}, tolerance {tol:.3g}"
    np.testing.assert_array_equal(fast.accuracy, ref.accuracy)
    assert np.ptp(fast.loss) > 1e-3  # the directions really move the loss


def test_loss_ij_is_at_alpha_i_beta_j(zoo, noise_floor):
    model, data = zoo
    dirs = random_directions(model, 2, seed=4)
    alphas, betas = np.array([-0.6, 0.1, 0.7]), np.array([-0.3, 0.4])
    fast = loss_landscape(model, dirs, data, alphas, betas, bn="eval", chunk_size=4)
    points = [(0, 1), (2, 0), (1, 1)]
    x, y = data

    def direct(r):
        return np.array([_direct_loss(model, dirs, (alphas[i], betas[j]), (x * (1 + r), y)) for i, j in points])

    # Noise floor of the by-hand loss (see _ENGINE_MARGIN); float32 through 20 layers.
    floor = noise_floor(direct, _max_rel_gap, at_least=_F32_EPS)
    tol = _ENGINE_MARGIN * floor
    assert tol < _ENGINE_FAULT, f"noise floor {floor:.3g} too high to tell a misplaced grid point"
    want = direct(0.0)
    for k, (i, j) in enumerate(points):
        gap = abs(fast.loss[i, j] / want[k] - 1)
        assert gap <= tol, (i, j, f"gap {gap:.3g}, noise floor {floor:.3g}")


def test_grid_matches_per_point_evaluation_recalibrated_bn():
    model = _tiny_bn_net()
    data = _data(5, 5)
    recal = [_data(4, 5, seed=7), _data(3, 5, seed=8)]  # unequal batches: PyTorch averages per batch
    dirs = random_directions(model, 2, seed=0)
    alphas, betas = grid_axis(-1, 1, 2), grid_axis(-1, 1, 3)
    fast = loss_landscape(model, dirs, data, alphas, betas, bn="recalibrate", recalibration_data=recal, chunk_size=4)
    ref = loss_landscape_reference(model, dirs, data, alphas, betas, bn="recalibrate", recalibration_data=recal)
    eval_bn = loss_landscape(model, dirs, data, alphas, betas, bn="eval")
    # float64 through 2 BN layers: agreement to ~1e-15; 1e-10 leaves room and is far below the
    # 1e-5 the issue asks for
    assert np.abs(fast.loss / ref.loss - 1).max() < 1e-10
    np.testing.assert_array_equal(fast.accuracy, ref.accuracy)
    assert np.abs(eval_bn.loss / ref.loss - 1).max() > 1e-3  # recalibration really changes the values
    assert fast.bn == "recalibrate"


def test_one_dimensional_grid_centre_is_the_model_loss():
    model = _tiny_bn_net()
    data = _data(6, 5)
    dirs = random_directions(model, 1, seed=2)
    res = loss_landscape(model, dirs, data, [-0.5, 0.0, 0.5])
    assert res.ndim == 1 and res.loss.shape == (3,)
    with torch.no_grad():
        own = float(nn.functional.cross_entropy(model(data[0]), data[1]))
    assert abs(res.loss[1] - own) < 1e-12 * max(1.0, own)
    ref = loss_landscape_reference(model, dirs, data, [-0.5, 0.0, 0.5])
    assert np.abs(res.loss / ref.loss - 1).max() < 1e-10


def test_model_comes_back_unchanged():
    model = _tiny_bn_net()
    model.train()
    model[1].eval()  # a mixed-mode model: every flag must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    momenta = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    data = _data(4, 5)
    dirs = random_directions(model, 2, seed=0)
    for fn in (loss_landscape, loss_landscape_reference):
        for bn in ("eval", "recalibrate"):
            fn(model, dirs, data, [0.0, 1.0], [0.0, 1.0], bn=bn)
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert flags == [m.training for m in model.modules()]
    assert momenta == [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


# ----------------------------------------------------------------------------------------------
# directions
# ----------------------------------------------------------------------------------------------

def test_filter_normalised_directions_have_the_filter_norms_of_the_weights(zoo):
    model, _ = zoo
    dirs = random_directions(model, 2, seed=5, normalization="filter", ignore="biasbn")
    weights = dict(model.named_parameters())
    checked = 0
    for d in dirs.vectors:
        for k, v in d.items():
            if v.dim() > 1:
                # float32 norms of <= 576 entries: relative rounding ~ sqrt(576) * 6e-8 = 1.4e-6
                torch.testing.assert_close(filter_norms(v), filter_norms(weights[k].detach()), rtol=1e-5, atol=0)
                checked += 1
            else:
                assert torch.count_nonzero(v) == 0, k  # biasbn: biases and BN vectors ignored
    assert checked == 2 * sum(1 for p in model.parameters() if p.dim() > 1)
    assert not torch.equal(dirs.vectors[0][next(iter(weights))], dirs.vectors[1][next(iter(weights))])


def test_fresh_resnet_with_zero_bn_biases_normalises_safely():
    model = build_model("resnet20", width=2)  # fresh: every BN bias is exactly zero
    dirs = random_directions(model, 1, seed=0, normalization="filter", ignore="none")
    for k, w in model.named_parameters():
        d = dirs.vectors[0][k]
        assert torch.isfinite(d).all(), k
        if w.dim() <= 1:
            # one vector = one filter: norm of the weight, so zero for a zero bias, ||1|| for BN weights
            torch.testing.assert_close(d.norm(), w.detach().norm(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("normalization", ["layer", "model"])
def test_layer_and_model_normalisation(zoo, normalization):
    model, _ = zoo
    d = random_directions(model, 1, seed=1, normalization=normalization).vectors[0]
    w = {k: p.detach() for k, p in model.named_parameters()}
    if normalization == "layer":
        for k in w:
            if w[k].dim() > 1:
                torch.testing.assert_close(d[k].norm(), w[k].norm(), rtol=1e-5, atol=0)
    else:
        kept = [k for k in w if w[k].dim() > 1]
        d_norm = torch.sqrt(sum(d[k].double().square().sum() for k in kept))
        w_norm = torch.sqrt(sum(w[k].double().square().sum() for k in kept))
        torch.testing.assert_close(d_norm, w_norm, rtol=1e-5, atol=0)


def test_directions_are_seeded():
    model = _tiny_bn_net()
    a, b, c = (random_directions(model, 2, seed=s) for s in (7, 7, 8))
    assert all(torch.equal(a.vectors[i][k], b.vectors[i][k]) for i in range(2) for k in a.vectors[i])
    assert not torch.equal(a.vectors[0]["0.weight"], c.vectors[0]["0.weight"])
    assert a.metadata()["seed"] == 7 and a.metadata()["normalization"] == "filter"


def test_directions_save_and_load(tmp_path):
    model = _tiny_bn_net()
    dirs = random_directions(model, 2, seed=4, normalization="layer", ignore="none")
    back = Directions.load(dirs.save(tmp_path / "dirs"))
    assert back.metadata() == dirs.metadata()
    assert all(torch.equal(back.vectors[i][k], dirs.vectors[i][k]) for i in range(2) for k in dirs.vectors[i])


def test_direction_to_another_model_reaches_it():
    model, other = _tiny_plain_net(0), _tiny_plain_net(1)
    data = _data(6, 5)
    dirs = directions_to_models(model, other)
    res = loss_landscape(model, dirs, data, [0.0, 1.0])
    with torch.no_grad():
        target = float(nn.functional.cross_entropy(other(data[0]), data[1]))
    assert abs(res.loss[1] - target) < 1e-12


def test_trajectory_pca_recovers_the_plane_of_a_planar_trajectory():
    model = _tiny_plain_net()
    gen = torch.Generator().manual_seed(0)
    w = {k: p.detach() for k, p in model.named_parameters() if p.dim() > 1}
    u = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in w.items()}
    v_ = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in w.items()}
    coeffs = [(2.0, 1.0), (1.5, -0.5), (0.7, 0.8), (0.2, -0.1)]
    ckpts = []
    for a, b in coeffs:
        sd = {k: p.detach().clone() for k, p in model.named_parameters()}
        for k in w:
            sd[k] = sd[k] + a * u[k] + b * v_[k]
        ckpts.append(sd)
    dirs = trajectory_pca_directions(model, ckpts)
    flat = lambda d: torch.cat([d[k].reshape(-1) for k in w])  # noqa: E731
    basis = torch.stack([flat(u), flat(v_)]).T
    for d in dirs.vectors:
        x = flat(d)
        assert abs(float(x.norm()) - 1) < 1e-12
        resid = x - basis @ torch.linalg.lstsq(basis, x).solution
        assert float(resid.norm()) < 1e-10  # each PCA direction lies in span{u, v}
    assert abs(sum(dirs.info["explained_variance_ratio"]) - 1) < 1e-10
    traj = np.array(dirs.info["trajectory"])
    for (a, b), (p, q) in zip(coeffs, traj):
        recon = p * flat(dirs.vectors[0]) + q * flat(dirs.vectors[1])
        assert float((recon - (a * flat(u) + b * flat(v_))).norm()) < 1e-9


# ----------------------------------------------------------------------------------------------
# errors
# ----------------------------------------------------------------------------------------------

def test_grid_of_size_zero_raises():
    model = _tiny_plain_net()
    dirs = random_directions(model, 2)
    with pytest.raises(ValueError, match="alphas must have at least one grid point; got a grid of size 0"):
        loss_landscape(model, dirs, _data(2, 5), [], [0.0])
    with pytest.raises(ValueError, match="betas must have at least one grid point"):
        loss_landscape(model, dirs, _data(2, 5), [0.0], np.array([]))
    with pytest.raises(ValueError, match="num must be >= 1"):
        grid_axis(-1, 1, 0)
    with pytest.raises(ValueError, match="needs betas"):
        loss_landscape(model, dirs, _data(2, 5), [0.0])


def test_mismatched_models_raise():
    model = _tiny_plain_net()
    other = nn.Sequential(nn.Conv2d(3, 5, 3), nn.Tanh(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 5))
    with pytest.raises(ValueError, match=r"does not match the model: parameter '0.weight' has shape \(5, 3, 3, 3\)"):
        directions_to_models(model, other.double())
    with pytest.raises(ValueError, match="does not match the model: it lacks"):
        directions_to_models(model, nn.Linear(2, 2))
    foreign = random_directions(_tiny_bn_net(), 1)
    with pytest.raises(ValueError, match="does not match the model"):
        loss_landscape(model, foreign, _data(2, 5), [0.0])


def test_train_mode_model_without_bn_choice_raises():
    model = _tiny_bn_net().train()
    dirs = random_directions(model, 1)
    with pytest.raises(ValueError, match="train mode and has BatchNorm layers.*bn='eval'.*bn='recalibrate'"):
        loss_landscape(model, dirs, _data(2, 5), [0.0])
    with pytest.raises(ValueError, match="bn must be one of 'eval', 'recalibrate', 'perturbed'; got 'train'"):
        loss_landscape(model, dirs, _data(2, 5), [0.0], bn="train")
    # a model without BatchNorm needs no choice, even in train mode
    plain = _tiny_plain_net().train()
    loss_landscape(plain, random_directions(plain, 1), _data(2, 5), [0.0])


def test_bad_choices_and_types_raise():
    model = _tiny_plain_net()
    with pytest.raises(ValueError, match="normalization must be one of"):
        random_directions(model, normalization="filters")
    with pytest.raises(ValueError, match="count must be <= 2"):
        random_directions(model, 3)
    with pytest.raises(TypeError, match="directions must be a Directions"):
        loss_landscape(model, {"0.weight": torch.zeros(1)}, _data(2, 5), [0.0])
    with pytest.raises(ValueError, match="data is empty"):
        loss_landscape(model, random_directions(model, 1), [], [0.0])
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        loss_landscape(model, random_directions(model, 1), _data(2, 5), [0.0], chunk_size=0)


def test_non_finite_data_raises():
    """A NaN image would make every grid point NaN (read as 'not evaluated' by resume)."""
    model = _tiny_plain_net()
    dirs = random_directions(model, 1)
    x, y = _data(3, 5)
    x[1, 2, 0, :3] = float("nan")
    for fn in (loss_landscape, loss_landscape_reference):
        with pytest.raises(ValueError, match=r"data\[1\] inputs must be finite; got 3 NaN or infinite entries of 324"):
            fn(model, dirs, [_data(2, 5), (x, y)], [0.0])
    # float64 data overflowing the float32 model's dtype is caught after the cast
    small = _tiny_plain_net().float()
    x32, y32 = _data(2, 5)
    x32[0, 0, 0, 0] = 1e300
    with pytest.raises(ValueError, match=r"data\[0\] inputs must be finite; got 1 NaN or infinite entries of 216 \(as torch.float32\)"):
        loss_landscape(small, random_directions(small, 1), (x32, y32), [0.0])
    recal = _tiny_bn_net()
    xr = _data(2, 5)[0].clone()
    xr[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"recalibration_data\[0\] inputs must be finite; got 1 "):
        loss_landscape(recal, random_directions(recal, 1), _data(2, 5), [0.0], bn="recalibrate",
                       recalibration_data=(xr, _data(2, 5)[1]))


# ----------------------------------------------------------------------------------------------
# results: save/load, resume, shards; chunking; plots
# ----------------------------------------------------------------------------------------------

def test_save_load_resume_and_shards(tmp_path):
    model = _tiny_bn_net()
    data = [_data(3, 5, seed=1), _data(2, 5, seed=2)]  # a two-batch "loader"
    dirs = random_directions(model, 2, seed=9)
    alphas, betas = grid_axis(-1, 1, 3), grid_axis(-1, 1, 2)
    full = loss_landscape(model, dirs, data, alphas, betas, chunk_size=2, checkpoint_path=tmp_path / "ckpt")
    assert (tmp_path / "ckpt.npz").exists() and (tmp_path / "ckpt.json").exists()
    full.save(tmp_path / "grid")
    back = LandscapeResult.load(tmp_path / "grid.npz")
    np.testing.assert_array_equal(back.loss, full.loss)
    np.testing.assert_array_equal(back.betas, full.betas)
    assert back.directions["seed"] == 9 and back.directions["normalization"] == "filter" and back.bn == "eval"
    assert back.num_samples == 5

    partial = LandscapeResult.load(tmp_path / "grid")
    partial.loss[1:] = np.nan
    resumed = loss_landscape(model, dirs, data, alphas, betas, resume=partial)
    np.testing.assert_allclose(resumed.loss, full.loss, rtol=1e-12)

    shards = [loss_landscape(model, dirs, data, alphas, betas, shard=(r, 2), progress=True) for r in range(2)]
    assert not shards[0].complete and np.isfinite(shards[0].loss).sum() == 3
    np.testing.assert_allclose(merge_landscapes(shards).loss, full.loss, rtol=1e-12)
    with pytest.raises(ValueError, match="resume was made with other directions"):
        loss_landscape(model, random_directions(model, 2, seed=1), data, alphas, betas, resume=partial)


def test_auto_chunk_size_is_bounded(zoo):
    model, (x, _) = zoo
    n = auto_chunk_size(model, x, num_points=7)
    assert 1 <= n <= 7
    assert auto_chunk_size(model, x, max_chunk=3) <= 3


def test_plots_write_compact_pngs(tmp_path):
    model = _tiny_plain_net()
    data = _data(4, 5)
    two = loss_landscape(model, random_directions(model, 2), data, grid_axis(-1, 1, 5), grid_axis(-1, 1, 4))
    other = loss_landscape(model, random_directions(model, 2, seed=3), data, grid_axis(-1, 1, 5), grid_axis(-1, 1, 4))
    one = loss_landscape(model, random_directions(model, 1), data, grid_axis(-1, 1, 7))
    figs = {
        "contour": plot_contour(two, trajectory=[[0.5, 0.5], [0.2, 0.1], [0.0, 0.0]]),
        "lines": plot_contour(two, filled=False, levels=6),
        "curve": plot_curve(one),
    }
    side = plot_side_by_side({"block": two, "baseline": other}, levels=8)
    lo = min(np.nanmin(two.loss), np.nanmin(other.loss))
    hi = max(np.nanmax(two.loss), np.nanmax(other.loss))
    assert side.levels[0] == pytest.approx(lo) and side.levels[-1] == pytest.approx(hi)  # shared levels
    figs["side"] = side
    for name, fig in figs.items():
        path = save_figure(fig, tmp_path / name)
        assert path.suffix == ".png" and 2_000 < path.stat().st_size < 300_000, name
    with pytest.raises(ValueError, match="1-D landscape"):
        plot_contour(one)


def test_normalize_direction_does_not_modify_its_input():
    model = _tiny_plain_net()
    raw = {k: torch.ones_like(p) for k, p in model.named_parameters()}
    keep = {k: v.clone() for k, v in raw.items()}
    normalize_direction(raw, model)
    assert all(torch.equal(raw[k], keep[k]) for k in raw)
    given = Directions.given(raw)
    assert given.kind == "given" and len(given.vectors) == 1


# ----------------------------------------------------------------------------------------------
# BatchNorm "perturbed": running statistics moved along the directions
# ----------------------------------------------------------------------------------------------

def test_perturbed_bn_matches_per_point_evaluation():
    model = _tiny_bn_net()
    data = _data(5, 5)
    dirs = random_directions(model, 2, seed=3, bn_statistics_too=True)
    # range 3: some moved variances go below zero, so the clamp is exercised too
    alphas, betas = grid_axis(-3, 3, 3), grid_axis(-1, 1, 2)
    fast = loss_landscape(model, dirs, data, alphas, betas, bn="perturbed", chunk_size=4)
    ref = loss_landscape_reference(model, dirs, data, alphas, betas, bn="perturbed")
    eval_bn = loss_landscape(model, dirs, data, alphas, betas, bn="eval")
    assert fast.bn == "perturbed" and fast.complete
    # float64 through 2 BN layers: ~1e-15 apart; 1e-10 leaves room
    assert np.abs(fast.loss / ref.loss - 1).max() < 1e-10
    assert np.abs(eval_bn.loss / ref.loss - 1).max() > 1e-3  # moving the statistics changes the values
    centre = loss_landscape(model, dirs, data, [0.0], [0.0], bn="perturbed")
    plain = loss_landscape(model, dirs, data, [0.0], [0.0], bn="eval")
    assert centre.loss[0, 0] == pytest.approx(plain.loss[0, 0], rel=1e-12)  # the origin is the deployed model


def test_perturbed_bn_statistics_directions_are_normalised_and_seeded():
    model = _tiny_bn_net()
    with_stats = random_directions(model, 2, seed=5, bn_statistics_too=True)
    plain = random_directions(model, 2, seed=5)
    stats = {k: v for k, v in model.state_dict().items() if k.endswith(("running_mean", "running_var"))}
    assert len(stats) == 4
    for d_s, d_p in zip(with_stats.vectors, plain.vectors):
        for k in d_p:
            assert torch.equal(d_s[k], d_p[k]), k  # the parameter part of a seed is unchanged
        for k, s in stats.items():
            # one vector per statistic, rescaled to the statistic's norm (float64: 1e-12)
            torch.testing.assert_close(d_s[k].norm(), s.norm(), rtol=1e-12, atol=0)


def test_perturbed_bn_without_statistics_entries_raises():
    model = _tiny_bn_net()
    with pytest.raises(ValueError, match=r"bn='perturbed' moves the BatchNorm running statistics.*bn_statistics_too"):
        loss_landscape(model, random_directions(model, 1), _data(2, 5), [0.0], bn="perturbed")


def test_direction_to_another_model_with_statistics_reaches_it_as_deployed():
    a, b = _tiny_bn_net(0), _tiny_bn_net(1)
    data = _data(6, 5)
    dirs = directions_to_models(a, b, bn_statistics_too=True)
    res = loss_landscape(a, dirs, data, [0.0, 1.0], bn="perturbed")
    with torch.no_grad():
        target = float(nn.functional.cross_entropy(b(data[0]), data[1]))
    assert abs(res.loss[1] - target) < 1e-12  # float64, one subtraction and addition per entry


# ----------------------------------------------------------------------------------------------
# fast engines
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bn", ["eval", "perturbed"])
def test_grouped_engine_matches_vmap_on_resnet20(zoo, bn, noise_floor):
    model, data = zoo
    dirs = random_directions(model, 2, seed=6, bn_statistics_too=True)
    alphas, betas = grid_axis(-1, 1, 3), grid_axis(-0.5, 0.5, 3)
    exact = loss_landscape(model, dirs, data, alphas, betas, bn=bn, chunk_size=4)
    # chunk 4 of 9 points: the last chunk is padded; compile off (CPU default) keeps the test fast
    fast = loss_landscape(model, dirs, data, alphas, betas, bn=bn, chunk_size=4, engine="grouped")
    assert fast.meta["engine"] == "grouped" and fast.meta["precision"] == "float32"
    # float32, 20 layers, grouped vs vmapped convs round differently: tolerance from the vmap
    # engine's own noise floor (see _ENGINE_MARGIN)
    x, y = data
    floor = noise_floor(lambda r: loss_landscape(model, dirs, (x * (1 + r), y), alphas, betas, bn=bn,
                                                 chunk_size=4).loss,
                        _max_rel_gap, at_least=_F32_EPS)
    tol = _ENGINE_MARGIN * floor
    assert tol < _ENGINE_FAULT, f"noise floor {floor:.3g} too high to tell a misplaced grid point"
    gap = _max_rel_gap(fast.loss, exact.loss)
    assert gap <= tol, f"engines differ by {gap:.3g}; noise floor {floor:.3g}, tolerance {tol:.3g}"
    np.testing.assert_array_equal(fast.accuracy, exact.accuracy)


def test_grouped_engine_reduced_precision_within_its_rounding():
    model = _tiny_bn_net(dtype=torch.float32)
    data = _data(32, 5, dtype=torch.float32)
    dirs = random_directions(model, 2, seed=1)
    axis = grid_axis(-0.5, 0.5, 3)
    exact = loss_landscape(model, dirs, data, axis, axis)
    half = loss_landscape(model, dirs, data, axis, axis, engine="grouped", precision="float16")
    bf16 = loss_landscape(model, dirs, data, axis, axis, engine="grouped", precision="bfloat16")
    err16 = np.abs(half.loss / exact.loss - 1).max()
    errbf = np.abs(bf16.loss / exact.loss - 1).max()
    # float16 rounds to 2^-11 = 4.9e-4 relative, bfloat16 to 2^-8 = 3.9e-3, per stored value;
    # three layers of a few such roundings: within 4x the unit each, and bfloat16 really coarser
    assert err16 < 2e-3, err16
    assert errbf < 1.6e-2, errbf
    assert err16 > 0 and errbf > 0  # the casts really happened


def test_grouped_engine_falls_back_with_a_reason():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 2, 3), nn.Conv2d(3, 2, 3)
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            return self.fc(torch.cat([self.a(x), self.b(x)], dim=1).mean(dim=(2, 3)))

    model = Cat().double().eval()
    data = _data(4, 5)
    dirs = random_directions(model, 1)
    with pytest.warns(RuntimeWarning, match="engine='grouped' cannot run this model: function cat"):
        res = loss_landscape(model, dirs, data, [0.0, 1.0], engine="grouped")
    assert res.meta["engine"] == "vmap"
    ref = loss_landscape_reference(model, dirs, data, [0.0, 1.0])
    assert np.abs(res.loss / ref.loss - 1).max() < 1e-12
    bn_model = _tiny_bn_net()
    with pytest.warns(RuntimeWarning, match="bn='recalibrate'"):
        loss_landscape(bn_model, random_directions(bn_model, 1), data, [0.0], bn="recalibrate", engine="grouped")
    with pytest.raises(ValueError, match="precision='bfloat16' needs engine='grouped', 'compiled' or 'auto'"):
        loss_landscape(bn_model, random_directions(bn_model, 1), data, [0.0], precision="bfloat16", engine="vmap")


def test_auto_engine_on_cpu_is_sequential_and_exact():
    # On a CPU "auto" evaluates point by point with the model's own layers (the fastest there); it
    # must give the vmap path's numbers for every BatchNorm mode: float64 models, losses ~2, sums in
    # another order -> 1e-10 relative.
    data = _data(4, 5)
    bn_model = _tiny_bn_net()
    dirs = random_directions(bn_model, 2, bn_statistics_too=True)
    for bn in ("eval", "recalibrate", "perturbed"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            auto = loss_landscape(bn_model, dirs, data, [-1.0, 0.5], [0.0, 1.0], bn=bn)
        exact = loss_landscape(bn_model, dirs, data, [-1.0, 0.5], [0.0, 1.0], bn=bn, engine="vmap")
        assert auto.meta["engine"] == "sequential" and exact.meta["engine"] == "vmap"
        assert np.abs(auto.loss / exact.loss - 1).max() < 1e-10, bn
        assert np.array_equal(auto.accuracy, exact.accuracy)
    with pytest.raises(ValueError, match="sequential engine runs the model in its own dtype"):
        loss_landscape(bn_model, dirs, data, [0.0], [0.0], engine="sequential", precision="bfloat16")


def test_log_levels_use_a_log_colour_norm(tmp_path):
    from matplotlib.colors import LogNorm

    model = _tiny_plain_net()
    res = loss_landscape(model, random_directions(model, 2), _data(4, 5), grid_axis(-3, 3, 5), grid_axis(-3, 3, 5))
    res.loss = res.loss ** 4  # several decades, as far from a minimum
    fig = plot_contour(res, log=True, levels=9)
    filled = [c for c in fig.axes[0].collections if hasattr(c, "norm")][0]
    assert isinstance(filled.norm, LogNorm)
    levels = np.asarray(filled.levels)
    np.testing.assert_allclose(levels[1:] / levels[:-1], levels[1] / levels[0], rtol=1e-9)  # geometric
    assert levels[0] == pytest.approx(np.nanmin(res.loss)) and levels[-1] == pytest.approx(np.nanmax(res.loss))
    assert len(fig.axes[0].texts) > 0  # labelled levels
    save_figure(fig, tmp_path / "log")
    with pytest.raises(ValueError, match="log=True needs positive contour levels"):
        plot_contour(res, log=True, levels=[-1.0, 1.0, 2.0])


def test_sequential_engine_channels_last_matches_vmap_on_a_zoo_model(noise_floor):
    # ResNet-20 at width 8 takes the channels_last CPU path (no 1x1 stride-2 conv below 8 channels);
    # float32, losses ~2.3, other summation order and layout: tolerance from the vmap engine's noise
    # floor, as the grouped engine's.
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10, width=8).eval()
    assert cpu_channels_last_safe(model)
    assert not cpu_channels_last_safe(build_model("resnet20", num_classes=10, width=2))
    data = _data(8, 10, size=32, dtype=torch.float32)
    dirs = random_directions(model, 2, seed=1)
    seq = loss_landscape(model, dirs, data, [-0.5, 0.5], [0.0, 0.5], engine="sequential")
    exact = loss_landscape(model, dirs, data, [-0.5, 0.5], [0.0, 0.5], engine="vmap")
    x, y = data
    floor = noise_floor(lambda r: loss_landscape(model, dirs, (x * (1 + r), y), [-0.5, 0.5], [0.0, 0.5],
                                                 engine="vmap").loss,
                        _max_rel_gap, at_least=_F32_EPS)
    tol = _ENGINE_MARGIN * floor
    assert tol < _ENGINE_FAULT, f"noise floor {floor:.3g} too high to tell a misplaced grid point"
    gap = _max_rel_gap(seq.loss, exact.loss)
    assert gap <= tol, f"engines differ by {gap:.3g}; noise floor {floor:.3g}, tolerance {tol:.3g}"


def test_float16_overflow_points_are_computed_again_in_float32(noise_floor):
    # Inputs of size ~3e3 through two convs whose weights grow with |alpha|: past float16's 65504
    # at the grid's far points, never near float32's range. Those points must come back as the
    # float32 values (recomputed exactly, one by one), not NaN; the others stay float16-rounded.
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5)).eval()
    torch.manual_seed(0)
    x, y = _data(16, 5, dtype=torch.float32)
    data = (3e3 * x, y)
    dirs = random_directions(model, 2, seed=1)
    axis = grid_axis(-4.0, 4.0, 5)
    exact = loss_landscape(model, dirs, data, axis, axis, engine="sequential")
    half = loss_landscape(model, dirs, data, axis, axis, engine="grouped", precision="float16", compile=False)
    fell_back = half.meta["float32_fallback_points"]
    assert 0 < len(fell_back) < 25, fell_back  # some points overflowed, not all
    flat_exact, flat_half = exact.loss.reshape(-1), half.loss.reshape(-1)
    assert np.isfinite(flat_half).all()
    # The fallback is float32 with the model's own layers: the sequential engine's numbers up to
    # summation order (that engine runs channels_last on a CPU), so within _ENGINE_MARGIN times the
    # sequential engine's noise floor, where float16 would be off by ~1e-3.
    floor = noise_floor(lambda r: loss_landscape(model, dirs, (data[0] * (1 + r), y), axis, axis,
                                                 engine="sequential").loss.reshape(-1)[fell_back],
                        _max_rel_gap, at_least=_F32_EPS)
    tol = _ENGINE_MARGIN * floor
    assert tol < _ENGINE_FAULT, f"noise floor {floor:.3g} too high to tell float32 from float16"
    gap = _max_rel_gap(flat_half[fell_back], flat_exact[fell_back])
    assert gap <= tol, f"fallback differs by {gap:.3g}; noise floor {floor:.3g}, tolerance {tol:.3g}"
    # ... and without it those points would have been non-finite in float16.
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        clone = copy.deepcopy(model)
        i = fell_back[0]
        a, b = half.alphas.reshape(-1)[i // 5], half.betas.reshape(-1)[i % 5]
        for name, p in clone.named_parameters():
            p.add_(a * dirs.vectors[0][name] + b * dirs.vectors[1][name])
        assert not torch.isfinite(clone(data[0]).float()).all()
    assert "float32_fallback_points" not in exact.meta


def test_calling_inside_autocast_is_refused_not_silently_stale():
    # Under one autocast region torch reuses the low-precision copy of each weight, so in-place grid
    # moves would be invisible (every point the first point's loss): refused with the fix named.
    model = _tiny_bn_net(dtype=torch.float32)
    data = _data(8, 5, dtype=torch.float32)
    dirs = random_directions(model, 2, seed=1)
    axis = grid_axis(-0.5, 0.5, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(RuntimeError, match=r"inside a torch.autocast\('cpu'\) region.*precision='float16'"):
            loss_landscape(model, dirs, data, axis, axis)
        with pytest.raises(RuntimeError, match="autocast"):
            loss_landscape_reference(model, dirs, data, axis, axis)
    assert np.isfinite(loss_landscape(model, dirs, data, axis, axis).loss).all()  # outside: fine

