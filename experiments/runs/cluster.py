"""Training runs on an existing job engine: submitit, for SLURM clusters (and its local executor), or torchrun.

``submit_runs(runs, store, executor="slurm", options={"slurm_partition": "gpu", "gpus_per_node": 1})``
submits one job per run (a submitit job array) and waits for them; each job calls the same
``experiments.runs.pool.train_one`` as a local sweep, so a job that is killed resumes from its last
checkpoint when submitted again, and a finished run is never submitted. ``executor="local"`` runs
the jobs as subprocesses of this machine through submitit's local executor (what the tests use).
Logs go to ``STORE/submitit/``. Nothing here schedules or retries by itself: that is submitit's and
SLURM's job.

``executor="torchrun"`` is for runs too large for one device: each run in turn is trained
data-parallel by ``torchrun --standalone --nproc-per-node N`` (``options={"nproc_per_node": N}``,
default: the GPUs of this machine, else 2 CPU processes), every rank calling ``train`` on the same
config (``experiments.runs.distributed``); its output goes to ``STORE/torchrun/<run_id>.log``.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import submitit
import torch

from experiments.runs.pool import record_error, run_dir, train_one
from experiments.runs.store import TrainConfig
from experiments.runs.sweep_config import RunSpec

__all__ = ["EXECUTORS", "submit_runs"]

EXECUTORS = ("local", "slurm", "torchrun")
# Parameters every job gets unless ``options`` says otherwise (minutes, cores).
DEFAULT_OPTIONS = {"timeout_min": 60, "cpus_per_task": 1}


def _train_job(config: dict, path: str) -> str | None:
    """One run in a job: ``None`` or the error (the traceback is in the run directory's error.txt)."""
    return train_one(TrainConfig.from_dict(config), Path(path), {}, None, False, None)


def submit_runs(runs: Sequence[RunSpec], store: Path | str, *, executor: str = "local", options: dict | None = None,
                progress: bool = True) -> dict[str, str]:
    """Train ``runs`` (the unfinished ones: see ``experiments.runs.sweep.pending_runs``) as submitit jobs.

    ``options`` are submitit's ``update_parameters`` keywords (``timeout_min``, ``slurm_partition``,
    ``gpus_per_node``, ...). Returns ``{run_id: error}`` of the runs that failed, job failures included.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}; got {executor!r}")
    runs = list(runs)
    if not runs:
        return {}
    store = Path(store)
    if executor == "torchrun":
        return _torchrun_runs(runs, store, options or {}, progress)
    ex = submitit.AutoExecutor(folder=store / "submitit" / "%j", cluster=executor)
    try:
        ex.update_parameters(**{**DEFAULT_OPTIONS, **(options or {})})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"executor option not accepted by submitit's {executor} executor: {exc}") from None
    jobs = ex.map_array(_train_job, [r.config.to_dict() for r in runs], [str(run_dir(store, r)) for r in runs])
    if progress:
        print(f"submitted {len(jobs)} runs to submitit ({executor}): job ids {', '.join(j.job_id for j in jobs)}; "
              f"logs in {store / 'submitit'}")
    failures = {}
    for run, job in zip(runs, jobs):
        try:
            err = job.result()
        except Exception as exc:  # noqa: BLE001 - a job that died (killed, out of time, node failure)
            err = record_error(run_dir(store, run), exc)
        if err is not None:
            failures[run.run_id] = err
    return failures


def _torchrun_runs(runs, store: Path, options: dict, progress: bool) -> dict[str, str]:
    """Each run in turn under ``torchrun`` (module docstring); ``{run_id: error}`` of those that failed."""
    unknown = sorted(set(options) - {"nproc_per_node"})
    if unknown:
        raise ValueError(f"executor option(s) {', '.join(unknown)} not understood by the torchrun executor; "
                         "valid: nproc_per_node")
    nproc = int(options.get("nproc_per_node", torch.cuda.device_count() or 2))
    if nproc < 1:
        raise ValueError(f"nproc_per_node must be >= 1; got {nproc}")
    logs = store / "torchrun"
    logs.mkdir(parents=True, exist_ok=True)
    failures = {}
    for run in runs:
        path = run_dir(store, run)
        path.mkdir(parents=True, exist_ok=True)
        config = path / "torchrun_config.json"
        config.write_text(json.dumps(run.config.to_dict(), indent=2))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "experiments.runs.torchrun_job", str(config), str(path)]
        if progress:
            print(f"torchrun, {nproc} processes: {run.run_id} (log {logs / (run.run_id + '.log')})", flush=True)
        with open(logs / f"{run.run_id}.log", "w") as log:
            code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
        if code != 0:
            error = path / "error.txt"
            failures[run.run_id] = (error.read_text().strip().splitlines() or ["?"])[-1] if error.exists() else \
                f"torchrun exited with {code}; see {logs / (run.run_id + '.log')}"
    return failures
