"""analysis.probes.fp16_peaks.second_order_peaks: the float16 headroom of Newton blocks (NRL-fp16)."""
from __future__ import annotations

import pytest
import torch

from analysis.models import build_model
from analysis.models.newton_resnet import NewtonBlock
from analysis.probes.fp16_peaks import FP16_MAX, second_order_peaks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _model(**options):
    torch.manual_seed(0)
    model = build_model("newton_resnet_1111", num_classes=3, width=2, **options)
    for b in model.modules():
        if isinstance(b, NewtonBlock):
            b.alpha.data.fill_(0.7)  # alpha = 0 at init would hide the term from the output
    return model.eval()


# Peaks in batches of 2 vs one batch of 5: the same float32 ops, but kernels chosen for another
# batch size may round differently. Tolerance = this margin times the direct computation's noise
# floor (on inputs moved by 1-2 ulps and with another thread count, conftest.measure_noise_floor);
# a peak of the wrong block or of the wrong quantity (term vs product) is off by 1e-1 or more (the
# 12 peaks here differ pairwise by >= 15%), far above the 1e-3 a tolerance may reach. On 5
# emulated CPUs (AVX512, AVX2 and no-SIMD ATen kernels, oneDNN at AVX2, 1 and 2 threads) the batched
# peaks differed by at most 0.6x the floor; 10x covers a worse rounding draw.
_PEAK_MARGIN = 10.0
_PEAK_FAULT = 1e-3


def test_peaks_match_a_direct_computation_of_each_block(noise_floor):
    model = _model()
    x = torch.randn(5, 3, 8, 8)
    got = second_order_peaks(model, x, batch_size=2)  # batching must not change a max

    def direct(rel):
        """Block by block with the block's own sub-modules: {block: {kind: peak}}."""
        expected, inputs = {}, {}
        hooks = [b.register_forward_pre_hook(lambda m, i, n=n: inputs.__setitem__(n, i[0]))
                 for n, b in model.named_modules() if isinstance(b, NewtonBlock)]
        with torch.no_grad():
            model(x * (1 + rel))
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
        return expected

    def rel_gap(a, b):
        return max(abs(a[n][k] / b[n][k] - 1) for n in a for k in a[n])

    expected = direct(0.0)
    floor = noise_floor(direct, rel_gap, at_least=1.2e-7)
    tol = _PEAK_MARGIN * floor
    assert tol < _PEAK_FAULT, f"noise floor {floor:.3g} too high to tell one peak from another"
    assert set(got["blocks"]) == set(expected) and len(expected) == 4
    gap = rel_gap(got["blocks"], expected)
    assert gap <= tol, f"batched peaks differ by {gap:.3g}; noise floor {floor:.3g}, tolerance {tol:.3g}"
    assert got["peak"]["product"] == max(v["product"] for v in got["blocks"].values())
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
