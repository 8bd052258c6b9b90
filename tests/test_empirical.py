"""The empirical checks: paired statistics, verdict rules, the check registry, verdicts from a store."""
import json
import math
import time

import numpy as np
import pytest

from experiments.audit.datasets import full_dataset
from experiments.audit.empirical import build_sweep, run_empirical, verdict_from_store
from experiments.audit.stats import combine_statuses, judge, judge_stability, paired_stats
from experiments.claims import CLAIMS, Claim, Comparison, EmpiricalCheck, ProfileSpec, Region, get_claim
from experiments.runs.store import RunDir

# t_{0.975, 2} from a table (not from scipy, which the code under test uses).
T975_DF2 = 4.302652729911275


# --- statistics and rules ------------------------------------------------------------------------

def test_paired_stats_matches_the_t_interval_computed_by_hand():
    st = paired_stats([1.0, 2.0, 3.0])
    half = T975_DF2 * 1.0 / math.sqrt(3)  # sd of 1, 2, 3 is exactly 1
    assert st.n == 3 and st.mean == pytest.approx(2.0) and st.std == pytest.approx(1.0)
    # 1e-9: a t quantile from scipy agrees with the table to ~1e-15.
    assert st.ci_low == pytest.approx(2.0 - half, abs=1e-9) and st.ci_high == pytest.approx(2.0 + half, abs=1e-9)


@pytest.mark.parametrize("diffs, region, expected", [
    ([2.0, 2.1, 1.9], Region(lo=0.0), "holds"),          # CI ~[1.75, 2.25] inside (0, inf)
    ([2.0, 2.1, 1.9], Region(hi=0.0), "fails"),          # ... wholly above the region (-inf, 0)
    ([2.0, 2.1, 1.9], Region(-1.0, 1.0), "fails"),       # ... above a two-sided tolerance
    ([2.0, 2.1, 1.9], Region(lo=1.9), "inconclusive"),   # ... straddles the boundary 1.9
    ([1.0, 2.0, 3.0], Region(lo=0.0), "inconclusive"),   # CI [-0.48, 4.48] contains 0
    ([-0.2, 0.1, 0.05, -0.1], Region(lo=-1.0), "holds"),  # "matches within 1 pt": CI well inside
    ([5.0], Region(lo=0.0), "inconclusive"),             # one seed: no CI, never decided
])
def test_judge_holds_fails_or_is_inconclusive(diffs, region, expected):
    assert judge(paired_stats(diffs), region) == expected


def test_ci_excludes_and_contains_as_its_width_says():
    # The same mean with larger spread must widen the CI until it contains 0.
    narrow, wide = paired_stats([1.0, 1.1, 0.9]), paired_stats([1.0, 3.0, -1.0])
    assert narrow.ci_low > 0 and wide.ci_low < 0 < wide.ci_high


def test_paired_stats_rejects_bad_input():
    with pytest.raises(ValueError, match="differences is empty"):
        paired_stats([])
    with pytest.raises(ValueError, match="differences must be finite"):
        paired_stats([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        paired_stats([1.0, 2.0], confidence=1.5)
    with pytest.raises(ValueError, match="lo < hi"):
        Region(1.0, 0.0)


def test_combine_statuses():
    assert combine_statuses(["holds", "holds"]) == "holds"
    assert combine_statuses(["holds", "inconclusive"]) == "inconclusive"
    assert combine_statuses(["inconclusive", "fails"]) == "fails"


# --- the registry --------------------------------------------------------------------------------

EMPIRICAL = [c for c in CLAIMS if isinstance(c.check, EmpiricalCheck)]
CHECKS = [c.check for c in EMPIRICAL]


def test_every_empirical_claim_has_a_check_with_both_profiles_or_a_reason():
    assert len(EMPIRICAL) == 10
    for claim in EMPIRICAL:
        check = claim.check
        for ps in (check.quick, check.full):
            assert ps.sweep is not None or len(ps.reason) > 30, (claim.id, ps.reason)
            if ps.sweep is not None and not check.qualitative:
                assert ps.comparisons or check.judge_fn is not None, claim.id


def test_quick_specs_use_cpu_data_and_enough_seeds_and_say_analogue():
    for check in CHECKS:
        if check.quick.sweep is None:
            continue
        spec = build_sweep(check, "quick")
        assert spec.base["dataset"] in ("digits", "synthetic"), check.name
        # A t interval needs >= 3 pairs to decide anything but huge effects; NRL-fp16 counts overflows
        # (no interval) and keeps 2 seeds of its costly float16 runs.
        assert len(spec.seeds) >= (3 if check.quick.comparisons else 2), check.name
        assert "analogue" in check.quick.setting and "not the paper's CIFAR setting" in check.quick.setting


def test_full_specs_use_cifar_on_the_gpu_settings(tmp_path):
    from tests.test_data_cifar import fake_cifar100

    (tmp_path / "cifar10-jpeg.zip").write_bytes(b"")
    fake_cifar100(tmp_path)  # beside the zip: where NRL-c100 looks for CIFAR-100
    budgeted = {"nrl-params", "nrl-linear", "rn-cifar", "nd-depth", "oai-cifar"}
    for check in CHECKS:
        if check.full.sweep is None:
            assert check.name not in budgeted
            continue
        spec = build_sweep(check, "full", tmp_path / "cifar10-jpeg.zip")
        expected = "cifar100" if check.name == "nrl-c100" else "cifar10_jpeg"
        assert spec.base["dataset"] == expected and spec.base["augment"] is True, check.name
        # NRL-fp16 is about float16 itself; every other full run trains in bf16.
        precision = "fp16" if check.name == "nrl-fp16" else "bf16"
        assert spec.base.get("precision") == precision and spec.base.get("channels_last") is True
        assert len(spec.seeds) >= (3 if check.name == "rn-cifar" else 2), check.name
    rn = build_sweep(get_claim("RN-cifar").check, "full")
    assert [m.name for m in rn.models] == ["resnet20", "resnest20", "bn_resnest20", "a_resnest20"]
    linear = build_sweep(get_claim("NRL-linear").check, "full")
    assert all(m.options.get("activations") is False for m in linear.models)


def test_full_dataset_picks_the_loader_from_the_path(tmp_path):
    z = tmp_path / "c.zip"
    z.write_bytes(b"")
    assert full_dataset(z)[:2] == ("cifar10_jpeg", {"path": str(z)})
    assert "JPEG CIFAR-10 (quality ~75)" == full_dataset(z)[2]
    tree = tmp_path / "tree"
    (tree / "train").mkdir(parents=True)
    (tree / "test").mkdir()
    assert full_dataset(tree)[0] == "cifar10_jpeg"
    tv = tmp_path / "tv"
    (tv / "cifar-10-batches-py").mkdir(parents=True)
    assert full_dataset(tv)[:2] == ("cifar10", {"root": str(tv)})
    with pytest.raises(FileNotFoundError, match="--data .*nowhere: no such file"):
        full_dataset(tmp_path / "nowhere")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(ValueError, match="a file must be a zip"):
        full_dataset(tmp_path / "x.txt")
    with pytest.raises(FileNotFoundError, match="found no CIFAR-10 there"):
        full_dataset(tmp_path)


# --- verdicts from a store -----------------------------------------------------------------------

def _fake_store(store, check, profile, acc_of, data_path=None, checkpoint=False):
    """Finished run dirs (config.json, metrics.csv, result.json; no checkpoint) with final test_acc acc_of(label, seed)."""
    from experiments.runs.sweep import expand

    spec = build_sweep(check, profile, data_path)
    ids = []
    for run in expand(spec):
        rd = RunDir(store / "runs" / run.run_id)
        rd.path.mkdir(parents=True)
        rd.config_path.write_text(json.dumps(run.config.to_dict()))
        acc = acc_of(run.label, run.seed)
        rows = [{"epoch": e, "lr": 0.1, "loss": 1.0 / e, "acc": acc, "test_loss": 0.5, "test_acc": acc - 0.1 / e,
                 "seconds": 1.0, "train_seconds": 1.0, "images_per_s": 100.0} for e in range(1, run.config.epochs)]
        rows.append({**rows[-1], "epoch": run.config.epochs, "test_acc": acc})
        rd.write_metrics(rows)
        (rd.path / "result.json").write_text(json.dumps({"finished": True}))
        ids.append(run.run_id)
    return ids


def test_verdict_from_a_store_without_checkpoints_names_its_runs(tmp_path):
    claim = get_claim("NRL-params")
    check = claim.check
    noise = {0: 0.001, 1: -0.002, 2: 0.0, 3: 0.003, 4: -0.001}
    ids = _fake_store(tmp_path, check, "quick",
                      lambda label, seed: 0.95 + noise[seed] + (0.004 if label.startswith("newton_2211") else 0.0))
    out = verdict_from_store(claim, "quick", tmp_path)
    assert out.status == "holds", out.evidence
    assert sorted(out.runs) == sorted(ids) and len(ids) == 12  # 5 seeds x 2 models + the 2 seed-0 twins
    assert "stable under float noise" in out.evidence
    assert "analogue on digits" in out.evidence and "paper +0.0 pts" in out.evidence
    cmp = out.details["comparisons"][0]
    assert cmp["n"] == 5 and cmp["mean"] == pytest.approx(0.4)
    assert out.details["effect"] == pytest.approx(0.4) and out.details["n_seeds"] == 5


def test_verdict_fails_when_the_block_is_clearly_worse_on_the_full_profile(tmp_path):
    (tmp_path / "c.zip").write_bytes(b"")
    claim = get_claim("NRL-params")
    check = claim.check
    _fake_store(tmp_path / "store", check, "full",
                lambda label, seed: 0.90 + 0.001 * seed - (0.05 if label == "newton_2211" else 0.0),
                data_path=tmp_path / "c.zip")
    out = verdict_from_store(claim, "full", tmp_path / "store", tmp_path / "c.zip")
    assert out.status == "fails" and "JPEG CIFAR-10 (quality ~75)" in out.evidence
    assert "-5.00 pts" in out.evidence and "10 epochs" in out.evidence


def test_one_sample_check_and_missing_runs(tmp_path):
    claim = get_claim("IM-cifar")
    check = claim.check
    out = verdict_from_store(claim, "quick", tmp_path)
    assert out.status == "not run" and "6 runs of 6 missing" in out.evidence  # 5 seeds + the seed-0 twin
    _fake_store(tmp_path, check, "quick", lambda label, seed: 0.97 + 0.002 * seed)
    out = verdict_from_store(claim, "quick", tmp_path)
    # seeds 0..4: mean accuracy 0.97 + 0.002 * 2 = 97.40%
    assert out.status == "holds" and "identity_resnet test accuracy: 97.40%" in out.evidence


def test_full_profile_without_a_gpu_is_not_run_with_the_reason(tmp_path):
    out = run_empirical(get_claim("OAI-cifar"), "full", tmp_path, device=None, data_path=None, progress=False)
    assert out.status == "not run"
    assert "needs a GPU" in out.evidence and "4 runs of 4 missing" in out.evidence
    assert "--device cuda" in out.evidence and not (tmp_path / "runs").exists()


# --- one tiny analogue end to end ------------------------------------------------------------------

TINY = Claim("RN-cifar", "test", "a tiny analogue", "empirical", EmpiricalCheck(
    "tiny",
    quick=ProfileSpec(
        {"name": "tiny-test", "seeds": [0, 1, 2],
         "base": {"dataset": "synthetic", "dataset_options": {"n_train": 48, "n_test": 32, "num_classes": 3},
                  "epochs": 1, "batch_size": 16, "lr": 0.05},
         "models": [{"label": "standard", "name": "resnet20", "options": {"width": 2}},
                    {"label": "a_resnest", "name": "a_resnest20", "options": {"width": 2}}]},
        (Comparison("a_resnest", "standard", Region(-50.0), "-0.13 pts", "A-ResNEst not far below"),),
        "analogue on synthetic data, width 2, 1 epoch; not the paper's CIFAR setting"),
    full=ProfileSpec(None, reason="test check: no full profile")))


def test_tiny_quick_analogue_trains_judges_and_reuses_its_runs(tmp_path):
    out = run_empirical(TINY, "quick", tmp_path, progress=False, log=lambda *_: None)
    assert out.status in ("holds", "fails", "inconclusive") and len(out.runs) == 6
    assert out.details["comparisons"][0]["n"] == 3
    metrics = [tmp_path / "runs" / r / "metrics.csv" for r in out.runs]
    stamps = [m.stat().st_mtime_ns for m in metrics]
    again = run_empirical(TINY, "quick", tmp_path, progress=False, log=lambda *_: None)
    assert [m.stat().st_mtime_ns for m in metrics] == stamps  # reused, never retrained
    assert again.details["comparisons"][0]["values"] == out.details["comparisons"][0]["values"]
    assert np.isfinite(again.details["effect"])


def test_deadline_stops_training_before_it_starts(tmp_path):
    out = run_empirical(TINY, "quick", tmp_path, progress=False, deadline=time.monotonic() - 1,
                        log=lambda *_: None)
    assert out.status == "not run" and "stopped by --max-minutes before training 6 runs of 6" in out.evidence


# --- the full profile's plumbing, end to end on the CPU ----------------------------------------------

def test_full_profile_path_runs_end_to_end_on_tiny_cifar_pickles(tmp_path, monkeypatch):
    """What a GPU session runs (full spec: CIFAR loader from --data, bf16 + channels_last settings,
    the sweep, the risk-gap artefacts from checkpoints, the verdict from the store), shrunk to 1 epoch
    of 2 seeds on 20 fake CIFAR images and run on the CPU, so that plumbing errors show here and not
    on the clock of a lent GPU. The numbers mean nothing; the test checks that every stage ran."""
    import dataclasses

    import experiments.audit.empirical as emp
    from tests.test_data_cifar import fake_cifar10

    fake_cifar10(tmp_path / "data", n_batch=4, n_test=6)
    real_claim = get_claim("RN-cifar")
    real = real_claim.check
    sweep = dict(real.full.sweep)
    sweep["seeds"] = [0, 1]
    sweep["base"] = {**sweep["base"], "epochs": 1, "batch_size": 8}
    sweep["models"] = [m for m in sweep["models"] if m["label"] in ("standard", "a_resnest")]
    comparisons = tuple(c for c in real.full.comparisons if c.block == "a_resnest")
    tiny = dataclasses.replace(real_claim, check=dataclasses.replace(
        real, full=dataclasses.replace(real.full, sweep=sweep, comparisons=comparisons)))
    monkeypatch.setattr(emp, "_cannot_train", lambda profile, device, train: "")
    out = run_empirical(tiny, "full", tmp_path / "store", device="cpu", data_path=tmp_path / "data",
                        progress=False, log=lambda *_: None)
    assert out.status in ("holds", "fails", "inconclusive"), out.evidence
    assert len(out.runs) == 4 and out.details["comparisons"][0]["n"] == 2
    for run_id in out.runs:
        rd = tmp_path / "store" / "runs" / run_id
        config = json.loads((rd / "config.json").read_text())
        assert config["dataset"] == "cifar10" and config["precision"] == "bf16"
        assert (rd / "result.json").exists() and (rd / "risk_gap.json").exists()
    assert "CIFAR-10 (original pickles)" in out.evidence


def test_nrl_c100_finds_cifar100_beside_data_or_says_where_it_looked(tmp_path, monkeypatch):
    from experiments.audit.datasets import cifar100_dataset
    from tests.test_data_cifar import fake_cifar100

    monkeypatch.setenv("BLOCKAUDIT_DATA", str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c10").mkdir()
    (tmp_path / "c10" / "cifar10-jpeg.zip").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"needs CIFAR-100 .*looked in: .*c10/cifar-100-python"):
        build_sweep(get_claim("NRL-c100").check, "full", tmp_path / "c10" / "cifar10-jpeg.zip")
    fake_cifar100(tmp_path / "c10")
    for given in (tmp_path / "c10" / "cifar10-jpeg.zip", tmp_path / "c10", tmp_path / "c10" / "cifar-100-python"):
        assert cifar100_dataset(given) == ("cifar100", {"root": str(tmp_path / "c10" / "cifar-100-python")},
                                           "CIFAR-100 (original pickles)")
    spec = build_sweep(get_claim("NRL-c100").check, "full", tmp_path / "c10")
    assert [m.label for m in spec.models] == ["resnet34", "newton_3432", "resnet18_linear", "newton_1111_linear"]


def test_full_profile_c100_path_runs_end_to_end_on_tiny_cifar100_pickles(tmp_path, monkeypatch):
    """NRL-c100's GPU path (CIFAR-100 found beside --data, 100-class heads, both comparisons) on
    fake pickles, width 2, 1 epoch, 2 seeds, on the CPU."""
    import dataclasses

    import experiments.audit.empirical as emp
    from tests.test_data_cifar import fake_cifar100

    fake_cifar100(tmp_path / "data", n_train=16, n_test=6)
    real_claim = get_claim("NRL-c100")
    real = real_claim.check
    sweep = dict(real.full.sweep)
    sweep["seeds"] = [0, 1]
    sweep["base"] = {**sweep["base"], "epochs": 1, "batch_size": 8}
    sweep["models"] = [{**m, "options": {**m["options"], "width": 2}} for m in sweep["models"]]
    tiny = dataclasses.replace(real_claim, check=dataclasses.replace(real, full=dataclasses.replace(real.full, sweep=sweep)))
    monkeypatch.setattr(emp, "_cannot_train", lambda profile, device, train: "")
    out = run_empirical(tiny, "full", tmp_path / "store", device="cpu", data_path=tmp_path / "data",
                        progress=False, log=lambda *_: None)
    assert out.status in ("holds", "fails", "inconclusive"), out.evidence
    assert len(out.runs) == 8 and [c["n"] for c in out.details["comparisons"]] == [2, 2]
    assert "CIFAR-100 (original pickles)" in out.evidence
    config = json.loads((tmp_path / "store" / "runs" / out.runs[0] / "config.json").read_text())
    assert config["dataset"] == "cifar100"


# --- stability under float noise ---------------------------------------------------------------------

def test_stability_shifts_the_ci_by_two_noise_standard_errors():
    st = paired_stats([0.2, 0.4, 0.6, 0.8, 1.0])  # mean 0.6, CI [0.21, 0.99]
    assert judge(st, Region(lo=0.0)) == "holds"
    # shift = 2 * 0.5 / sqrt(5) = 0.447 > 0.21 - 0: moved down, the CI straddles 0
    shaky = judge_stability(st, Region(lo=0.0), spread=0.5)
    assert not shaky.stable and shaky.shift == pytest.approx(2 * 0.5 / 5 ** 0.5)
    assert (shaky.status_down, shaky.status_up) == ("inconclusive", "holds")
    assert "unstable under float noise" in shaky.text()
    firm = judge_stability(st, Region(lo=0.0), spread=0.1)  # shift 0.089 < 0.21
    assert firm.stable and (firm.status_down, firm.status_up) == ("holds", "holds")
    # an undecided CI that a shift would decide is unstable too: its status depends on the machine
    assert not judge_stability(paired_stats([-0.1, 0.3, 0.5, 0.9, 1.0]), Region(lo=0.0), 2.0).stable
    with pytest.raises(ValueError, match="spread"):
        judge_stability(st, Region(lo=0.0), spread=-1.0)


def _near_boundary(label, seed, twin_moves):
    # newton_2211 0.3-0.4 pts behind resnet18 on every seed: CI [-0.41, -0.27] holds against (-1, inf)
    # 0.59 pts inside the region; a twin moving by `twin_moves` decides whether that is stable.
    base = 0.95 + 0.001 * seed
    if label.startswith("newton_2211"):
        base -= 0.003 + 0.001 * (seed % 2)
    if label.endswith("+ulp") and label.startswith("newton"):
        base += twin_moves
    return base


@pytest.mark.parametrize("twin_moves, expected", [(0.0, "holds"), (0.03, "inconclusive")])
def test_a_verdict_that_float_noise_could_flip_is_inconclusive(tmp_path, twin_moves, expected):
    claim = get_claim("NRL-params")
    check = claim.check
    _fake_store(tmp_path, check, "quick", lambda label, seed: _near_boundary(label, seed, twin_moves))
    out = verdict_from_store(claim, "quick", tmp_path)
    cmp = out.details["comparisons"][0]
    assert judge(paired_stats(cmp["values"]), Region(-1.0)) == "holds"  # as judged without the probe
    assert out.status == expected, out.evidence
    assert cmp["stability"]["spread"] == pytest.approx(max(100 * twin_moves, 100 / 360))  # floor: 1 of 360 images
    if expected == "inconclusive":
        assert "unstable under float noise: twin spread 3.00 pts per seed" in out.evidence


def test_full_profile_says_no_noise_probe_ran(tmp_path):
    (tmp_path / "c.zip").write_bytes(b"")
    claim = get_claim("NRL-params")
    check = claim.check
    _fake_store(tmp_path / "store", check, "full", lambda label, seed: 0.90 + 0.001 * seed,
                data_path=tmp_path / "c.zip")
    out = verdict_from_store(claim, "full", tmp_path / "store", tmp_path / "c.zip")
    assert "No float-noise probe ran for this profile" in out.evidence
    assert out.details["comparisons"][0]["stability"] is None
