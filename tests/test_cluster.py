"""Training runs through submitit (experiments.runs.cluster): its local executor stands in for SLURM."""
from __future__ import annotations

import pytest

from experiments.runs.cluster import submit_runs
from experiments.runs.sweep import SweepSpec, run_sweep

SPEC = {"name": "cluster-tiny", "seeds": [0, 1],
        "base": {"dataset": "synthetic", "dataset_options": {"seed": 0, "n_train": 32, "n_test": 16, "num_classes": 3},
                 "epochs": 1, "batch_size": 16},
        "models": [{"label": "r", "name": "resnet20", "options": {"width": 2}}]}


def test_a_sweep_runs_as_submitit_jobs_and_a_second_call_submits_nothing(tmp_path, capsys):
    spec = SweepSpec.from_dict(SPEC)
    table = run_sweep(spec, tmp_path, executor="local", progress=True)
    assert table.groupby("run_id")["finished"].all().tolist() == [True, True]
    assert "submitted 2 runs to submitit (local)" in capsys.readouterr().out
    assert any((tmp_path / "submitit").iterdir())  # the jobs' logs
    again = run_sweep(spec, tmp_path, executor="local", progress=True)
    assert "submitted" not in capsys.readouterr().out
    assert again.equals(table)


def test_bad_executor_settings_are_named(tmp_path):
    from experiments.runs.sweep_config import expand

    runs = expand(SweepSpec.from_dict(SPEC))
    with pytest.raises(ValueError, match="executor must be one of local, slurm; got 'lsf'"):
        submit_runs(runs, tmp_path, executor="lsf")
