"""The ResNEst-family zoo: registry, shapes, gradient flow, parameter counts, the four heads."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from analysis.models.blocks import PreActBasicBlock
from analysis.models import build_model, count_parameters, list_models, model_info
from analysis.models.resnest_family import CifarResNEst

TINY = {"width": 2}
# The other families have their own test modules with their own tiny options.
ALL_RESNEST_FAMILY = [n for n in list_models() if model_info(n).builder.__module__ == "analysis.models.resnest_family"]
RESNEST_FAMILY = [n for n in ALL_RESNEST_FAMILY if "wrn" not in n]  # 2/4/8 channels: every registered depth builds and runs in well under a second


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name", RESNEST_FAMILY)
def test_every_model_shapes_finiteness_and_gradient_flow(name, batch):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **TINY)
    out = model(batch)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"{name}: no/non-finite gradient for {missing[:5]}"
    zero = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0.0]
    assert not zero, f"{name}: identically zero gradient for {zero[:5]}"


@pytest.mark.parametrize("name", RESNEST_FAMILY)
def test_pooled_block_features_match_the_blocks(name, batch):
    model = build_model(name, **TINY).eval()
    depth = model.depth
    n = (depth - 2) // 6
    feats = model.pooled_block_features(batch)
    assert len(feats) == 3 * n + 1
    assert [f.shape[1] for f in feats] == list(model.feature_widths) == [3] + [2] * n + [4] * n + [8] * n
    assert torch.allclose(feats[0], batch.mean(dim=(2, 3)))  # v_0 is the pooled input image
    logits, feats2 = model.forward_with_block_features(batch)
    assert torch.equal(logits, model(batch))
    assert all(torch.equal(a, b) for a, b in zip(feats, feats2))


def test_a_resnest_logits_are_the_sum_of_linear_heads(batch):
    """RN eq. (6): y = sum_i H_i v_i, recomputed from the features by hand."""
    model = build_model("a_resnest20", **TINY).eval()
    feats = model.pooled_block_features(batch)
    by_hand = sum(f @ h.weight.T + h.bias for f, h in zip(feats, model.heads))
    torch.testing.assert_close(model(batch), by_hand)
    assert model.blocks[-1].conv2 is None and not hasattr(model, "fc")


@pytest.mark.parametrize("name,paper,rel", [
    ("resnet20", 0.27e6, 0.03), ("resnet110", 1.73e6, 0.03),
    ("a_resnest20", 0.24e6, 0.03), ("a_resnest110", 1.7e6, 0.03),
    ("resnest20", 0.27e6, 0.03), ("bn_resnest110", 1.73e6, 0.03),
])
def test_parameter_counts_match_the_paper(name, paper, rel):
    # The RN tables give 2 significant digits; 3% covers their rounding.
    assert abs(count_parameters(name) - paper) <= rel * paper


def test_head_structure_of_the_four_variants():
    heads = {v: build_model(f"{p}20", **TINY) for v, p in
             [("standard", "resnet"), ("resnest", "resnest"), ("bn_resnest", "bn_resnest")]}
    assert [type(m).__name__ for m in heads["standard"].final] == ["BatchNorm2d", "ReLU"]
    assert [type(m).__name__ for m in heads["bn_resnest"].final] == ["BatchNorm2d"]
    assert len(heads["resnest"].final) == 0
    stem_only_conv = build_model("resnet20").stem
    assert isinstance(stem_only_conv, nn.Conv2d) and stem_only_conv.bias is None


def test_block_projection_on_preactivated_input():
    block = PreActBasicBlock(4, 8, stride=2).eval()
    x = torch.randn(3, 4, 16, 16)
    out, v = block.forward_with_feature(x)
    assert out.shape == (3, 8, 8, 8) and v.shape == (3, 8, 8, 8)
    a = block.act1(block.norm1(x))
    torch.testing.assert_close(out, block.shortcut(a) + block.conv2(v))
    same = PreActBasicBlock(4, 4)
    assert same.shortcut is None
    torch.testing.assert_close(same(x), x + same.conv2(same.forward_with_feature(x)[1]))
    gn = PreActBasicBlock(4, 4, norm_layer=lambda c: nn.GroupNorm(2, c), act_layer=nn.GELU)
    assert isinstance(gn.norm1, nn.GroupNorm) and isinstance(gn.act2, nn.GELU)


def test_registry_records_source_and_rejects_bad_input():
    assert model_info("a_resnest56").source == "code"
    assert "a_resnest110" in list_models("a_*")
    with pytest.raises(KeyError, match="unknown model 'resnet21'.*registered models: a_resnest110"):
        build_model("resnet21")
    with pytest.raises(TypeError, match="unknown option.*'depth'.*valid options: width, in_channels"):
        build_model("resnet20", depth=32)
    with pytest.raises(ValueError, match="num_classes must be >= 1; got 0"):
        build_model("resnet20", num_classes=0)
    with pytest.raises(ValueError, match=r"depth must be 6n\+2.*got 21"):
        CifarResNEst(depth=21)
    with pytest.raises(ValueError, match="variant must be one of 'standard'.*got 'plain'"):
        CifarResNEst(variant="plain")
    with pytest.raises(TypeError, match="width must be an integer; got float"):
        build_model("resnet20", width=2.0)


def _affinity_defect(model: nn.Module, x: torch.Tensor, y: torch.Tensor, a: float) -> float:
    """max |f(a x + (1-a) y) - (a f(x) + (1-a) f(y))| / max |f|, which is 0 for an affine f."""
    with torch.no_grad():
        fx, fy, fmix = model(x), model(y), model(a * x + (1 - a) * y)
        return float((fmix - (a * fx + (1 - a) * fy)).abs().max() / torch.stack([fx, fy]).abs().max())


@pytest.mark.parametrize("name", ALL_RESNEST_FAMILY)
def test_every_builder_takes_activations_false(name):
    linear = build_model(name, num_classes=5, width=2, activations=False)
    assert not [n for n, m in linear.named_modules() if isinstance(m, nn.ReLU)]
    assert any(isinstance(m, nn.Identity) for m in linear.modules())


# Depth 20 and WRN-16 of each head: the deeper builders share the code path (checked above for no ReLU).
@pytest.mark.parametrize("name", [n for n in ALL_RESNEST_FAMILY if n.endswith(("20", "wrn16_8"))])
def test_activations_false_gives_an_affine_model(name):
    """``activations=False``: no ReLU module is left and, in eval mode, the model is affine in its input."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    x, y = (torch.randn(2, 3, 16, 16, generator=gen, dtype=torch.float64) for _ in range(2))
    linear = build_model(name, num_classes=5, width=2, activations=False).double().eval()
    # Non-trivial eval-mode BN (default running stats make it almost the identity).
    for m in linear.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.bias.data.uniform_(-0.5, 0.5, generator=gen)
    relu = build_model(name, num_classes=5, width=2).double().eval()
    relu.load_state_dict(linear.state_dict())  # same weights: only the activations differ
    assert not [n for n, m in linear.named_modules() if isinstance(m, nn.ReLU)]
    assert any(isinstance(m, nn.ReLU) for m in relu.modules())
    # Float64 through <= 38 conv/BN layers: rounding grows like depth * fan-in * eps ~ 1e-13 relative,
    # so 1e-10 leaves three orders of margin while a single ReLU kink gives O(1e-2) or more.
    assert _affinity_defect(linear, x, y, 0.3) < 1e-10
    # Control: the same weights with ReLUs are not affine, so the check above can fail.
    assert _affinity_defect(relu, x, y, 0.3) > 1e-4


def test_activations_must_be_a_bool():
    with pytest.raises(TypeError, match="activations must be True or False; got int 0"):
        build_model("resnet20", width=2, activations=0)
    with pytest.raises(TypeError, match="activations must be True or False; got str 'no'"):
        build_model("a_resnest_wrn16_8", width=2, activations="no")
