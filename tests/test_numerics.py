"""analysis.numerics.second_order_peaks: the float16 headroom of Newton blocks (NRL-fp16)."""
from __future__ import annotations

import pytest
import torch

from analysis.models import build_model
from analysis.models.newton_resnet import NewtonBlock
from analysis.numerics import FP16_MAX, second_order_peaks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(**options):
    torch.manual_seed(0)
    model = build_model("newton_resnet_1111", num_classes=3, width=2, **options)
    for b in model.modules():
        if isinstance(b, NewtonBlock):
            b.alpha.data.fill_(0.7)  # alpha = 0 at init would hide the term from the output
    return model.eval()


def test_peaks_match_a_direct_computation_of_each_block():
    model = _model()
    x = torch.randn(5, 3, 8, 8)
    got = second_order_peaks(model, x, batch_size=2)  # batching must not change a max
    # Recompute block by block with the block's own sub-modules.
    expected, inputs = {}, {}
    hooks = [b.register_forward_pre_hook(lambda m, i, n=n: inputs.__setitem__(n, i[0]))
             for n, b in model.named_modules() if isinstance(b, NewtonBlock)]
    with torch.no_grad():
        model(x)
    for hk in hooks:
        hk.remove()
    for name, b in model.named_modules():
        if not isinstance(b, NewtonBlock):
            continue
        with torch.no_grad():
            s, f = b.shortcut(inputs[name]), b.transformation(inputs[name])
            product = b.n1(s) * f
            expected[name] = {"product": float(product.abs().max()), "term": float(b.n2(product).abs().max()),
                              "output": float(b(inputs[name]).abs().max())}
    assert set(got["blocks"]) == set(expected) and len(expected) == 4
    for name, kinds in expected.items():
        for kind, value in kinds.items():
            # Same float32 ops on the same inputs; only batch boundaries differ (max is exact).
            assert got["blocks"][name][kind] == pytest.approx(value, rel=1e-5), (name, kind)
    assert got["peak"]["product"] == max(v["product"] for v in expected.values())
    assert got["headroom"]["product"] == pytest.approx(FP16_MAX / got["peak"]["product"])
    assert got["samples"] == 5 and got["tanh"] == [] and model.training is False


def test_tanh_bounds_the_term_but_not_the_product():
    x = 30 * torch.randn(4, 3, 8, 8)  # large inputs: large activations, large products
    plain, tanh = second_order_peaks(_model(), x), second_order_peaks(_model(second_order_tanh=True), x)
    assert tanh["peak"]["term"] <= 1.0 < plain["peak"]["term"]
    # The same weights (same seed) and the same product: the tanh comes after it.
    assert tanh["peak"]["product"] == pytest.approx(plain["peak"]["product"], rel=1e-6)
    assert len(tanh["tanh"]) == 4


def test_product_beyond_fp16_is_reported_as_no_headroom():
    model = _model()
    got = second_order_peaks(model, 1e4 * torch.randn(2, 3, 8, 8))
    assert got["peak"]["product"] > FP16_MAX and got["headroom"]["product"] < 1
    # ... and float16 itself overflows on that input (what the headroom predicts).
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        out = model(1e4 * torch.randn(2, 3, 8, 8))
    assert not torch.isfinite(out).all()


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="has no Newton blocks"):
        second_order_peaks(build_model("resnet20", num_classes=3, width=2), torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"images must be a float tensor of shape \(N, C, H, W\).*torch.uint8"):
        second_order_peaks(_model(), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images is empty"):
        second_order_peaks(_model(), torch.zeros(0, 3, 8, 8))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        second_order_peaks(_model(), torch.zeros(1, 3, 8, 8), batch_size=0)
