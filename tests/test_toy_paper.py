"""A paper registered from a module of its own gets verdicts with no other file edited.

The toy paper lives in a temporary folder: its claims module (a theory claim and a training
comparison) and its theory-check test module. The audit is given the default registry plus that
module, and must run the toy's pytest check and its training sweep, and write the toy's section.
"""
from __future__ import annotations

import importlib.util
import json
import sys
import textwrap

import pytest

from experiments.audit.run import EmpiricalOptions, run_audit
from experiments.claims import Claim, Paper, TheoryCheck, default_registry

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CLAIMS_MODULE = '''
from pathlib import Path

from experiments.claims.profiles import model
from experiments.claims.types import (Claim, Comparison, EmpiricalCheck, Paper, ProfileSpec, Region,
                                      TheoryCheck)

PAPER = Paper("TOY", "A toy paper, registered by tests/test_toy_paper.py")

# Two seeds of one epoch on 96 synthetic images: seconds, and a CI wide enough that any outcome is possible.
_SWEEP = {"name": "toy-width", "seeds": [0, 1],
          "base": {"dataset": "synthetic", "dataset_options": {"n_train": 64, "n_test": 32, "num_classes": 3},
                   "epochs": 1, "batch_size": 16, "lr": 0.05},
          "models": [model("narrow", "resnet20", width=2), model("wide", "resnet20", width=4)]}
WIDTH_CHECK = EmpiricalCheck(
    "toy-width",
    quick=ProfileSpec(_SWEEP, (Comparison("wide", "narrow", Region(-100.0), "-", "any difference agrees"),),
                      "toy analogue on synthetic data", probe_seeds=(0,)),
    full=ProfileSpec(None, reason="the toy paper has no full profile"))

CLAIMS = (
    Claim("TOY-square", "eq (1)", "x^2 >= 0 for every real x", "theorem",
          TheoryCheck(tests=Path(__file__).parent / "toy_checks")),
    Claim("TOY-width", "Table 1", "a wider ResNet-20 is not worse by more than 100 points", "empirical",
          WIDTH_CHECK, "CI of wide - narrow inside (-100, +inf) pts"),
)
'''

TEST_MODULE = '''
import pytest
from hypothesis import given, strategies as st


@pytest.mark.claim("TOY-square")
@given(st.floats(-1e6, 1e6))
def test_toy_square_is_non_negative(evidence, x):
    """TOY-square: x^2 >= 0 for every real x."""
    evidence.headline("x^2 >= 0 on every example")
    assert x * x >= 0.0
    evidence.add(x * x, "x^2", worst="min")
'''


def _load(path):
    spec = importlib.util.spec_from_file_location("toy_paper_claims", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_a_toy_paper_from_a_temporary_module_gets_verdicts(tmp_path):
    (tmp_path / "toy_checks").mkdir()
    (tmp_path / "toy_checks" / "test_toy.py").write_text(textwrap.dedent(TEST_MODULE))
    (tmp_path / "toy_paper.py").write_text(textwrap.dedent(CLAIMS_MODULE))
    try:
        registry = default_registry().with_module(_load(tmp_path / "toy_paper.py"))
    finally:
        sys.modules.pop("toy_paper_claims", None)
    assert registry.paper_of_check("toy-width") == "TOY"

    result = run_audit("quick", tmp_path / "reports", ["TOY-square", "TOY-width"], progress=False,
                       reproductions=False, log=lambda *_: None, registry=registry,
                       empirical=EmpiricalOptions(store=tmp_path / "runs", workers=1))

    status = {v.claim_id: v for v in result.verdicts}
    assert status["TOY-square"].status == "holds", status["TOY-square"].evidence
    assert "x^2 >= 0 on every example (25 examples)" in status["TOY-square"].evidence  # recorded after all examples
    width = status["TOY-width"]
    # 2 seeds x 2 models + the seed-0 twins of both; any CI lies inside (-100, +inf) unless unstable.
    assert width.status in ("holds", "inconclusive"), width.evidence
    assert len(width.runs) == 6 and width.details["comparisons"][0]["n"] == 2
    markdown = (tmp_path / "reports" / "AUDIT.md").read_text()
    assert "## TOY: A toy paper" in markdown and "TOY-width" in markdown
    payload = json.loads((tmp_path / "reports" / "audit.json").read_text())
    assert {v["claim_id"]: v["paper"] for v in payload["verdicts"]} == {"TOY-square": "TOY", "TOY-width": "TOY"}
    # The runs record the claim and paper they were trained for.
    record = json.loads((tmp_path / "runs" / "runs" / width.runs[0] / "claim.json").read_text())
    assert record["paper"] == "TOY" and "TOY-width" in record["claims"]


def test_a_paper_module_must_define_paper_and_claims(tmp_path):
    (tmp_path / "bad_paper.py").write_text("PAPER = 'TOY'\nCLAIMS = ()\n")
    spec = importlib.util.spec_from_file_location("bad_paper", tmp_path / "bad_paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(TypeError, match=r"must define PAPER = Paper\(id, title\); got str"):
        default_registry().with_module(module)


def test_a_claim_must_belong_to_its_module_paper():
    import types

    module = types.ModuleType("mixed")
    module.PAPER = Paper("TOY", "toy")
    module.CLAIMS = (Claim("RN-T9", "-", "-", "theorem", TheoryCheck()),)
    with pytest.raises(ValueError, match=r"claim ids RN-T9 do not start with 'TOY-'"):
        default_registry().with_module(module)


def test_a_claim_check_must_be_typed():
    with pytest.raises(TypeError, match="check must be a TheoryCheck, Reproduction or EmpiricalCheck; got str"):
        Claim("TOY-x", "-", "-", "theorem", "theory")
