"""`blockaudit audit-block`: a user's block against a baseline, with their claims (experiments.audit.block)."""
from __future__ import annotations

import json
import textwrap

import pytest

from experiments.audit.block import CHECKS, audit_block, load_spec
from experiments.cli import main

BLOCK = '''
from torch import nn


class WideConv(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(),
                                  nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False))
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out_channels
                         else nn.Conv2d(in_channels, out_channels, 1, stride, bias=False))

    def forward(self, x):
        return self.shortcut(x) + self.body(x)


class Flat(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1)

    def forward(self, x):
        return self.conv(x)
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
'''


@pytest.fixture
def files(tmp_path):
    (tmp_path / "blocks.py").write_text(textwrap.dedent(BLOCK))
    (tmp_path / "spec.toml").write_text(textwrap.dedent(SPEC))
    return tmp_path


def test_one_call_gives_every_check_and_a_verdict_per_claim_and_a_second_trains_nothing(files):
    kwargs = dict(spec=files / "spec.toml", seeds=2, epochs=1, width=4, store=files / "store", out=files / "out",
                  progress=False)
    result = audit_block(f"{files}/blocks.py:WideConv", "resnet20", **kwargs)
    frame = result.to_pandas()
    assert set(frame["check"]) == set(CHECKS)
    verdicts = dict(zip(frame["claim"], frame["verdict"]))
    # One 3x3 conv per block instead of two: fewer parameters on every seed, so the exact ratio is < 1.
    assert verdicts["MY-params"] == "holds" and verdicts["MY-acc"] in ("holds", "inconclusive")
    assert set(frame.loc[frame["claim"] == "", "verdict"]) == {"measured"}
    payload = json.loads((files / "out" / "block_audit.json").read_text())
    assert payload["meta"]["baseline"] == "resnet20" and len(payload["meta"]["runs"]) == 8  # 4 models x 2 seeds
    assert "| params |" in (files / "out" / "BLOCK_AUDIT.md").read_text()
    assert (files / "out" / "block_audit.png").stat().st_size > 10_000  # training curves and ratio checks
    stamps = {p: p.stat().st_mtime_ns for p in (files / "store" / "runs").glob("*/metrics.csv")}
    again = audit_block(f"{files}/blocks.py:WideConv", "resnet20", **kwargs)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    assert again.to_pandas()["effect"].round(9).tolist()[:3] == frame["effect"].round(9).tolist()[:3]


@pytest.mark.parametrize("text, message", [
    ('[[claims]]\nid = "A"\ncheck = "params"\nregion = [0, 1]\ncolour = "red"\n',
     "unknown key(s) 'colour'; valid keys: id, statement, check, region"),
    ('[[claims]]\nid = "A"\ncheck = "speed"\nregion = [0, 1]\n',
     "unknown check 'speed'; valid checks: accuracy, params, flops, throughput, fp16_headroom, grad_spread"),
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
    assert [c.check for c in load_spec(spec)] == ["accuracy", "params", "flops", "fp16_headroom"]
    model = build_model("block_resnet", block="experiments.examples.se_block:SEBlock", width=8)
    assert 1.0 < count_parameters(model) / count_parameters("resnet20", width=8) < 1.1
