import json
import textwrap

import pandas as pd
import pytest

from experiments.audit.render import render_markdown
from experiments.audit.run import run_audit
from experiments.audit.theory import CheckOutcome, run_theory_checks, theory_verdict
from experiments.claims import get_claim

CLAIM = get_claim("ND-P1")


def _o(outcome, role="conclusion", msg="", claim="ND-P1"):
    return CheckOutcome(nodeid=f"t.py::test_{outcome}_{role}", claim_ids=(claim,), role=role,
                       summary=f"{role} {outcome}", outcome=outcome, message=msg)


@pytest.mark.parametrize("outcomes, expected", [
    ([_o("passed")], "holds"),
    ([_o("passed"), _o("passed", "assumption")], "holds"),
    ([_o("passed"), _o("failed", msg="assert 0.3 < 1e-9")], "fails"),
    ([_o("passed"), _o("passed", "refutes")], "fails"),
    ([_o("passed"), _o("failed", "assumption")], "inconclusive"),
    ([_o("passed"), _o("error")], "inconclusive"),
    ([_o("skipped", msg="needs a GPU")], "not run"),
    ([_o("passed", claim="ND-hess")], "not run"),
    ([_o("passed", "assumption")], "not run"),
])
def test_theory_verdict_folds_outcomes(outcomes, expected):
    assert theory_verdict(CLAIM, outcomes).status == expected


def test_failing_verdict_carries_the_failure_message_and_what_still_passed():
    v = theory_verdict(CLAIM, [_o("failed", msg="assert 0.3 < 1e-9")])
    assert "assert 0.3 < 1e-9" in v.evidence and "t.py::test_failed_conclusion" in v.check
    v = theory_verdict(CLAIM, [_o("passed", "refutes"), _o("passed")])
    assert v.status == "fails" and v.evidence.endswith("1 other check(s) passed: conclusion passed")


def test_collection_error_makes_the_claim_inconclusive_not_silently_not_run():
    v = theory_verdict(CLAIM, [], ["theory_checks/test_nd.py: ImportError: no module x"])
    assert v.status == "inconclusive" and "ImportError" in v.evidence


FAKE_SUITE = '''
import pytest

@pytest.mark.claim("ND-P1")
def test_nd_p1_holds(record_property):
    """The formula matches autograd."""
    record_property("evidence", "max error 1e-15")
    assert 1 + 1 == 2

@pytest.mark.claim("ND-hess")
def test_nd_hess_broken():
    """The Hessian matches finite differences."""
    assert 0.5 < 1e-9, "Hessian mismatch 0.5"

@pytest.mark.claim("ND-neumann", role="assumption")
def test_nd_neumann_assumption():
    """Without ||A|| < 1 the series diverges."""

@pytest.mark.claim("ND-neumann")
def test_nd_neumann_conclusion():
    """The series converges."""
'''


def test_run_theory_checks_records_markers_outcomes_and_evidence(tmp_path):
    suite = tmp_path / "fake_checks"
    suite.mkdir()
    (suite / "test_fake_audit_suite.py").write_text(textwrap.dedent(FAKE_SUITE))
    run = run_theory_checks(path=suite, quiet=True)
    by_name = {o.nodeid.split("::")[-1]: o for o in run.outcomes}
    assert by_name["test_nd_p1_holds"].outcome == "passed"
    assert by_name["test_nd_p1_holds"].evidence == "max error 1e-15"
    assert by_name["test_nd_hess_broken"].outcome == "failed"
    assert "Hessian mismatch 0.5" in by_name["test_nd_hess_broken"].message
    assert by_name["test_nd_neumann_assumption"].role == "assumption"
    assert theory_verdict(get_claim("ND-P1"), run.outcomes).status == "holds"
    assert theory_verdict(get_claim("ND-hess"), run.outcomes).status == "fails"
    v = theory_verdict(get_claim("ND-neumann"), run.outcomes)
    assert v.status == "holds" and "assumption needed" in v.evidence


def test_run_theory_checks_selects_by_claim_id(tmp_path):
    suite = tmp_path / "fake_checks_sel"
    suite.mkdir()
    (suite / "test_fake_audit_select.py").write_text(textwrap.dedent(FAKE_SUITE))
    run = run_theory_checks(path=suite, quiet=True, select=["ND-P1"])
    ran = {o.nodeid.split("::")[-1] for o in run.outcomes if o.outcome != "not run"}
    assert ran == {"test_nd_p1_holds"}


def test_audit_rejects_unknown_profile_and_claims(tmp_path):
    with pytest.raises(ValueError, match="profile must be one of quick, full; got 'fast'"):
        run_audit("fast", tmp_path)
    with pytest.raises(ValueError, match="unknown claim id.*XX-1"):
        run_audit("quick", tmp_path, ["XX-1"])


def test_full_audit_without_a_gpu_says_why_nothing_ran(tmp_path):
    from experiments.audit.run import EmpiricalOptions

    opts = EmpiricalOptions(store=tmp_path / "store")
    result = run_audit("full", tmp_path, ["NRL-params", "NRL-fp16"], log=lambda *_: None, empirical=opts)
    assert [v.status for v in result.verdicts] == ["not run", "not run"]
    assert "needs a GPU" in result.verdicts[0].evidence and "6 runs of 6 missing from" in result.verdicts[0].evidence
    # NRL-fp16 has a full-profile sweep too (4 labels x 3 seeds): without a GPU its runs are missing.
    assert "needs a GPU" in result.verdicts[1].evidence and "12 runs of 12 missing from" in result.verdicts[1].evidence
    payload = json.loads((tmp_path / "audit.json").read_text())
    assert payload["counts"]["not run"] == 2 and payload["meta"]["store"] == str(tmp_path / "store")
    md = (tmp_path / "AUDIT.md").read_text()
    assert "NRL-params" in md and "NRL-fp16" in md and md == render_markdown(result)
    frame = pd.read_csv(tmp_path / "audit.csv")
    assert {"profile", "effect", "ci_low", "ci_high", "n_seeds", "tolerance", "schedule"} <= set(frame.columns)
    assert list(frame.profile) == ["full", "full"]


def test_audit_carries_the_empirical_statistics_from_a_store(tmp_path):
    """A store of finished runs (no checkpoints) gives a computed verdict with effect, CI and run ids."""
    from experiments.audit.run import EmpiricalOptions
    from test_empirical import _fake_store  # tests/ is on sys.path (rootdir-less test modules)

    # seeds 0..4: differences 1.8, 1.9, 2.0, 2.1, 2.2 points, mean 2.0
    ids = _fake_store(tmp_path / "store", get_claim("OAI-cifar").check, "quick",
                      lambda label, seed: 0.90 + (0.018 + 0.001 * seed if label == "hbnet9" else 0.0))
    result = run_audit("quick", tmp_path, ["OAI-cifar"], log=lambda *_: None,
                       empirical=EmpiricalOptions(store=tmp_path / "store"), train_only=True)
    v = result.verdicts[0]
    assert v.status == "holds" and sorted(v.runs) == sorted(ids)
    row = pd.read_csv(tmp_path / "audit.csv").iloc[0]
    assert row.effect == pytest.approx(2.0) and row.n_seeds == 5 and row.ci_low < 2.0 < row.ci_high
    assert "4 epochs" in row.schedule and "hbnet9 - resnet56" in row.tolerance
    md = (tmp_path / "AUDIT.md").read_text()
    assert "## Empirical comparisons (paired seeds)" in md and "| OAI-cifar | quick | hbnet9 - resnet56 | +2.00 |" in md


def test_train_only_keeps_only_empirical_claims(tmp_path):
    from experiments.audit.run import EmpiricalOptions

    with pytest.raises(ValueError, match="--train-only keeps only empirical claims"):
        run_audit("full", tmp_path, ["ND-P1"], train_only=True, log=lambda *_: None)
    with pytest.raises(ValueError, match="max_minutes must be > 0"):
        run_audit("full", tmp_path, ["NRL-params"], empirical=EmpiricalOptions(max_minutes=0), log=lambda *_: None)


def test_audit_cli_full_profile_on_cpu_and_a_bad_data_path(tmp_path):
    from experiments.cli import main

    code = main(["audit", "--profile", "full", "--train-only", "--claims", "RN-cifar", "--store", str(tmp_path / "s"),
                 "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    v = json.loads((tmp_path / "audit.json").read_text())["verdicts"][0]
    assert v["status"] == "not run" and "12 runs of 12 missing" in v["evidence"]
    assert main(["audit", "--profile", "full", "--data", str(tmp_path / "missing.zip"), "--out", str(tmp_path)]) == 2


def test_audit_command_end_to_end_on_real_theory_checks(tmp_path):
    """`blockaudit audit` on two real claims: exit 0, verdicts computed by the real theory checks."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "experiments.cli", "audit", "--claims", "ND-P1,NRL-block,ND-table2",
                          "--no-reproductions", "--no-progress", "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    payload = json.loads((tmp_path / "audit.json").read_text())
    status = {v["claim_id"]: v["status"] for v in payload["verdicts"]}
    assert status == {"NRL-block": "holds", "ND-P1": "holds", "ND-table2": "not run"}
    nd_p1 = next(v for v in payload["verdicts"] if v["claim_id"] == "ND-P1")
    assert "assumption needed" in nd_p1["evidence"] and "test_nd.py" in nd_p1["check"]
    assert "| ND-P1 | theorem | holds |" in out.stdout
