"""Stores made by earlier versions of the project stay readable: same run ids, same verdicts, same numbers.

The store in ``../shared/gpu-runs/store-2026-12-04-h200.tgz`` was trained on an NVIDIA H200 at
commit 532275a (its README). Its sweeps predate the ``claim`` / ``paper`` record of runs, and its run
ids were computed by that commit's ``canonical_config``: if a change of the layout or of the run-id
rule left them unreadable, the audit would call these claims "not run" and want to retrain them.
"""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.runs.store import TrainConfig
from experiments.runs.sweep import run_id_for

STORE_TGZ = Path(__file__).resolve().parents[2] / "shared" / "gpu-runs" / "store-2026-12-04-h200.tgz"


@pytest.fixture(scope="module")
def gpu_store(tmp_path_factory) -> Path:
    if not STORE_TGZ.exists():
        pytest.skip(f"the GPU store of 2026-12-04 is not at {STORE_TGZ}")
    root = tmp_path_factory.mktemp("gpu")
    with tarfile.open(STORE_TGZ) as tar:
        tar.extractall(root, filter="data")
    return root / "reports" / "store"


def test_the_2026_12_04_gpu_store_gives_the_verdicts_it_printed_then(gpu_store, tmp_path, capsys):
    # Numbers the audit printed on the H200 on 2026-12-04 (../shared/gpu-runs/README.md): NRL-params
    # -0.02 pts, CI [-0.32, +0.27]; NRL-linear +36.86 pts, CI [+34.38, +39.33]. Reading the stored
    # metrics involves no training and no float noise, so they must come back to the printed digits.
    code = main(["audit", "--profile", "full", "--store", str(gpu_store), "--claims", "NRL-params,NRL-linear",
                 "--train-only", "--no-progress", "--out", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    verdicts = {v["claim_id"]: v for v in json.loads((tmp_path / "audit.json").read_text())["verdicts"]}
    expected = {"NRL-params": (-0.02, -0.32, 0.27, 3), "NRL-linear": (36.86, 34.38, 39.33, 2)}
    for claim, (mean, low, high, n) in expected.items():
        assert verdicts[claim]["status"] == "holds", verdicts[claim]["evidence"]
        cmp = verdicts[claim]["details"]["comparisons"][0]
        assert (round(cmp["mean"], 2), round(cmp["ci_low"], 2), round(cmp["ci_high"], 2), cmp["n"]) == (
            mean, low, high, n)


def test_every_stored_run_keeps_its_id_under_todays_rule(gpu_store):
    # The run id is a hash of the config (experiments.runs.sweep_config.canonical_config): each run a
    # stored sweep lists must hash to the id it was stored under, or the store would look empty.
    n = 0
    for sweep_json in sorted((gpu_store / "sweeps").glob("*/sweep.json")):
        for run in json.loads(sweep_json.read_text())["runs"]:
            assert run_id_for(run["label"], TrainConfig.from_dict(run["config"])) == run["run_id"], sweep_json
            n += 1
    assert n >= 25  # the 25 finished runs of the README, and the ones the GPU calls did not reach
