"""ResNet-18/34 and the Newton-ResNets (NRL, papers/000): counts, structure, modes, dtypes, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from analysis.models import build_model, count_parameters, model_info
from analysis.models.newton_resnet import MODEL_NAMES, BasicBlock, CifarResNet, NewtonBlock
from analysis.theory.nrl import newton_block, newton_block_activated

NEWTON = tuple(n for n in MODEL_NAMES if n.startswith("newton"))
TINY = {"width": 2}  # stage widths 2/4/8/16: every model builds and runs in a fraction of a second


def _batch(n: int = 4, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _tiny(name: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, num_classes=7, **TINY, **options)


def _randomise_norms(model: nn.Module, seed: int = 1) -> None:
    """Non-trivial BN affine parameters and running statistics, so eval mode is not ~identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))


# --------------------------------------------------------------------------------------------
# parameter counts (NRL Tables 1, 2, 4, 5)
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name,num_classes,paper", [
    ("resnet18", 10, 11.2e6), ("resnet34", 10, 21.3e6),             # Table 1
    ("newton_resnet_2211", 10, 6.0e6), ("newton_resnet_3322", 10, 13.0e6),
    ("newton_resnet_1111", 10, 5.3e6), ("newton_resnet_2222", 10, 11.9e6),  # Table 2
    ("newton_resnet_3333", 10, 18.5e6),
    ("resnet34", 100, 21.3e6), ("newton_resnet_3432", 100, 14.7e6),  # Table 4
    ("resnet18", 100, 11.2e6), ("newton_resnet_1111", 100, 5.3e6),   # Table 5
    ("newton_resnet_2222", 100, 11.9e6), ("newton_resnet_3333", 100, 18.5e6),
])
def test_parameter_counts_match_the_nrl_tables(name, num_classes, paper):
    # The tables print 2-3 significant digits (0.05M): within 1% here, 3% is the bar.
    # Built on the meta device: the count needs shapes only, no memory or initialisation.
    with torch.device("meta"):
        count = count_parameters(name, num_classes=num_classes)
    assert abs(count - paper) <= 0.03 * paper, f"{name}: {count / 1e6:.3f}M vs paper {paper / 1e6}M"


@pytest.mark.parametrize("name,other_x_proj,paper", [
    ("newton_resnet_2211", 0, 6.0e6), ("newton_resnet_3322", 0, 13.0e6),
    ("newton_resnet_1111", 1, 5.3e6), ("newton_resnet_2222", 1, 11.9e6), ("newton_resnet_3333", 1, 18.5e6),
])
def test_the_other_x_proj_reading_misses_the_printed_count(name, other_x_proj, paper):
    """Why the x_proj defaults differ by table: the other reading is >3% off every printed count."""
    assert model_info(name).defaults()["x_proj"] == 1 - other_x_proj
    with torch.device("meta"):
        count = count_parameters(name, x_proj=other_x_proj)
    assert abs(count - paper) > 0.03 * paper


# --------------------------------------------------------------------------------------------
# structure: NRL-block on the conv form
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_channels,out_channels,stride", [(4, 4, 1), (4, 6, 2)])
@pytest.mark.parametrize("train", [False, True])
def test_newton_block_with_alpha_zero_is_the_basic_block(in_channels, out_channels, stride, train):
    """NRL eq. (2)-(3): with a = 0 the Newton block is the residual block it extends."""
    torch.manual_seed(0)
    basic = BasicBlock(in_channels, out_channels, stride)
    _randomise_norms(basic)
    newton = NewtonBlock(in_channels, out_channels, stride, x_proj=1, lin_proj=1)
    result = newton.load_state_dict(basic.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert {k.split(".")[0] for k in result.missing_keys} == {"n1", "n2", "alpha"}
    basic.train(train), newton.train(train)
    x = torch.randn(3, in_channels, 8, 8, generator=torch.Generator().manual_seed(2))
    assert newton.alpha.item() == 0.0  # the public form's initialisation
    # s + f + 0 * finite rounds to s + f exactly, so bitwise equality is the right check.
    assert torch.equal(newton(x), basic(x))
    with torch.no_grad():
        newton.alpha.fill_(0.3)
    assert not torch.allclose(newton(x), basic(x), atol=1e-3)


def test_newton_resnet_with_alpha_zero_is_resnet18():
    """newton_resnet_2222 at initialisation computes ResNet-18 given ResNet-18's weights."""
    resnet = _tiny("resnet18")
    _randomise_norms(resnet)
    newton = _tiny("newton_resnet_2222", x_proj=1)
    newton.load_state_dict(resnet.state_dict(), strict=False)
    resnet.eval(), newton.eval()
    x = _batch()
    assert torch.equal(newton(x), resnet(x))


def _dense(w: torch.Tensor) -> np.ndarray:
    """The matrix a conv applies to a 1x1 image: a 3x3 conv with padding 1 sees only its centre tap."""
    k = w.shape[-1] // 2
    return w[:, :, k, k].detach().numpy()


@pytest.mark.parametrize("activations", [True, False])
@pytest.mark.parametrize("x_proj", [0, 1])
def test_newton_block_matches_the_dense_eq_2_and_3(activations, x_proj):
    """On 1x1 images without BN the conv block is the dense block of analysis.theory.nrl.

    Eq. (3) phi(x + C2 phi(C1 x) + a N2(N1 x * f)) with ReLU, and eq. (2) x + Cx + a N2(N1 x * Cx)
    with C = C2 C1 when every activation is removed; N1, N2 are the 1x1 convs (N1 = I for x_proj = 0).
    """
    d, n = 5, 7
    torch.manual_seed(3)
    act = nn.ReLU if activations else nn.Identity
    block = NewtonBlock(d, d, x_proj=x_proj, lin_proj=1, alpha_init=-0.75,  # exact in float32, the dtype alpha is built in
                        norm_layer=nn.Identity, act_layer=act).double()
    x = np.random.default_rng(4).standard_normal((n, d))
    out = block(torch.from_numpy(x)[:, :, None, None]).detach().numpy()[:, :, 0, 0]
    C1, C2 = _dense(block.conv1.weight), _dense(block.conv2.weight)
    N1 = _dense(block.n1[0].weight) if x_proj else None
    N2 = _dense(block.n2[0].weight)
    if activations:
        ref = newton_block_activated(x, C1, C2, -0.75, N1, N2, activation_name="relu")
    else:
        ref = newton_block(x, C2 @ C1, -0.75, N1, N2)
    # O(1) entries through ~6 products/sums of length-5 dot products: ~1e-15; 1e-12 leaves margin.
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_second_order_tanh_bounds_the_second_order_term():
    """NRL-fp16 (sec. 4.4): alpha * tanh(N2(N1(s) * f)) is bounded by |alpha| however large the product."""
    torch.manual_seed(0)
    block = NewtonBlock(4, 4, second_order_tanh=True, alpha_init=1.0).eval()
    plain = NewtonBlock(4, 4, alpha_init=1.0).eval()
    plain.load_state_dict(block.state_dict())
    assert [type(m).__name__ for m in block.n2] == ["Conv2d", "BatchNorm2d", "Tanh"]
    with torch.no_grad():
        for b in (block, plain):
            b.n1[0].weight.mul_(1e4)  # a product of order 1e4: the overflow regime of float16
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    s, f = block.shortcut(x), block.transformation(x)
    assert block.second_order(s, f).abs().max() <= 1.0
    assert plain.second_order(s, f).abs().max() > 100.0
    assert [type(m).__name__ for m in NewtonBlock(4, 4, lin_proj=0, second_order_tanh=True).n2] == ["Tanh"]


# --------------------------------------------------------------------------------------------
# every model: shapes, gradients, modes, dtypes, memory format
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_shape_finiteness_and_every_parameter_gets_a_gradient(name):
    # alpha != 0: at alpha = 0 the N1/N2 weights get an exactly zero gradient by construction.
    model = _tiny(name, **({"alpha_init": 0.5} if name in NEWTON else {}))
    out = model(_batch())
    assert out.shape == (4, 7) and torch.isfinite(out).all()
    out.square().sum().backward()
    bad = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: no/non-finite gradient for {bad[:5]}"
    zero = [n for n, p in model.named_parameters() if float(p.grad.abs().sum()) == 0.0]
    assert not zero, f"{name}: identically zero gradient for {zero[:5]}"


@pytest.mark.parametrize("name", NEWTON)
def test_alpha_starts_at_zero_and_can_leave_it(name):
    model = _tiny(name)
    alphas = [m.alpha for m in model.modules() if isinstance(m, NewtonBlock)]
    assert len(alphas) == sum(model.stage_blocks) and all(a.item() == 0.0 for a in alphas)
    model(_batch()).square().sum().backward()
    assert all(a.grad.abs().item() > 0.0 for a in alphas)


# Two float32 paths that should agree to rounding (another batch size, another memory layout):
# tolerance = this margin times the noise floor of the reference path (its output and gradients
# on inputs moved by 1-2 ulps and with another thread count, conftest.measure_noise_floor). The
# faults these tests exist for (batch statistics in eval mode, a lost term or a wrong stride in a
# channels_last kernel) move outputs by 1e-3 of their scale or more; a tolerance must stay below.
# On 5 emulated CPUs (AVX512, AVX2 and no-SIMD ATen kernels, oneDNN at AVX2, 1 and 2 threads) the
# paths differed by at most 1.1x the floor; 10x covers a worse rounding draw.
# Gradients get a looser bound: the fault there (oneDNN's wrong input gradients, see below) is
# off by O(1) of the gradient's scale, while a pre-activation within rounding of a ReLU's kink can
# flip under a 1-ulp change and move some gradients by 1e-2 of their scale with no sign in the output.
_PATH_MARGIN = 10.0
_PATH_FAULT = {"output": 1e-3, "gradients": 0.5}


@pytest.mark.parametrize("name", ["resnet18", "newton_resnet_2211"])
def test_train_and_eval_modes(name, noise_floor, scaled_gap):
    model = _tiny(name, **({"alpha_init": 0.5} if name in NEWTON else {}))
    x = _batch(6)
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    before = bn.running_mean.clone()
    train_out = model(x)
    assert not torch.equal(bn.running_mean, before)  # train mode updates the running statistics
    model.eval()
    stats = bn.running_mean.clone()
    with torch.no_grad():
        eval_out = model(x)
        alone = model(x[:2])
    assert torch.equal(bn.running_mean, stats)
    # Eval mode uses running statistics: a sample's output does not depend on its batch (up to the
    # rounding of kernels chosen for another batch size).
    with torch.no_grad():
        floor = noise_floor(lambda r: model(x[:2] * (1 + r)), scaled_gap, at_least=1.2e-7)
    tol = _PATH_MARGIN * floor
    assert tol < _PATH_FAULT["output"], f"noise floor {floor:.3g} too high to tell batch from running statistics"
    gap = scaled_gap(alone, eval_out[:2])
    assert gap <= tol, f"outputs differ by {gap:.3g} of their scale; noise floor {floor:.3g}, tolerance {tol:.3g}"
    assert not torch.allclose(train_out, eval_out, atol=1e-3)


@pytest.mark.parametrize("name", ["resnet34", "newton_resnet_3432", "newton_resnet_1111"])
def test_bfloat16_autocast_on_cpu(name):
    model = _tiny(name, **({"alpha_init": 0.5} if name in NEWTON else {})).eval()
    _randomise_norms(model)
    x = _batch()
    with torch.no_grad():
        ref = model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    # bf16 keeps 8 significant bits (eps 3.9e-3); ~40 rounded layers at random-walk growth give
    # ~sqrt(40) eps = 2.5e-2 of the output scale at worst (measured 3e-3 to 7e-3); 5e-2 still
    # catches a wrong dtype path or a lost term.
    err = (out.float() - ref).abs().max() / ref.abs().max()
    assert err < 5e-2, f"{name}: bf16 relative error {err:.3g}"
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x).float().square().mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["resnet18", "newton_resnet_2211"])
def test_channels_last_gives_the_same_outputs_and_gradients(name, noise_floor, scaled_gap):
    # width 8, not 2: in torch 2.13 CPU, oneDNN's channels_last backward of a stride-2 1x1 conv with
    # fewer than 8 input channels corrupts the heap (segfault, double free or wrong input gradients;
    # reproduced with a bare nn.Conv2d(2, 4, 1, stride=2)); 8 and more channels are fine.
    options = {"width": 8}
    torch.manual_seed(0)
    ref_model = build_model(name, num_classes=7, **options, **({"alpha_init": 0.5} if name in NEWTON else {})).eval()
    _randomise_norms(ref_model)
    cl_model = build_model(name, num_classes=7, **options).eval()
    cl_model.load_state_dict(ref_model.state_dict())
    cl_model = cl_model.to(memory_format=torch.channels_last)
    x = _batch()

    def run(model, inputs):
        model.zero_grad(set_to_none=True)
        out = model(inputs)
        out.sum().backward()
        return {"output": [out.detach()], "gradients": [p.grad.clone() for p in model.parameters()]}

    def gaps(a, b):
        """Same float32 arithmetic in another summation order. The output and each parameter's
        gradient in units of its own scale (its largest entry: entries near zero carry no relative
        meaning); the largest of each kind."""
        return {what: scaled_gap(a[what], b[what]) for what in a}

    floors = noise_floor(lambda r: run(ref_model, x * (1 + r)), gaps, at_least=1.2e-7)
    ref = run(ref_model, x)
    out = run(cl_model, x.contiguous(memory_format=torch.channels_last))
    names = {"output": ["output"], "gradients": [n for n, _ in ref_model.named_parameters()]}
    for what, floor in floors.items():
        tol = _PATH_MARGIN * floor
        assert tol < _PATH_FAULT[what], f"{what}: noise floor {floor:.3g} too high to tell a wrong channels_last kernel"
        for n, a, b in zip(names[what], out[what], ref[what], strict=True):
            gap = scaled_gap(a, b)
            assert gap <= tol, (f"{name}: {n} differs by {gap:.2g} of its scale; noise floor {floor:.3g}, "
                                f"tolerance {tol:.3g}")


# --------------------------------------------------------------------------------------------
# activations=False (NRL-linear): no activation left; affine ResNet, polynomial Newton-ResNet
# --------------------------------------------------------------------------------------------
def _activation_modules(model: nn.Module) -> list[str]:
    return [type(m).__name__ for m in model.modules() if type(m).__module__ == "torch.nn.modules.activation"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_activations_false_removes_every_activation(name):
    assert _activation_modules(_tiny(name))  # the check can see them when they are there
    assert not _activation_modules(_tiny(name, activations=False))


def _line(model: nn.Module, t: np.ndarray) -> np.ndarray:
    """Logits at x0 + t v for each t, float64."""
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(1, 3, 32, 32, generator=gen, dtype=torch.float64)
    # A long segment (|v| ~ 30 per pixel): the degree-k part grows as 30^k, so the top degree
    # stands well above round-off (at |v| ~ 1 it is 1e-16 of the output: tiny widths shrink it).
    v = 30.0 * torch.randn(1, 3, 32, 32, generator=gen, dtype=torch.float64)
    xs = x0 + torch.from_numpy(t)[:, None, None, None] * v
    with torch.no_grad():
        return model(xs).numpy()


def _chebyshev_residual(t_fit, y_fit, t_new, y_new, degree: int) -> float:
    """Max |fit - value| at fresh points, relative to max |value|, for a degree-``degree`` fit."""
    coef = np.polynomial.chebyshev.chebfit(t_fit, y_fit, degree)
    pred = np.polynomial.chebyshev.chebval(t_new, coef).T
    return float(np.abs(pred - y_new).max() / np.abs(y_new).max())


def test_linear_resnet_is_affine_and_linear_newton_resnet_is_a_degree_16_polynomial():
    """NRL-poly on the conv models: in eval mode without activations ResNet-18 is affine in its
    input, while Newton-ResNet [1,1,1,1] (4 blocks) is a polynomial of degree 2^4 = 16, not less."""
    nodes = np.cos(np.pi * (np.arange(17) + 0.5) / 17)  # Chebyshev nodes: the fit is well conditioned
    fresh = np.linspace(-0.95, 0.95, 9)

    resnet = _tiny("resnet18", activations=False).double().eval()
    _randomise_norms(resnet)
    y = _line(resnet, np.concatenate([nodes, fresh]))
    # float64 through ~20 affine layers: ~1e-14 relative; 1e-10 leaves four orders of margin.
    assert _chebyshev_residual(nodes, y[:17], fresh, y[17:], 1) < 1e-10

    newton = _tiny("newton_resnet_1111", activations=False, alpha_init=1.0).double().eval()
    _randomise_norms(newton)
    y = _line(newton, np.concatenate([nodes, fresh]))
    # An exact degree-16 polynomial interpolated at 17 Chebyshev nodes: error ~ Lebesgue constant
    # (~2.8) x eps x the size of the terms (measured 6e-15); 1e-9 leaves a wide margin.
    assert _chebyshev_residual(nodes, y[:17], fresh, y[17:], 16) < 1e-9
    # Degree 15 is not enough: the top term 2^4 is really there (generic weights).
    assert _chebyshev_residual(nodes, y[:17], fresh, y[17:], 15) > 1e-6  # measured 4e-5


# --------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------
def test_invalid_options_raise_clear_errors():
    with pytest.raises(TypeError, match=r"unknown option.*'x_proj'.*model 'resnet18'.*valid options: width, "
                                        r"in_channels, activations"):
        build_model("resnet18", x_proj=1)
    with pytest.raises(ValueError, match="second_order_tanh=True adds a tanh, but activations=False"):
        build_model("newton_resnet_1111", activations=False, second_order_tanh=True)
    with pytest.raises(ValueError, match="x_proj must be >= 0; got -1"):
        build_model("newton_resnet_2211", x_proj=-1)
    with pytest.raises(TypeError, match="lin_proj must be an integer; got float"):
        build_model("newton_resnet_2211", lin_proj=1.0)
    with pytest.raises(TypeError, match="activations must be True or False; got str 'no'"):
        build_model("resnet34", activations="no")
    with pytest.raises(TypeError, match="second_order_tanh must be True or False; got int 1"):
        build_model("newton_resnet_2211", second_order_tanh=1)
    with pytest.raises(ValueError, match="alpha_init must be finite; got nan"):
        build_model("newton_resnet_2211", alpha_init=float("nan"))
    with pytest.raises(ValueError, match="width must be >= 1; got 0"):
        build_model("newton_resnet_3333", width=0)
    with pytest.raises(KeyError, match="unknown model 'newton_resnet_4444'.*newton_resnet_1111"):
        build_model("newton_resnet_4444")
    with pytest.raises(TypeError, match=r"stage_blocks must be a non-empty sequence.*got \(\)"):
        CifarResNet(())
    with pytest.raises(ValueError, match=r"stage_blocks\[1\] must be >= 1; got 0"):
        CifarResNet((2, 0))
    with pytest.raises(ValueError, match="block must be one of 'basic', 'newton'; got 'bottleneck'"):
        CifarResNet(block="bottleneck")
    with pytest.raises(TypeError, match="'x_proj' apply to Newton blocks only"):
        CifarResNet(block="basic", x_proj=1)


def test_registry_entries():
    assert model_info("newton_resnet_2211").source == "code"
    assert model_info("resnet18").source == "ours"
    assert set(MODEL_NAMES) <= set(__import__("analysis.models", fromlist=["list_models"]).list_models())
    assert model_info("newton_resnet_3432").defaults() == {
        "width": 64, "in_channels": 3, "activations": True, "x_proj": 1, "lin_proj": 1,
        "second_order_tanh": False, "alpha_init": 0.0}
