"""A user's block in a baseline's skeleton (analysis.models.skeleton): controlled, hashed, checked, reloadable."""
from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from analysis.models import build_model, count_parameters, register_model
from analysis.models.skeleton import block_options, load_block
from experiments.runs.store import TrainConfig, load_run
from experiments.runs.sweep import run_id_for
from experiments.runs.train import train

SE_BLOCK = '''
import torch
from torch import nn


class SEBlock(nn.Module):
    """Pre-activation basic block with squeeze-and-excitation on the residual branch."""

    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False))
        self.se = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(out_channels, max(out_channels // 4, 1), 1),
                                nn.ReLU(), nn.Conv2d(max(out_channels // 4, 1), out_channels, 1), nn.Sigmoid())
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))

    def forward(self, x):
        r = self.body(x)
        return self.shortcut(x) + r * self.se(r)


class NoStride(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(x)


class Exploding(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1)

    def forward(self, x):
        return self.conv(x) * float("inf")


class OneArgument(nn.Module):
    def __init__(self, channels):
        super().__init__()
'''


@pytest.fixture
def block_file(tmp_path):
    path = tmp_path / "my_blocks.py"
    path.write_text(textwrap.dedent(SE_BLOCK))
    return path


def test_a_user_block_replaces_the_baseline_block_and_nothing_else(block_file):
    model = build_model("block_resnet", num_classes=10, block=f"{block_file}:SEBlock", width=8)
    baseline = build_model("resnet20", num_classes=10, width=8)
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    assert len(model.blocks) == len(baseline.blocks) == 9
    ours, theirs = model.state_dict(), baseline.state_dict()
    for key in [k for k in theirs if not k.startswith("blocks.")]:  # stem and head: the baseline's own
        assert ours[key].shape == theirs[key].shape, key
    assert count_parameters(model) != count_parameters(baseline)


def test_the_baselines_own_block_gives_the_baseline_exactly():
    # Controlled: the skeleton with PreActBasicBlock is ResNet-20, key for key and shape for shape.
    model = build_model("block_resnet", block="analysis.models.blocks:PreActBasicBlock", width=8)
    baseline = build_model("resnet20", width=8)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in
                                                                   baseline.state_dict().items()}
    model.load_state_dict(baseline.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(model.eval()(x), baseline.eval()(x))


@pytest.mark.parametrize("name, error, text", [
    ("NoStride", ValueError, "block 3: NoStride(8, 16, 2) maps an input of shape (2, 8, 8, 8) to (2, 16, 8, 8); "
                             "the skeleton expects (2, 16, 4, 4)"),
    ("Exploding", ValueError, "returns non-finite values at initialisation"),
    ("OneArgument", TypeError, "a block must be built as block(in_channels, out_channels, stride)"),
    ("Missing", ValueError, "'Missing' is not defined in"),
])
def test_a_block_that_does_not_fit_is_refused_with_what_was_expected(block_file, name, error, text):
    with pytest.raises(error) as info:
        build_model("block_resnet", block=f"{block_file}:{name}", width=8)
    assert text in str(info.value)
    if name == "Missing":  # the classes it could have meant
        assert "NoStride, OneArgument, SEBlock" in str(info.value)


def test_bad_references_name_what_was_tried(tmp_path):
    with pytest.raises(FileNotFoundError, match="block file 'nowhere.py' not found"):
        load_block("nowhere.py:Block")
    with pytest.raises(ValueError, match="must look like FILE.py:NAME"):
        load_block("just_a_name")
    with pytest.raises(ValueError, match="valid choices|must be one of|baseline"):
        build_model("block_resnet", block="analysis.models.blocks:PreActBasicBlock", baseline="vgg16")


def test_editing_the_block_changes_the_run_id_and_old_runs_refuse_the_new_code(block_file):
    ref = f"{block_file}:SEBlock"
    before = block_options(ref)
    config = TrainConfig(model="block_resnet", model_options={**before, "width": 4}, dataset="synthetic")
    block_file.write_text(block_file.read_text() + "\n# an edit\n")
    after = block_options(ref)
    assert after["block_sha256"] != before["block_sha256"]
    edited = TrainConfig(model="block_resnet", model_options={**after, "width": 4}, dataset="synthetic")
    assert run_id_for("se", config) != run_id_for("se", edited)
    with pytest.raises(ValueError, match="changed since this config was made"):
        build_model("block_resnet", **config.model_options)


def test_a_trained_block_run_and_a_user_model_with_any_head_name_reload(block_file, tmp_path):
    @register_model("test_user_model_head_named_classifier", source="ours", paper="user")
    def user_model(num_classes: int = 10) -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))

    data = {"seed": 0, "n_train": 32, "n_test": 16, "num_classes": 3}
    for name, options in [("block_resnet", {**block_options(f"{block_file}:SEBlock"), "width": 4}),
                          ("test_user_model_head_named_classifier", {})]:
        config = TrainConfig(model=name, model_options=options, dataset="synthetic", dataset_options=data,
                             epochs=1, batch_size=16)
        train(config, tmp_path / name, progress=False)
        model, loaded = load_run(tmp_path / name)
        assert loaded == config
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_linear_mode_removes_every_activation_module_of_the_instance_only(block_file):
    from analysis.models.skeleton import ACTIVATION_MODULES, load_block

    model = build_model("block_resnet", block=f"{block_file}:SEBlock", width=4, activations=False)
    assert not any(isinstance(m, ACTIVATION_MODULES) for m in model.modules())
    fresh = load_block(f"{block_file}:SEBlock").factory(4, 4, 1)  # the user's class is untouched
    assert any(isinstance(m, nn.ReLU) for m in fresh.modules())
    # The baseline's own block without activations is affine in eval mode: f((x + y) / 2) = (f(x) + f(y)) / 2.
    linear = build_model("block_resnet", width=4, activations=False).double().eval()
    x, y = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.randn(2, 3, 32, 32, dtype=torch.float64)
    assert torch.allclose(linear((x + y) / 2), (linear(x) + linear(y)) / 2, atol=1e-10)
