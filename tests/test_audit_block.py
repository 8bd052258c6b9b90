"""`blockaudit audit-block`: a user's block against a baseline, with their claims (experiments.audit.block)."""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

from experiments.audit.block import CHECKS, BlockAuditResult, audit_block, load_spec
from experiments.cli import main
from tests.test_data_cifar import fake_cifar10

BLOCK = '''
from torch import nn


class Plain(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False))
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))

    def forward(self, x):
        return self.shortcut(x) + self.body(x)


class WideConv(Plain):
    def forward_with_feature(self, x):  # ResNEst-shaped: (x_next, v), v the residual branch
        v = self.body(x)
        return self.shortcut(x) + v, v


class Flat(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(x)


def tiny_model(num_classes=10, width=4, in_channels=3):
    return nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(width, num_classes))


def wrong_head(num_classes=10):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes + 1))
'''

SPEC = '''
[[claims]]
id = "MY-params"
statement = "the block has fewer parameters than the baseline's"
check = "params"
region = ["-inf", 1.0]

[[claims]]
id = "MY-acc"
statement = "any accuracy"
check = "accuracy"
region = [-100, "inf"]

[[claims]]
id = "MY-gap"
statement = "any risk gap"
check = "risk_gap"
region = ["-inf", "inf"]
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "blocks.py").write_text(textwrap.dedent(BLOCK))
    (tmp_path / "spec.toml").write_text(textwrap.dedent(SPEC))
    return tmp_path


def test_one_call_gives_every_check_and_a_verdict_per_claim_and_a_second_trains_nothing(files, monkeypatch):
    # the block named by a path relative to the working directory, as users do (the notebook finds it too)
    monkeypatch.chdir(files)
    kwargs = dict(spec="spec.toml", seeds=2, epochs=1, width=4, store="store", out="out", progress=False)
    result = audit_block("blocks.py:WideConv", "resnet20", **kwargs)
    frame = result.to_pandas()
    assert set(frame["check"]) == set(CHECKS)  # WideConv returns its features: the risk gap is measured too
    verdicts = dict(zip(frame["claim"], frame["verdict"]))
    # One 3x3 conv per block instead of two: fewer parameters on every seed, so the exact ratio is < 1
    # (and the twins' parameter counts are the same: spread 0, stable).
    assert verdicts["MY-params"] == "holds" and verdicts["MY-acc"] in ("holds", "inconclusive")
    assert verdicts["MY-gap"] == "holds"  # the whole line is the region
    assert set(frame.loc[frame["claim"] == "", "verdict"]) == {"measured"}
    params = frame.set_index("claim").loc["MY-params"]
    assert params["spread"] == 0 and len(params["values"]) == 2
    assert frame.set_index("check").loc["accuracy", "spread"] >= 100 / 360  # floored at one test image
    payload = json.loads((files / "out" / "block_audit.json").read_text())
    # 4 models x 2 seeds and the 4 float-noise twins of seed 0
    assert payload["meta"]["baseline"] == "resnet20" and len(payload["meta"]["runs"]) == 12
    assert "| params |" in (files / "out" / "BLOCK_AUDIT.md").read_text()
    assert (files / "out" / "block_audit.png").stat().st_size > 10_000  # training curves and ratio checks
    # the executed notebook: every code cell ran, figures included
    nb = json.loads((files / "out" / "block_audit.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(c["execution_count"] for c in code)
    assert sum("image/png" in o.get("data", {}) for c in code for o in c["outputs"]) >= 3
    assert (files / "out" / "block_audit.html").exists()
    reloaded = BlockAuditResult.read(files / "out")
    assert reloaded.verdicts() == result.verdicts() and len(reloaded.curves) == len(result.curves)
    stamps = {p: p.stat().st_mtime_ns for p in (files / "store" / "runs").glob("*/metrics.csv")}
    probes = {p: p.stat().st_mtime_ns for p in (files / "store" / "runs").glob("*/block_probes.json")}
    again = audit_block("blocks.py:WideConv", "resnet20", **{**kwargs, "out": None})
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert {p: p.stat().st_mtime_ns for p in probes} == probes  # nothing measured again
    assert again.to_pandas()["effect"].round(9).tolist() == frame["effect"].round(9).tolist()


def test_a_block_without_features_gets_no_risk_gap_and_a_claim_on_it_is_not_run(files):
    from analysis.models import build_model
    from experiments.audit.block import BlockClaim, _row
    from experiments.audit.block_probes import resnest_shaped
    from experiments.claims.types import Region

    assert resnest_shaped(build_model("block_resnet", block=f"{files}/blocks.py:WideConv", width=4)) == (True, "")
    shaped, why = resnest_shaped(build_model("block_resnet", block=f"{files}/blocks.py:Plain", width=4))
    assert not shaped and "Plain has no forward_with_feature(x) -> (x_next, v)" in why
    row = _row("risk_gap", None, BlockClaim("G", "", "risk_gap", Region()), "not run", why)
    assert row["verdict"] == "not run" and row["stability"] == why


def test_a_whole_model_factory_replaces_the_skeleton_and_a_wrong_one_is_named(files):
    from analysis.models import build_model
    from analysis.models.skeleton import factory_kind, load_block

    assert factory_kind(load_block(f"{files}/blocks.py:tiny_model").factory) == "model"
    assert factory_kind(load_block(f"{files}/blocks.py:WideConv").factory) == "block"
    model = build_model("block_resnet", block=f"{files}/blocks.py:tiny_model", width=4, num_classes=7)
    assert model(torch.randn(3, 3, 8, 8)).shape == (3, 7) and model[0].out_channels == 4
    with pytest.raises(ValueError, match=r"model .*wrong_head\(num_classes=10\) maps an input of shape "
                                         r"\(2, 3, 32, 32\) to \(2, 11\); expected logits of shape \(2, 10\)"):
        build_model("block_resnet", block=f"{files}/blocks.py:wrong_head")


@pytest.mark.parametrize("text, message", [
    ('[[claims]]\nid = "A"\ncheck = "params"\nregion = [0, 1]\ncolour = "red"\n',
     "unknown key(s) 'colour'; valid keys: id, statement, check, region"),
    ('[[claims]]\nid = "A"\ncheck = "speed"\nregion = [0, 1]\n',
     "unknown check 'speed'; valid checks: accuracy, linear_capacity, params, flops, throughput, fp16_headroom"),
    ('claims = []\nblocks = 1\n', "unknown key(s) 'blocks'; valid keys: claims"),
    ('[[claims]]\nid = "A"\ncheck = "params"\nregion = [0, "big"]\n', "a region bound must be a number"),
])
def test_a_bad_spec_names_the_key_and_the_valid_ones(tmp_path, text, message):
    (tmp_path / "spec.toml").write_text(text)
    with pytest.raises(ValueError) as info:
        load_spec(tmp_path / "spec.toml")
    assert message in str(info.value)


def test_bad_inputs_give_one_line_errors_from_the_command(files, capsys):
    code = main(["audit-block", "--block", f"{files}/blocks.py:Flat", "--store", str(files / "s"),
                 "--out", str(files / "o"), "--no-progress"])
    assert code == 2
    assert "maps an input of shape (2, 8, 8, 8) to (2, 16, 8, 8); the skeleton expects (2, 16, 4, 4)" in \
        capsys.readouterr().err
    with pytest.raises(ValueError, match="baseline 'vgg11' is not in the zoo of skeletons; valid baselines: "
                                         "resnet20, resnet56, resnet110"):
        audit_block(f"{files}/blocks.py:WideConv", "vgg11")
    with pytest.raises(FileNotFoundError, match="spec file 'nope.toml' not found"):
        audit_block(f"{files}/blocks.py:WideConv", spec="nope.toml")


def test_the_shipped_example_block_fits_and_its_spec_loads():
    from pathlib import Path

    from analysis.models import build_model, count_parameters

    spec = Path(__file__).resolve().parents[1] / "experiments" / "examples" / "se_block.toml"
    assert [c.check for c in load_spec(spec)] == ["accuracy", "params", "flops", "fp16_headroom", "risk_gap"]
    model = build_model("block_resnet", block="experiments.examples.se_block:SEBlock", width=8)
    assert 1.0 < count_parameters(model) / count_parameters("resnet20", width=8) < 1.1


def test_the_paper_claim_example_trains_the_papers_nets_and_restates_its_comparison():
    """experiments/examples/a_resnest.*: the same net, seed for seed, as RN-cifar's quick check, and the
    same comparison (check, region) as the one in experiments/claims/rn.py."""
    from pathlib import Path

    from analysis.models import build_model
    from experiments.audit.block import _sweep
    from experiments.claims.rn import RN_CIFAR_CHECK

    examples = Path(__file__).resolve().parents[1] / "experiments" / "examples"
    ref = f"{examples}/a_resnest.py:a_resnest20"
    for seed in (0, 3):
        torch.manual_seed(seed)
        ours = build_model("block_resnet", block=ref, width=8).state_dict()
        torch.manual_seed(seed)
        theirs = build_model("a_resnest20", width=8).state_dict()
        assert list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    (claim,) = load_spec(examples / "a_resnest.toml")
    quick = RN_CIFAR_CHECK.quick
    (cmp,) = [c for c in quick.comparisons if c.block == "a_resnest"]
    assert (claim.check, claim.region) == (cmp.check, cmp.region)
    # the same training settings, seeds and twins
    sweep = _sweep(ref, "resnet20", "quick", 5, 8, 6, None)
    assert sweep.base == quick.sweep["base"] and list(sweep.seeds) == quick.sweep["seeds"]


def test_the_full_profile_trains_on_cifar_pickles_with_the_block_substituted(files):
    # The GPU profile's path end to end, on the CPU: torchvision's cifar-10-batches-py (a tiny fake of
    # it), FULL_BASE's bf16 autocast, augmentation and batch 256, the block in the skeleton.
    fake_cifar10(files / "data", n_batch=8, n_test=12)
    result = audit_block(f"{files}/blocks.py:Plain", "resnet20", profile="full", device="cpu", seeds=2, epochs=1,
                         width=4, data=files / "data", store=files / "s", progress=False)
    assert "cifar10" in result.meta["setting"] and result.meta["profile"] == "full"
    configs = [json.loads(p.read_text()) for p in (files / "s" / "runs").glob("*/config.json")]
    assert len(configs) == 12 and {c["device"] for c in configs} == {"cpu"}
    blocks = [c for c in configs if c["model"] == "block_resnet"]
    assert blocks and all(c["model_options"]["block"].endswith("blocks.py:Plain") for c in blocks)
    frame = result.to_pandas().set_index("check")
    assert frame.loc["params", "effect"] < 1  # one conv per block instead of two: the block is really in
    assert frame.loc["accuracy", "spread"] >= 100 / 12 - 1e-9  # floored at one of the 12 test images
    with pytest.raises(FileNotFoundError, match="--data .*missing: no such file or folder"):
        audit_block(f"{files}/blocks.py:Plain", "resnet20", profile="full", data=files / "missing", store=files / "s")
