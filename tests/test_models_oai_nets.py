"""The OAI nets (HB-Net, AGD-Net, ADMM/DMRNet block) and the WRN ResNEsts: counts, structure, mechanics.

Structural checks (OAI-special, conv reading) compare each net with an independent functional
reimplementation (``F.conv2d`` / ``F.batch_norm`` on the same weights, our own shortcut) or with the
dense reading in ``analysis.theory.oai``, in float64, eval mode, with random BN statistics so that BN is
a non-trivial affine map. Tolerances: float64 convs over <= 60 layers of O(1) activations, with BN
rescaling by at most ~10x, accumulate a relative error of at most ~layers * fan_in * eps ~ 60 * 600
* 2.2e-16 ~ 1e-11; we allow 1e-9 relative to the output scale, and check that a deliberately
changed coefficient moves the output by far more.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from analysis.models import build_model, count_parameters, list_models
from analysis.models.oai_nets import (
    ADMMBlock,
    ADMMStage,
    AGDDenseBlock,
    AGDDenseLayer,
    AGDNet,
    HBBlock,
    HBNet,
    ZeroPadShortcut,
)
from analysis.theory.oai import admm_structure, hb_structure, nesterov_h_weights

REL_TOL = 1e-9

# Tiny widths: every model builds and runs fwd+bwd in well under a second on one core.
TINY = {
    "hbnet9": {"width": 2}, "hbnet18": {"width": 2},
    "postact_resnet56": {"width": 2}, "postact_resnet110": {"width": 2},
    "agdnet_k12_l40": {"growth": 2}, "agdnet_k12_l52": {"growth": 2},
    "densenet_k12_l40": {"growth": 2}, "densenet_k12_l52": {"growth": 2},
    **{name: {"width": 2} for name in list_models("*wrn*")},
}
MODELS = sorted(TINY)
# The deeper siblings (n = 18, L = 52) are the same classes with more blocks: the mode, dtype,
# layout and linearity checks run on one depth of each family to keep the module fast.
CORE = [m for m in MODELS if m not in ("hbnet18", "postact_resnet110", "agdnet_k12_l52", "densenet_k12_l52")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def batch():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.2 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
    return model


def _bn(x, bn: nn.BatchNorm2d):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).detach())


# ------------------------------------------------------------------------------------------------
# Parameter counts
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,printed,source", [
    # OAI prints no counts. HB-Net has ResNet-56/110's layout and adds no parameters (beta fixed),
    # so it is compared with He et al. (2016a, Table 6): ResNet-56 0.85M, ResNet-110 1.7M.
    ("hbnet9", 0.85e6, "He et al. 2016a, ResNet-56"),
    ("hbnet18", 1.7e6, "He et al. 2016a, ResNet-110"),
    ("postact_resnet56", 0.85e6, "He et al. 2016a, ResNet-56"),
    ("postact_resnet110", 1.7e6, "He et al. 2016a, ResNet-110"),
    # AGD-Net = DenseNet + 3 L(L+1)/2 alphas; DenseNet (k = 12, L = 40) is 1.0M (Huang et al., Table 2).
    # DenseNet L = 52 appears in no table with a count: checked only through the exact relation below.
    ("agdnet_k12_l40", 1.0e6, "DenseNet-40 (Huang et al. 2017)"),
    ("densenet_k12_l40", 1.0e6, "DenseNet-40 (Huang et al. 2017)"),
    # RN tables (CIFAR-10): WRN-16-8 11M (A-ResNEst 8.7M), WRN-40-4 9.0M (A-ResNEst 8.4M).
    ("wrn16_8", 11e6, "RN"), ("resnest_wrn16_8", 11e6, "RN"), ("bn_resnest_wrn16_8", 11e6, "RN"),
    ("a_resnest_wrn16_8", 8.7e6, "RN"),
    ("wrn40_4", 9.0e6, "RN"), ("resnest_wrn40_4", 9.0e6, "RN"), ("bn_resnest_wrn40_4", 9.0e6, "RN"),
    ("a_resnest_wrn40_4", 8.4e6, "RN"),
])
def test_parameter_counts_match_printed(name, printed, source):
    # Printed to 2 significant digits: 3% covers the rounding.
    got = count_parameters(name)
    assert abs(got - printed) <= 0.03 * printed, f"{name}: {got} vs {printed} ({source})"


@pytest.mark.parametrize("name,printed", [("a_resnest_wrn16_8", 8.9e6), ("a_resnest_wrn40_4", 8.7e6)])
def test_a_resnest_wrn_counts_cifar100(name, printed):
    # RN CIFAR-100 table: the A-ResNEst heads grow with the class count (one H_k per feature).
    assert abs(count_parameters(name, num_classes=100) - printed) <= 0.03 * printed


@pytest.mark.parametrize("depth", [40, 52])
def test_agdnet_adds_exactly_the_alphas_to_densenet(depth):
    n = (depth - 4) // 3
    extra = 3 * n * (n + 1) // 2  # alpha_{k+1}^j for j = 0..k, k = 0..n-1, in each of 3 blocks
    assert count_parameters(f"agdnet_k12_l{depth}") - count_parameters(f"densenet_k12_l{depth}") == extra


def test_hbnet_adds_no_parameters_to_resnet():
    assert count_parameters("hbnet18") == count_parameters("postact_resnet110")
    assert count_parameters("hbnet9") == count_parameters("postact_resnet56")


# ------------------------------------------------------------------------------------------------
# Structural: HB-Net (16)
# ------------------------------------------------------------------------------------------------

def _ref_shortcut(x, out_channels, stride):
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    extra = out_channels - x.shape[1]
    if extra:
        x = torch.cat([x, x.new_zeros(x.shape[0], extra, *x.shape[2:])], 1)
    return x


def _ref_T(x, T):
    s = T.conv1.stride[0]
    y = F.relu(_bn(F.conv2d(x, T.conv1.weight, stride=s, padding=1), T.bn1))
    return _bn(F.conv2d(y, T.conv2.weight, padding=1), T.bn2)


def _ref_resnet(model: HBNet, x, relu_after_sum: bool):
    """CIFAR ResNet, option A, functionally: [relu](T(x) + shortcut(x)) per block; with the ReLU it is He et al. (2016a)."""
    conv, bn = model.stem[0], model.stem[1]
    x = F.relu(_bn(F.conv2d(x, conv.weight, padding=1), bn))
    for block in model.blocks:
        x = _ref_T(x, block.T) + _ref_shortcut(x, block.T.conv1.out_channels, block.T.conv1.stride[0])
        x = F.relu(x) if relu_after_sum else x
    return F.linear(x.mean(dim=(2, 3)), model.fc.weight, model.fc.bias)


@pytest.mark.parametrize("n,relu_after_sum", [(1, True), (3, True), (3, False)])
def test_oai_special_hb_with_beta2_zero_is_resnet(n, relu_after_sum, batch, record_property):
    """HB-Net (16) with beta2 = 0 equals a ResNet (x + T(x), with or without He et al.'s ReLU after the sum) on random inputs; beta2 = -1 does not.

    OAI Table 3: "ResNet: beta2 = 0 in (16)". Reference: our functional ResNet on the same weights.
    """
    torch.manual_seed(0)
    resnet = _randomize_bn(HBNet(n, 5, width=3, beta2=0.0, relu_after_sum=relu_after_sum)).double().eval()
    x = batch.double()
    with torch.no_grad():
        ref = _ref_resnet(resnet, x, relu_after_sum)
        err = _rel_err(resnet(x), ref)
        assert err <= REL_TOL
        hb = HBNet(n, 5, width=3, beta2=-1.0, relu_after_sum=relu_after_sum).double().eval()
        hb.load_state_dict(resnet.state_dict())
        gap = _rel_err(hb(x), ref)
    assert gap > 1e-3  # the momentum term changes the output: the check above can fail
    record_property("evidence", f"rel. error {err:.1e}; with beta2 = -1 the gap is {gap:.2f}")


def test_registry_baselines_are_hbnet_special_cases():
    a, b = build_model("postact_resnet56", width=2), build_model("hbnet9", width=2, beta2=0.0, relu_after_sum=True)
    assert a.state_dict().keys() == b.state_dict().keys()
    assert all((blk.beta1, blk.beta2) == (1.0, 0.0) and isinstance(blk.act, nn.ReLU) for blk in a.blocks)
    assert all((blk.beta1, blk.beta2) == (1.0, -1.0) and isinstance(blk.act, nn.Identity)
               for blk in build_model("hbnet18", width=2).blocks)


def test_hb_blocks_follow_form16_dense_reading():
    """A chain of same-width HB blocks (no ReLU after the sum) equals ``analysis.theory.oai.hb_structure`` (16)."""
    torch.manual_seed(1)
    gen = torch.Generator().manual_seed(2)
    for beta1, beta2 in [(1.0, -1.0), (0.7, 0.4), (1.0, 0.0)]:
        blocks = [_randomize_bn(HBBlock(3, 3, beta1=beta1, beta2=beta2, relu_after_sum=False), seed=k).double().eval()
                  for k in range(4)]
        x0 = torch.randn(1, 3, 8, 8, generator=gen, dtype=torch.float64)
        x, prev = x0, None
        outs = [x0]
        for b in blocks:
            x, prev = b(x, prev)
            outs.append(x)
        with torch.no_grad():
            dense = hb_structure(
                x0.flatten().numpy(), lambda k, v: blocks[k].T(torch.from_numpy(v).view(1, 3, 8, 8)).flatten().numpy(),
                len(blocks), beta1, beta2)
        got = torch.stack(outs).flatten(1).detach().numpy()
        assert abs(got - dense).max() <= REL_TOL * abs(dense).max()


def test_hb_transition_maps_both_states_by_the_shortcut():
    """At a stage's first block x_{k+1} = relu(T(x_k) + beta1 P(x_k) + beta2 P(x_{k-1})) and P(x_k) is passed on."""
    torch.manual_seed(3)
    block = _randomize_bn(HBBlock(2, 4, stride=2, beta1=1.0, beta2=-1.0, relu_after_sum=True)).double().eval()
    x, xp = torch.randn(2, 2, 8, 8, dtype=torch.float64), torch.randn(2, 2, 8, 8, dtype=torch.float64)
    out, carried = block(x, xp)
    ref = F.relu(_ref_T(x, block.T) + _ref_shortcut(x, 4, 2) - _ref_shortcut(xp, 4, 2))
    assert _rel_err(out, ref) <= REL_TOL
    assert torch.equal(carried, _ref_shortcut(x, 4, 2))
    # x_prev = None is x_{-1} = x_k: zero velocity, so beta1 + beta2 = 0 leaves no skip term.
    torch.testing.assert_close(block(x)[0], F.relu(_ref_T(x, block.T)), rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------------
# Structural: AGD-Net (18)/(21)
# ------------------------------------------------------------------------------------------------

def test_nesterov_h_weights_never_reach_z0():
    """h_1^0 = 1 and h_{k+1}^0 = 0 for k >= 1 (eq (5)): why (21)'s momentum term never needs z_0's width."""
    H = nesterov_h_weights(40)
    assert H[1, 0] == 1.0
    assert (H[2:, 0] == 0).all()


def test_agd_layer_is_the_sum_of_per_input_transforms():
    """The concatenation implementation equals sum_j alpha^j conv_j(relu(bn_j(z_j))), the first term of (18)/(21)."""
    torch.manual_seed(4)
    widths = [5, 2, 2, 2]
    layer = _randomize_bn(AGDDenseLayer(widths, 3)).double().eval()
    with torch.no_grad():
        layer.alpha.copy_(torch.tensor([0.3, -1.2, 2.0, 0.7]))
    zs = [torch.randn(2, w, 6, 6, dtype=torch.float64) for w in widths]
    ref, start = 0, 0
    for a, z in zip(layer.alpha, zs):
        sl = slice(start, start + z.shape[1])
        bn = F.batch_norm(z, layer.norm.running_mean[sl], layer.norm.running_var[sl], layer.norm.weight[sl],
                          layer.norm.bias[sl], training=False, eps=layer.norm.eps)
        ref = ref + a * F.conv2d(F.relu(bn), layer.conv.weight[:, sl], padding=1)
        start += z.shape[1]
    assert _rel_err(layer(zs), ref) <= REL_TOL


def test_agd_block_momentum_term_matches_eq21():
    """The block equals (21) with the full sum over j = 0..k (z_0 of the layers' width, so the j = 0 term is computable)."""
    torch.manual_seed(5)
    block = _randomize_bn(AGDDenseBlock(2, 5, 2, beta=0.3)).double().eval()
    for layer in block.layers:
        with torch.no_grad():
            layer.alpha.uniform_(-1, 2)
    H = nesterov_h_weights(5)
    z0 = torch.randn(2, 2, 6, 6, dtype=torch.float64)
    zs = [z0]
    for k, layer in enumerate(block.layers):
        full_sum = sum(H[k + 1, j] * zs[j] for j in range(k + 1))
        zs.append(layer(zs) + 0.3 * (zs[k] - full_sum))
    ref = torch.cat(zs, 1)
    assert _rel_err(block(z0), ref) <= REL_TOL
    block.beta = 0.0
    assert _rel_err(block(z0), ref) > 1e-3  # the momentum term matters: the check above can fail


def _ref_densenet(model: AGDNet, x):
    """DenseNet (Huang et al. 2017), functionally: z_{k+1} = conv(relu(bn([z_0..z_k]))) on the same weights."""
    x = F.conv2d(x, model.stem.weight, padding=1)
    for stage in model.features:
        if isinstance(stage, AGDDenseBlock):
            zs = [x]
            for layer in stage.layers:
                zs.append(F.conv2d(F.relu(_bn(torch.cat(zs, 1), layer.norm)), layer.conv.weight, padding=1))
            x = torch.cat(zs, 1)
        else:
            bn, _, conv, pool = stage
            x = F.avg_pool2d(F.conv2d(F.relu(_bn(x, bn)), conv.weight), 2)
    x = F.relu(_bn(x, model.final[0])).mean(dim=(2, 3))
    return F.linear(x, model.fc.weight, model.fc.bias)


def test_oai_special_densenet_is_agd_with_alpha_one_beta_zero(batch, record_property):
    """AGD-Net (18) with alpha = 1, beta = 0 (``densenet_k12_l40``) equals a DenseNet on random inputs; AGD-Net (beta = 0.1) does not.

    OAI Table 3: "DenseNet: beta = 0, alpha = 1 in (18)". Reference: our functional DenseNet.
    """
    torch.manual_seed(6)
    dense = _randomize_bn(build_model("densenet_k12_l40", num_classes=4, growth=2)).double().eval()
    x = batch.double()
    ref = _ref_densenet(dense, x)
    err = _rel_err(dense(x), ref)
    assert err <= REL_TOL
    agd = build_model("agdnet_k12_l40", num_classes=4, growth=2).double().eval()
    agd.load_state_dict(dense.state_dict(), strict=False)  # alphas stay 1
    gap = _rel_err(agd(x), ref)
    assert gap > 1e-4
    record_property("evidence", f"rel. error {err:.1e}; AGD-Net with beta = 0.1 differs by {gap:.2g}")


# ------------------------------------------------------------------------------------------------
# Structural: ADMM / DMRNet (20)
# ------------------------------------------------------------------------------------------------

def test_oai_special_dmrnet_is_admm_with_half_coefficients(record_property):
    """The ADMM stage (20) with alpha_{k+1}^k = beta_{k+1}^k = 1/2 (default) equals merge-and-run (DMRNet) on random inputs."""
    torch.manual_seed(7)
    stage = _randomize_bn(ADMMStage(3, 4)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    xp_ref, x_ref = x, x
    for block in stage.blocks:
        mean = (x_ref + xp_ref) / 2
        xp_ref, x_ref = _ref_T(xp_ref, block.T_prime) + mean, _ref_T(x_ref, block.T) + mean
    xp, xo = stage(x)
    err = max(_rel_err(xp, xp_ref), _rel_err(xo, x_ref))
    assert err <= REL_TOL
    # Literal reading of Table 3 (1/2 on every earlier state) is a different net from the second block on.
    literal = ADMMStage(3, 4, alpha=torch.tril(torch.full((4, 4), 0.5)), beta=torch.tril(torch.full((4, 4), 0.5)))
    literal = literal.double().eval()
    literal.load_state_dict(stage.state_dict())
    gap = _rel_err(literal(x)[1], x_ref)
    assert gap > 1e-3
    record_property("evidence", f"rel. error {err:.1e}; literal alpha_t = 1/2 for all t differs by {gap:.2f}")


def test_admm_stage_follows_form20_dense_reading():
    """General lower-triangular coefficients: the stage equals ``analysis.theory.oai.admm_structure`` (20)."""
    torch.manual_seed(8)
    depth, gen = 4, torch.Generator().manual_seed(9)
    alpha = torch.tril(torch.randn(depth, depth, generator=gen, dtype=torch.float64)) / 3
    beta = torch.tril(torch.randn(depth, depth, generator=gen, dtype=torch.float64)) / 3
    stage = _randomize_bn(ADMMStage(2, depth, alpha, beta)).double().eval()
    x0 = torch.randn(1, 2, 6, 6, generator=gen, dtype=torch.float64)

    def via(attr):
        return lambda k, v: getattr(stage.blocks[k], attr)(torch.from_numpy(v).view(1, 2, 6, 6)).flatten().numpy()

    with torch.no_grad():
        dps, ds = admm_structure(x0.flatten().numpy(), via("T"), depth, alpha.numpy(), beta.numpy(),
                                 transform_prime=via("T_prime"))
        xp, x = stage(x0)
    assert abs(x.flatten().numpy() - ds[-1]).max() <= REL_TOL * abs(ds).max()
    assert abs(xp.flatten().numpy() - dps[-1]).max() <= REL_TOL * abs(dps).max()


# ------------------------------------------------------------------------------------------------
# Mechanics of every model of this part (tiny widths)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_shapes_finiteness_and_gradient_flow(name, batch):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **TINY[name])
    out = model(batch)
    assert out.shape == (3, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    bad = [n for n, p in model.named_parameters()
           if p.grad is None or not torch.isfinite(p.grad).all() or float(p.grad.abs().sum()) == 0.0]
    assert not bad, f"{name}: missing, non-finite or zero gradient for {bad[:5]}"


@pytest.mark.parametrize("name", CORE)
def test_train_and_eval_modes(name, batch):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **TINY[name])
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    with torch.no_grad():
        train_out = model.train()(batch)
        assert not torch.equal(bn.running_mean, before)  # BN saw the batch
        model.eval()
        e1, e2 = model(batch), model(batch)
    assert torch.equal(e1, e2)
    assert not torch.allclose(e1, train_out)  # running vs batch statistics


@pytest.mark.parametrize("name", CORE)
def test_bfloat16_autocast_on_cpu(name, batch):
    torch.manual_seed(0)
    # Train mode, as under autocast in training: BN normalises with batch statistics. (Eval mode
    # with the initial running statistics makes BN the identity and lets HB-Net's stream grow.)
    model = build_model(name, num_classes=7, **TINY[name]).train()
    with torch.no_grad():
        ref = model(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(batch)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    # bf16 keeps 8 mantissa bits (eps 2^-8 = 4e-3); tiny nets of <= 110 layers stay within 10%
    # of the output scale (measured <= 4%): a gross error (wrong dtype path, overflow) fails this.
    assert _rel_err(out.float(), ref) <= 0.1


# channels_last vs contiguous float32: tolerance = this margin times the contiguous net's noise
# floor (its output on inputs moved by 1-2 ulps and with another thread count,
# conftest.measure_noise_floor), which must stay below the 1e-3 of the output scale that a lost
# term or a wrong stride in a channels_last kernel would move it by. On 5 emulated CPUs (AVX512,
# AVX2 and no-SIMD ATen kernels, oneDNN at AVX2, 1 and 2 threads) the layouts differed by at most
# 1.3x the floor (densenet, agdnet); 10x covers a worse rounding draw.
_LAYOUT_MARGIN = 10.0
_LAYOUT_FAULT = 1e-3


@pytest.mark.parametrize("name", CORE)
def test_channels_last_matches_contiguous(name, batch, noise_floor):
    torch.manual_seed(0)
    model = build_model(name, num_classes=7, **TINY[name]).eval()
    with torch.no_grad():
        ref = model(batch)
        floor = noise_floor(lambda r: model(batch * (1 + r)), _rel_err, at_least=1.2e-7)
        model = model.to(memory_format=torch.channels_last)
        out = model(batch.to(memory_format=torch.channels_last))
    # float32 with another summation order (~layers * sqrt(fan_in) * 6e-8 relative)
    tol = _LAYOUT_MARGIN * floor
    assert tol < _LAYOUT_FAULT, f"noise floor {floor:.3g} too high to tell a wrong channels_last kernel"
    assert _rel_err(out, ref) <= tol, f"{name}: {_rel_err(out, ref):.3g}; noise floor {floor:.3g}, tolerance {tol:.3g}"


@pytest.mark.parametrize("name", CORE)
def test_activations_false_makes_the_net_affine(name, batch):
    """With every activation removed (and BN in eval mode) the net is affine: f(a x + (1-a) y) = a f(x) + (1-a) f(y)."""
    torch.manual_seed(0)
    x, y = batch[:2].double(), batch[1:].double()
    linear = _randomize_bn(build_model(name, num_classes=7, activations=False, **TINY[name])).double().eval()
    assert not any(isinstance(m, nn.ReLU) for m in linear.modules())
    with torch.no_grad():
        mix, ends = linear(0.3 * x + 0.7 * y), 0.3 * linear(x) + 0.7 * linear(y)
    assert _rel_err(mix, ends) <= REL_TOL
    relu = _randomize_bn(build_model(name, num_classes=7, **TINY[name])).double().eval()
    with torch.no_grad():
        assert _rel_err(relu(0.3 * x + 0.7 * y), 0.3 * relu(x) + 0.7 * relu(y)) > 1e-6


def test_agdnet_dropout_only_in_training(batch):
    torch.manual_seed(0)
    model = build_model("agdnet_k12_l40", growth=2, drop_rate=0.5)
    with torch.no_grad():
        assert not torch.equal(model.train()(batch), model(batch))
        model.eval()
        assert torch.equal(model(batch), model(batch))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------

def test_unknown_name_and_option_errors():
    with pytest.raises(KeyError, match=r"unknown model 'hbnet7'.*hbnet18.*hbnet9"):
        build_model("hbnet7")
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'depth' for model 'hbnet9'; valid options: width"):
        build_model("hbnet9", depth=20)
    with pytest.raises(TypeError, match=r"unknown option\(s\) 'beta' for model 'densenet_k12_l40'"):
        build_model("densenet_k12_l40", beta=0.1)


def test_invalid_option_values():
    with pytest.raises(ValueError, match=r"depth must be 3n\+4 \(40, 52, 100, \.\.\.\).*got 41"):
        AGDNet(depth=41)
    with pytest.raises(TypeError, match="beta2 must be a real number; got str"):
        build_model("hbnet9", beta2="-1")
    with pytest.raises(ValueError, match=r"drop_rate must be < 1; got 1"):
        build_model("agdnet_k12_l40", drop_rate=1.0)
    with pytest.raises(ValueError, match="width must be >= 1; got 0"):
        build_model("hbnet18", width=0)
    with pytest.raises(ValueError, match="out_channels must be >= 4; got 2"):
        HBBlock(4, 2)
    with pytest.raises(ValueError, match=r"alpha must have step \+ 1 = 3 entries \(t = 0\.\.2\); got 2"):
        ADMMBlock(4, 2, alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"alpha must have shape \(depth, depth\) = \(3, 3\); got \(2, 2\)"):
        ADMMStage(4, 3, alpha=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"pool must be 'subsample' or 'avg'; got 'max'"):
        ZeroPadShortcut(2, 4, 2, pool="max")
    block = ADMMBlock(2, 1)
    with pytest.raises(ValueError, match=r"step 1 needs the states x'_0\.\.x'_1 and x_0\.\.x_1; got 1 and 1"):
        block([torch.zeros(1, 2, 4, 4)], [torch.zeros(1, 2, 4, 4)])
