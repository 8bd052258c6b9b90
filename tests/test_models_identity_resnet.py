"""Hardt & Ma's identity ResNet (IM-cifar): no batch norm, a fixed random projection, identity units."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.models import build_model, count_parameters
from analysis.models.identity_resnet import IdentityResidualUnit, IdentityResNet

TINY = {"width": 2, "stem_width": 2, "blocks_per_stage": 2}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _rel_err(a, b) -> float:
    return float(((a - b).abs().max() / b.abs().max()).detach())


def test_parameter_count_and_all_parameters_in_convolutions():
    # The review prints ~13.6M (Hardt & Ma's table: 13.5M). Ours: 55 convs, biases on the first conv
    # of each unit only: 13.54M, within 1% of both.
    model = build_model("identity_resnet")
    assert abs(count_parameters(model) - 13.6e6) <= 0.03 * 13.6e6
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 55
    conv_params = {id(p) for m in convs for p in m.parameters()}
    assert all(id(p) in conv_params for p in model.parameters())  # "all parameters are in the convolutions"


def test_no_normalisation_layers():
    model = build_model("identity_resnet", **TINY)
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    assert not any(isinstance(m, norms) for m in model.modules())


def test_projection_is_fixed_and_gets_no_gradient(batch):
    torch.manual_seed(0)
    model = build_model("identity_resnet", num_classes=5, **TINY)
    proj = model.projection
    assert proj.shape == (8, 5) and not proj.requires_grad
    assert all(p is not proj for p in model.parameters())
    assert "projection" in model.state_dict()  # a checkpoint reproduces it
    before = proj.clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model(batch).square().sum().backward()
    assert proj.grad is None
    bad = [n for n, p in model.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert not bad, f"no gradient for {bad[:5]}"
    opt.step()
    assert torch.equal(model.projection, before)


def test_projection_seed_reproduces_the_projection():
    a = build_model("identity_resnet", projection_seed=3, **TINY).projection
    b = build_model("identity_resnet", projection_seed=3, **TINY).projection
    c = build_model("identity_resnet", projection_seed=4, **TINY).projection
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_zero_residual_weights_give_the_identity_parametrisation(batch):
    """With every unit's weights zero, each unit is its (parameter-free) shortcut: the net is projection o pool o pad o stem."""
    torch.manual_seed(1)
    model = IdentityResNet(4, width=4, stem_width=2, blocks_per_stage=2).double()
    with torch.no_grad():
        for unit in model.units:
            for p in unit.parameters():
                p.zero_()
        x = batch.double()
        # Stage 1 pads 2 -> 4 channels (1 each side); stages 2 and 3 average-pool by 2 and pad evenly.
        s = F.conv2d(x, model.stem.weight, padding=1)
        s = F.pad(s, (0, 0, 0, 0, 1, 1))
        s = F.pad(F.avg_pool2d(s, 2), (0, 0, 0, 0, 2, 2))
        s = F.pad(F.avg_pool2d(s, 2), (0, 0, 0, 0, 4, 4))
        ref = F.relu(s).mean(dim=(2, 3)) @ model.projection  # the final ReLU of the pre-activation net
        assert _rel_err(model(x), ref) <= 1e-12


@pytest.mark.parametrize("preactivation", [True, False])
def test_unit_forms(preactivation):
    """Pre-activation unit x + conv2(relu(conv1(relu x) + b)); theory unit (IM eq. (1)) x + conv2(relu(conv1 x + b))."""
    torch.manual_seed(2)
    unit = IdentityResidualUnit(3, 3, preactivation=preactivation).double()
    with torch.no_grad():
        unit.conv1.bias.normal_()
        x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
        inner = F.relu(x) if preactivation else x
        ref = x + F.conv2d(F.relu(F.conv2d(inner, unit.conv1.weight, unit.conv1.bias, padding=1)),
                           unit.conv2.weight, padding=1)
        assert _rel_err(unit(x), ref) <= 1e-12
        assert unit.conv2.bias is None


# channels_last vs contiguous float32: tolerance = this margin times the contiguous net's noise
# floor (its output on inputs moved by 1-2 ulps and with another thread count,
# conftest.measure_noise_floor), which must stay below the 1e-3 of the output scale that a lost
# term or a wrong stride in a channels_last kernel would move it by. On 5 emulated CPUs (AVX512,
# AVX2 and no-SIMD ATen kernels, oneDNN at AVX2, 1 and 2 threads) the layouts differed by at most
# 0.5x the floor; 10x covers a worse rounding draw.
_LAYOUT_MARGIN = 10.0
_LAYOUT_FAULT = 1e-3


def test_shapes_train_eval_bf16_channels_last(batch, noise_floor):
    torch.manual_seed(3)
    model = build_model("identity_resnet", num_classes=7, **TINY)
    with torch.no_grad():
        out = model(batch)
        assert out.shape == (3, 7) and torch.isfinite(out).all()
        assert torch.equal(model.eval()(batch), out)  # no BN, no dropout: train and eval agree
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(batch)
        assert low.dtype == torch.bfloat16
        # 8 mantissa bits through ~14 convs: well within 5% of the output scale (measured < 1%).
        assert _rel_err(low.float(), out) <= 0.05
        floor = noise_floor(lambda r: model(batch * (1 + r)), _rel_err, at_least=1.2e-7)
        tol = _LAYOUT_MARGIN * floor
        assert tol < _LAYOUT_FAULT, f"noise floor {floor:.3g} too high to tell a wrong channels_last kernel"
        cl = model.to(memory_format=torch.channels_last)(batch.to(memory_format=torch.channels_last))
        assert _rel_err(cl, out) <= tol, (_rel_err(cl, out), floor)


def test_activations_false_gives_an_affine_net(batch):
    torch.manual_seed(4)
    model = build_model("identity_resnet", activations=False, **TINY).double()
    for unit in model.units:
        with torch.no_grad():
            unit.conv1.bias.normal_()
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x, y = batch[:2].double(), batch[1:].double()
    with torch.no_grad():
        assert _rel_err(model(0.3 * x + 0.7 * y), 0.3 * model(x) + 0.7 * model(y)) <= 1e-12
        relu = build_model("identity_resnet", **TINY).double()
        assert _rel_err(relu(0.3 * x + 0.7 * y), 0.3 * relu(x) + 0.7 * relu(y)) > 1e-6


def test_errors():
    with pytest.raises(ValueError, match="stem_width must be <= 4; got 8"):
        build_model("identity_resnet", width=4, stem_width=8)
    with pytest.raises(ValueError, match="blocks_per_stage must be >= 1; got 0"):
        build_model("identity_resnet", blocks_per_stage=0)
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'batch_norm' for model 'identity_resnet'"):
        build_model("identity_resnet", batch_norm=True)
    with pytest.raises(ValueError, match="projection_seed must be >= 0; got -1"):
        build_model("identity_resnet", projection_seed=-1, **TINY)
