"""NRL-fp16's check: float16 runs with and without the tanh, judged by whether they overflowed."""
from __future__ import annotations

import dataclasses
import json

import pytest

from experiments.audit.empirical import build_sweep, run_empirical, verdict_from_store
from experiments.claims import get_claim
from experiments.claims.nrl import judge_fp16
from tests.test_empirical import _fake_store

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CLAIM = get_claim("NRL-fp16")
CHECK = CLAIM.check


def _mark(store, ids, label, seeds, nonfinite=True, peak=None):
    for run_id in ids:
        if not run_id.startswith(label + "-s"):
            continue
        seed = int(run_id.split("-s")[1].split("-")[0])
        rd = store / "runs" / run_id
        info = ({"step": 7, "epoch": 0, "where": "module 'blocks.4.n2.0' (Conv2d) is the first whose output is "
                 "non-finite"} if nonfinite and seed in seeds else None)
        (rd / "result.json").write_text(json.dumps({"finished": True, "nonfinite": info}))
        if peak is not None:
            (rd / "fp16_peaks.json").write_text(json.dumps({"peak": {"product": peak, "term": 3.0, "output": 9.0}}))


@pytest.mark.parametrize("plain_bad, tanh_bad, expected", [
    ({1}, set(), "holds"),          # overflow only without the tanh: what the paper reports
    ({1}, {0}, "fails"),            # the tanh did not prevent it
    (set(), {1}, "fails"),
    (set(), set(), "inconclusive"),  # nothing overflowed: "might overflow" is neither shown nor refuted
])
def test_verdict_follows_which_runs_overflowed(tmp_path, plain_bad, tanh_bad, expected):
    ids = _fake_store(tmp_path, CHECK, "quick", lambda label, seed: 0.9)
    _mark(tmp_path, ids, "newton_plain", plain_bad, peak=1234.0)
    _mark(tmp_path, ids, "newton_tanh", tanh_bad, peak=99.0)
    out = verdict_from_store(CLAIM, "quick", tmp_path)
    assert out.status == expected, out.evidence
    for label, bad in (("newton_plain", plain_bad), ("newton_tanh", tanh_bad)):
        said = f"{len(bad)} of 2 runs hit a non-finite loss" if bad else "0 of 2 runs overflowed"  # seeds 0, 1
        assert f"{label}: {said}" in out.evidence
    assert "largest |N1(s)*f| 1.23e+03 (1.9% of 65504)" in out.evidence
    assert out.details["fp16"]["overflowed"] == {"newton_plain": len(plain_bad), "newton_tanh": len(tanh_bad)}
    if plain_bad:
        assert "step 7, module 'blocks.4.n2.0'" in out.evidence
    assert sorted(out.runs) == sorted(ids)


def test_judge_reports_missing_peaks(tmp_path):
    _fake_store(tmp_path, CHECK, "quick", lambda label, seed: 0.9)
    status, text, _ = judge_fp16(build_sweep(CHECK, "quick"), tmp_path)
    assert status == "inconclusive" and "newton_plain: peaks missing" in text


def test_tiny_fp16_check_trains_writes_peaks_and_judges(tmp_path):
    """The quick check's path (fp16 sweep with on_nonfinite=stop, the peaks artefact, the verdict),
    shrunk to width 2, 1 epoch on synthetic data."""
    sweep = dict(CHECK.quick.sweep)
    sweep["base"] = {**sweep["base"], "epochs": 1, "dataset": "synthetic",
                     "dataset_options": {"seed": 0, "n_train": 64, "n_test": 32, "num_classes": 4}}
    sweep["models"] = [{**m, "options": {**m["options"], "width": 2}} for m in sweep["models"]]
    tiny = dataclasses.replace(CLAIM, check=dataclasses.replace(CHECK, quick=dataclasses.replace(CHECK.quick, sweep=sweep)))
    out = run_empirical(tiny, "quick", tmp_path, progress=False, log=lambda *_: None)
    assert out.status in ("holds", "fails", "inconclusive") and len(out.runs) == 4  # 2 models x seeds 0, 1
    for run_id in out.runs:
        rd = tmp_path / "runs" / run_id
        assert json.loads((rd / "config.json").read_text())["precision"] == "fp16"
        peaks = json.loads((rd / "fp16_peaks.json").read_text())
        assert peaks["peak"]["product"] > 0 and peaks["checkpoint_epoch"] == 1
        assert (len(peaks["tanh"]) > 0) == run_id.startswith("newton_tanh")
    assert "Float16 headroom" in out.evidence


def test_full_profile_fp16_path_runs_on_tiny_cifar_pickles(tmp_path, monkeypatch):
    """What a GPU session runs for NRL-fp16 (CIFAR loader from --data, fp16 + channels_last settings,
    the peaks artefact from checkpoints with the full profile's sample cap, the verdict), shrunk to
    width 2, 1 epoch, 2 seeds on fake CIFAR pickles, on the CPU: plumbing errors show here first."""
    import experiments.audit.empirical as emp
    from tests.test_data_cifar import fake_cifar10

    fake_cifar10(tmp_path / "data", n_batch=4, n_test=6)
    sweep = dict(CHECK.full.sweep)
    sweep["seeds"] = [0, 1]
    sweep["base"] = {**sweep["base"], "epochs": 1, "batch_size": 8}
    sweep["models"] = [{**m, "options": {**m["options"], "width": 2}} for m in sweep["models"]]
    tiny = dataclasses.replace(CLAIM, check=dataclasses.replace(CHECK, full=dataclasses.replace(CHECK.full, sweep=sweep)))
    monkeypatch.setattr(emp, "_cannot_train", lambda profile, device, train: "")
    out = run_empirical(tiny, "full", tmp_path / "store", device="cpu", data_path=tmp_path / "data",
                        progress=False, log=lambda *_: None)
    assert out.status in ("holds", "fails", "inconclusive") and len(out.runs) == 8, out.evidence
    for run_id in out.runs:
        rd = tmp_path / "store" / "runs" / run_id
        config = json.loads((rd / "config.json").read_text())
        assert config["dataset"] == "cifar10" and config["precision"] == "fp16" and config["on_nonfinite"] == "stop"
        assert json.loads((rd / "fp16_peaks.json").read_text())["samples"] > 0
    assert "CIFAR-10 (original pickles)" in out.evidence and "Float16 headroom" in out.evidence


@pytest.mark.parametrize("bad_label, expected", [("newton_plain_b1024", "holds"), ("newton_tanh_b1024", "fails"),
                                                 (None, "inconclusive")])
def test_full_profile_judges_the_paper_setting_pair_too(tmp_path, bad_label, expected):
    # The full profile adds the paper's own float16 setting (batch 1024, lr 0.4) as a second pair:
    # an overflow there counts like one in the first pair.
    zip_path = tmp_path / "cifar10-jpeg.zip"
    zip_path.write_bytes(b"")
    store = tmp_path / "store"
    ids = _fake_store(store, CHECK, "full", lambda label, seed: 0.9, data_path=zip_path)
    assert len(ids) == 12
    for label in ("newton_plain", "newton_tanh", "newton_plain_b1024", "newton_tanh_b1024"):
        _mark(store, [i for i in ids if i.split("-s")[0] == label], label, {0} if label == bad_label else set())
    out = verdict_from_store(CLAIM, "full", store, zip_path)
    assert out.status == expected, out.evidence
    assert "newton_plain_b1024 lr 0.4 batch 1024" in out.evidence
    assert set(out.details["fp16"]["n"]) == {"newton_plain", "newton_tanh", "newton_plain_b1024", "newton_tanh_b1024"}
