"""Training runs through submitit (experiments.runs.cluster): its local executor stands in for SLURM; and
through torchrun (2 CPU processes, Gloo) for a run trained data-parallel."""
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
    with pytest.raises(ValueError, match="executor must be one of local, slurm, torchrun; got 'lsf'"):
        submit_runs(runs, tmp_path, executor="lsf")
    with pytest.raises(ValueError, match="executor option.s. gpus not understood by the torchrun executor; valid: "
                                         "nproc_per_node"):
        submit_runs(runs, tmp_path, executor="torchrun", options={"gpus": 2})


def test_a_run_trains_data_parallel_under_torchrun_and_matches_the_one_process_run(tmp_path, capsys):
    spec = SweepSpec.from_dict({**SPEC, "seeds": [0]})
    table = run_sweep(spec, tmp_path / "ddp", executor="torchrun", executor_options={"nproc_per_node": 2})
    assert "torchrun, 2 processes" in capsys.readouterr().out
    single = run_sweep(spec, tmp_path / "one", progress=False)
    assert table["finished"].all()
    # the global batch and global BatchNorm make the 2-process run the one-process run, up to summation order
    # (tests/test_ddp.py measures the same to 1e-5 relative; losses of order 1 here)
    for column in ("loss", "test_loss"):
        assert table[column].tolist() == pytest.approx(single[column].tolist(), rel=1e-4, abs=1e-5)
