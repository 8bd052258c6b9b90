"""Training runs on an existing job engine: submitit, for SLURM clusters (and its local executor).

``submit_runs(runs, store, executor="slurm", options={"slurm_partition": "gpu", "gpus_per_node": 1})``
submits one job per run (a submitit job array) and waits for them; each job calls the same
``experiments.runs.pool.train_one`` as a local sweep, so a job that is killed resumes from its last
checkpoint when submitted again, and a finished run is never submitted. ``executor="local"`` runs
the jobs as subprocesses of this machine through submitit's local executor (what the tests use).
Logs go to ``STORE/submitit/``. Nothing here schedules or retries by itself: that is submitit's and
SLURM's job.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import submitit

from experiments.runs.pool import record_error, run_dir, train_one
from experiments.runs.store import TrainConfig
from experiments.runs.sweep_config import RunSpec

__all__ = ["EXECUTORS", "submit_runs"]

EXECUTORS = ("local", "slurm")
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
