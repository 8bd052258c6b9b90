"""Train a sweep (or any runs) into a results store: skip finished runs, resume the others.

The sweep file, its validation and run ids are ``experiments.runs.sweep_config``'s; reading the
store back (tables, summaries, paired differences) is ``experiments.runs.results``'s; the worker pool
is ``experiments.runs.pool``'s. This module re-exports their public names, so
``from experiments.runs.sweep import expand, results_table`` keeps working.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Sequence

import pandas as pd
from tqdm.auto import tqdm

from analysis.validation import check_int
from experiments.runs.cluster import submit_runs
from experiments.runs.pool import check_devices, run_pool, train_one
from experiments.runs.results import (
    paired_differences,
    results_table,
    run_dir_of,
    run_progress,
    run_status,
    stored_config,
    summarize,
    write_outputs,
)
from experiments.runs.store import RunDir
from experiments.runs.sweep_config import (
    CONFIG_DIR,
    CPU_THREADS,
    DEFAULT_STORE,
    EXECUTION_FIELDS,
    LOADING_OPTIONS,
    LOCATION_OPTIONS,
    ModelSpec,
    RunSpec,
    SweepConfigError,
    SweepSpec,
    canonical_config,
    expand,
    grid_column,
    load_sweep,
    run_id_for,
    shipped_configs,
)

__all__ = [
    "SweepSpec", "ModelSpec", "RunSpec", "SweepConfigError", "SweepFailed", "load_sweep", "expand",
    "run_id_for", "canonical_config", "run_sweep", "train_runs", "pending_runs", "results_table", "run_status", "summarize",
    "paired_differences", "grid_column", "shipped_configs", "CONFIG_DIR", "CPU_THREADS", "EXECUTION_FIELDS",
    "LOADING_OPTIONS", "LOCATION_OPTIONS", "DEFAULT_STORE",
]


class SweepFailed(RuntimeError):
    """Some runs of a sweep raised; the others ran. ``failures``: run id -> error; ``results``: the table."""

    def __init__(self, failures: dict[str, str], results: pd.DataFrame) -> None:
        self.failures = dict(failures)
        self.results = results
        lines = "\n".join(f"  {rid}: {err}" for rid, err in self.failures.items())
        super().__init__(f"{len(self.failures)} run(s) failed (traceback in STORE/runs/<run_id>/error.txt):\n{lines}")




def run_sweep(spec: SweepSpec, store: Path | str = DEFAULT_STORE, *, device: str | None = None, workers: int = 1,
              progress: bool = True, data=None, max_epochs_this_call: int | None = None,
              only: Sequence[str] | None = None, executor: str | None = None,
              executor_options: dict | None = None) -> pd.DataFrame:
    """Train every unfinished run of ``spec`` into ``store`` and return ``results_table(spec, store)``.

    Finished runs are skipped ("k of n runs already done" is printed when ``progress``),
    unfinished ones resume from their checkpoints. ``device`` overrides every run's device (the
    run ids do not change). ``workers`` > 1 trains that many runs at once in spawned processes,
    each with ``cpu_count // workers`` torch threads (on one GPU: keeps it busy with small models);
    when all their runs use one dataset it is loaded once here and shared with them. ``data`` is
    the dataset every run uses (skips loading; it must be what the runs' dataset options load). ``max_epochs_this_call`` is passed to
    ``train`` (each run stops after that many more epochs). ``only`` trains just those labels; the
    table and summaries still cover every stored run of the sweep. Writes
    ``STORE/sweeps/<name>/`` (module docstring) even when interrupted. A run that raises is recorded
    (``STORE/runs/<id>/error.txt``), the others go on, and ``SweepFailed`` is raised at the end.
    ``executor`` (``"local"`` / ``"slurm"``) sends the unfinished runs to submitit instead, one job
    each, with ``executor_options`` (``experiments.runs.cluster``); ``workers`` is then unused.
    """
    if not isinstance(spec, SweepSpec):
        raise TypeError(f"spec must be a SweepSpec (load_sweep / SweepSpec.from_dict); got {type(spec).__name__}")
    workers = check_int("workers", workers, min_value=1)
    if max_epochs_this_call is not None:
        max_epochs_this_call = check_int("max_epochs_this_call", max_epochs_this_call, min_value=1)
    store = Path(store)
    runs = expand(spec)
    if device is not None:
        if not isinstance(device, str) or not device:
            raise TypeError(f"device must be a device string such as 'cpu' or 'cuda'; got {device!r}")
        runs = [dataclasses.replace(r, config=dataclasses.replace(r.config, device=device)) for r in runs]
    selected = runs
    if only is not None:
        only = [only] if isinstance(only, str) else list(only)
        unknown = [lab for lab in only if lab not in spec.labels]
        if unknown:
            raise ValueError(f"only: unknown label(s) {', '.join(map(repr, unknown))}; labels of sweep "
                             f"{spec.name!r}: {', '.join(spec.labels)}")
        selected = [r for r in runs if r.label in only]

    failures: dict[str, str] = {}
    try:
        if executor is None:
            failures = train_runs(selected, store, workers=workers, progress=progress, data=data,
                                  max_epochs_this_call=max_epochs_this_call, desc=f"sweep {spec.name}")
        else:
            todo, _ = pending_runs(selected, store)
            failures = submit_runs(todo, store, executor=executor, options=executor_options, progress=progress)
    finally:
        table = results_table(spec, store)
        write_outputs(spec, store, table, runs)
    if failures:
        raise SweepFailed(failures, table)
    return table


def pending_runs(runs: Sequence[RunSpec], store: Path) -> tuple[list[RunSpec], int]:
    """(the unfinished runs of ``runs``, how many distinct runs there are); records each run's claim."""
    todo, seen = [], set()
    for run in runs:
        if run.run_id in seen:
            continue
        seen.add(run.run_id)
        rd = RunDir(run_dir_of(store, run))
        stored = stored_config(rd, run)
        rd.record_claim(run.claim, run.paper)
        if run_progress(rd, run.config)[1]:
            continue
        if stored is not None and stored.to_dict() != run.config.to_dict():
            # Same computation, other execution fields (a CPU-started run resumed on cuda): record the
            # new ones so RunDir.init accepts the directory; environment.json records the device.
            tmp = rd.config_path.with_name("config.json.tmp")
            tmp.write_text(json.dumps(run.config.to_dict(), indent=2))
            os.replace(tmp, rd.config_path)
        todo.append(run)
    return todo, len(seen)


def train_runs(runs: Sequence[RunSpec], store: Path | str, *, workers: int = 1, progress: bool = True, data=None,
               max_epochs_this_call: int | None = None, desc: str = "train") -> dict[str, str]:
    """Train the unfinished ``runs`` (of one sweep or several) into ``store``; return ``{run_id: error}``.

    What ``run_sweep`` does for its runs, without the sweep's tables: finished runs are skipped,
    the others resume; ``workers`` > 1 trains them in one pool of spawned processes (so runs of
    several sweeps share it, as the audit's checks do). A run that raises is recorded in its
    directory's ``error.txt`` and the others go on.
    """
    workers = check_int("workers", workers, min_value=1)
    store = Path(store)
    todo, n = pending_runs(runs, store)
    if progress:
        print(f"{n - len(todo)} of {n} runs already done")
    if todo:
        check_devices(todo)

    failures: dict[str, str] = {}
    bar = None
    if progress and todo:
        bar = tqdm(total=len(todo), desc=desc, unit="run")
    try:
        if workers == 1 or len(todo) <= 1:
            cache: dict = {}
            for run in todo:
                if bar is not None:
                    bar.set_postfix_str(run.run_id)
                err = train_one(run.config, run_dir_of(store, run), cache, data, progress, max_epochs_this_call)
                if err is not None:
                    failures[run.run_id] = err
                if bar is not None:
                    bar.update(1)
        else:
            run_pool(todo, store, workers, data, max_epochs_this_call, failures, bar)
    finally:
        if bar is not None:
            bar.close()
    return failures
