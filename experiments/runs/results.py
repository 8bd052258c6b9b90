"""The results of a sweep in a store: each run's state, the tidy table, summaries and paired differences.

Reads ``STORE/runs/<run_id>/`` (trains nothing) and writes ``STORE/sweeps/<name>/`` (the layout is in
``experiments.runs.sweep_config``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd

from experiments.report.tables import markdown_table
from experiments.runs.store import RunDir, TrainConfig
from experiments.runs.sweep_config import (
    ACCURACY_METRICS,
    DEFAULT_STORE,
    RunSpec,
    SweepConfigError,
    SweepSpec,
    canonical_config,
    expand,
    grid_column,
)

__all__ = ["run_dir_of", "run_progress", "stored_config", "run_status", "results_table", "summarize",
           "paired_differences", "write_outputs"]

_ID_COLUMNS = ("sweep", "run_id", "label", "model", "seed")
_METRIC_ORDER = ("epoch", "lr", "loss", "acc", "test_loss", "test_acc", "seconds")


def run_dir_of(store: Path, run: RunSpec) -> Path:
    return Path(store) / "runs" / run.run_id


def _finished(rd: RunDir, config: TrainConfig, rows: list[dict]) -> bool:
    # result.json marks a finished run even without metrics rows for every epoch; older runs have
    # no result.json, so a full metrics.csv counts too.
    return (rd.path / "result.json").exists() or len(rows) >= config.epochs


def run_progress(rd: RunDir, config: TrainConfig) -> tuple[int, bool]:
    """(epochs recorded, finished) of a run directory."""
    rows = rd.read_metrics()
    return len(rows), _finished(rd, config, rows)


def stored_config(rd: RunDir, run: RunSpec) -> TrainConfig | None:
    """The stored config, after refusing one that computes something else than ``run.config``."""
    if not rd.config_path.exists():
        return None
    stored = rd.load_config()
    a, b = canonical_config(stored), canonical_config(run.config)
    if a != b:
        diff = {k: (a.get(k, "<default>"), b.get(k, "<default>")) for k in sorted(set(a) | set(b))
                if a.get(k) != b.get(k)}
        raise SweepConfigError(
            f"run directory {rd.path} holds a different config than run {run.run_id} expects (stored, expected: "
            f"{diff}); a TrainConfig default probably changed since it ran. Move it away to re-run it.")
    return stored


def run_status(spec: SweepSpec, store: Path | str = DEFAULT_STORE) -> pd.DataFrame:
    """One row per run: run_id, label, model, seed, grid columns, epochs_done, epochs, status (new/partial/done)."""
    rows = []
    for run in expand(spec):
        rd = RunDir(run_dir_of(Path(store), run))
        stored_config(rd, run)
        done, finished = run_progress(rd, run.config)
        status = "done" if finished else ("partial" if done else "new")
        rows.append({"run_id": run.run_id, "label": run.label, "model": run.model, "seed": run.seed,
                     **{grid_column(k): _cell(v) for k, v in run.grid_values.items()},
                     "epochs_done": done, "epochs": run.config.epochs, "status": status})
    return pd.DataFrame(rows)


def _cell(value):
    # Lists/dicts (a grid over milestones) go into the table as JSON so the CSV reloads to the same text.
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, tuple, dict)) else value


def results_table(spec: SweepSpec, store: Path | str = DEFAULT_STORE) -> pd.DataFrame:
    """The tidy table of the runs of ``spec`` found in ``store`` (trains nothing).

    One row per run per recorded epoch: sweep, run_id, label, model, seed, ``grid.<key>`` per grid
    key, every metrics.csv column (epoch, lr, loss, acc, test_loss, test_acc, seconds, ...), and
    ``finished`` (the run reached its last epoch). Runs with no finished epoch have no rows.
    """
    runs = expand(spec)
    grid_cols = [grid_column(k) for k in spec.grid]
    # The claim and paper the sweep trains for (the audit's sweeps): columns only when set, so a
    # plain sweep's table keeps its columns.
    tags = {k: getattr(spec, k) for k in ("claim", "paper") if getattr(spec, k)}
    rows, metric_cols = [], list(_METRIC_ORDER)
    for run in runs:
        rd = RunDir(run_dir_of(Path(store), run))
        metrics = rd.read_metrics()
        if not metrics:
            continue
        finished = _finished(rd, run.config, metrics)
        ident = {"sweep": spec.name, "run_id": run.run_id, "label": run.label, "model": run.model, "seed": run.seed,
                 **{grid_column(k): _cell(v) for k, v in run.grid_values.items()}, **tags}
        for m in metrics:
            metric_cols += [k for k in m if k not in metric_cols]
            rows.append({**ident, **m, "finished": finished})
    columns = [*_ID_COLUMNS, *tags, *grid_cols, *metric_cols, "finished"]
    return pd.DataFrame(rows, columns=columns)


def _final_rows(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    final = df.sort_values("epoch", kind="stable").groupby("run_id", sort=False).tail(1)
    if "finished" in final:
        final = final[final["finished"].astype(bool)]
    # Back to the table's run order (the spec's model, grid, seed order).
    order = {rid: i for i, rid in enumerate(dict.fromkeys(df["run_id"]))}
    return final.sort_values("run_id", key=lambda s: s.map(order), kind="stable")


def _check_columns(df: pd.DataFrame, names: Iterable[str], what: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"expected a results DataFrame (results_table / run_sweep); got {type(df).__name__}")
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ValueError(f"{what} {', '.join(map(repr, missing))} not in the results table; "
                         f"columns: {', '.join(map(str, df.columns))}")


def summarize(df: pd.DataFrame, metric: str = "test_acc", by: Sequence[str] = ("label",)) -> pd.DataFrame:
    """Final-epoch ``metric`` of every finished run, aggregated per ``by`` group.

    Columns: ``*by``, metric, n, mean, std, min, max. ``std`` is the sample standard deviation
    (ddof=1) across the group's runs (seeds), NaN when n = 1. Groups keep the table's order.
    """
    by = [by] if isinstance(by, str) else list(by)
    _check_columns(df, ["run_id", "epoch"], "column(s)")
    _check_columns(df, [metric], "metric")
    _check_columns(df, by, "group column(s)")
    final = _final_rows(df)
    if final.empty:
        return pd.DataFrame(columns=[*by, "metric", "n", "mean", "std", "min", "max"])
    values = pd.to_numeric(final[metric], errors="raise")
    g = values.groupby([final[c] for c in by], sort=False, dropna=False)
    out = pd.DataFrame({"n": g.count(), "mean": g.mean(), "std": g.std(ddof=1), "min": g.min(), "max": g.max()})
    out = out.reset_index()
    out.insert(len(by), "metric", metric)
    return out


def paired_differences(df: pd.DataFrame, block: str, baseline: str, metric: str = "test_acc") -> pd.DataFrame:
    """Per-seed final-epoch ``metric`` of label ``block`` minus label ``baseline``.

    Runs are paired on seed and every ``grid.*`` column (same seed: same initialisation stream and
    batch order, so the pairing removes the seed-to-seed noise both share). Columns: seed, grid
    columns, block, baseline, metric, block_value, baseline_value, difference. Only pairs where both
    runs finished appear. Accuracies (``ACCURACY_METRICS``) come in percentage points (x100: the
    unit ``experiments.audit.stats.paired_stats`` reports), other metrics in their own units.
    """
    _check_columns(df, ["run_id", "epoch", "label", "seed"], "column(s)")
    _check_columns(df, [metric], "metric")
    labels = list(dict.fromkeys(df["label"]))
    for name, value in (("block", block), ("baseline", baseline)):
        if value not in labels:
            raise ValueError(f"{name} label {value!r} is not in the results table; "
                             f"labels: {', '.join(map(str, labels))}")
    keys = ["seed", *[c for c in df.columns if str(c).startswith("grid.")]]
    final = _final_rows(df)
    a = final[final["label"] == block][[*keys, metric]].rename(columns={metric: "block_value"})
    b = final[final["label"] == baseline][[*keys, metric]].rename(columns={metric: "baseline_value"})
    pairs = a.merge(b, on=keys, how="inner")
    if pairs.empty:
        raise ValueError(f"no finished run of {block!r} shares a seed (and grid point) with a finished run of "
                         f"{baseline!r}; seeds: {block}: {sorted(a['seed'].tolist())}, "
                         f"{baseline}: {sorted(b['seed'].tolist())}")
    pairs.insert(len(keys), "block", block)
    pairs.insert(len(keys) + 1, "baseline", baseline)
    pairs.insert(len(keys) + 2, "metric", metric)
    if metric in ACCURACY_METRICS:
        pairs[["block_value", "baseline_value"]] *= 100.0
    pairs["difference"] = pairs["block_value"] - pairs["baseline_value"]
    return pairs.reset_index(drop=True)


def _summary_markdown(spec: SweepSpec, df: pd.DataFrame, by: list[str], n_runs: int) -> str:
    acc = summarize(df, "test_acc", by)
    loss = summarize(df, "test_loss", by)
    n_finished = int(_final_rows(df).shape[0]) if not df.empty else 0
    lines = [f"# Sweep {spec.name}", ""]
    if spec.description:
        lines += [spec.description, ""]
    if acc.empty:
        lines += [f"No run has finished yet (0 of {n_runs})."]
        return "\n".join(lines) + "\n"
    fmt = lambda m, s: f"{m:.4f} ± {s:.4f}" if pd.notna(s) else f"{m:.4f}"  # noqa: E731
    table = acc[by].copy()
    models = dict(zip(df["label"], df["model"]))
    if "label" in by:
        table.insert(by.index("label") + 1, "model", [models[lab] for lab in acc["label"]])
    table["n"] = acc["n"].astype(int)
    table["test_acc (mean ± std)"] = [fmt(m, s) for m, s in zip(acc["mean"], acc["std"])]
    table["test_acc min"] = acc["min"]
    table["test_acc max"] = acc["max"]
    table["test_loss (mean ± std)"] = [fmt(m, s) for m, s in zip(loss["mean"], loss["std"])]
    lines += [markdown_table(table), "",
              f"- Final epoch of each finished run ({n_finished} of {n_runs} runs); std is the sample standard "
              "deviation (ddof=1) across seeds.",
              "- Raw data: results.csv (one row per run per epoch), summary.csv; runs in STORE/runs/<run_id>/."]
    return "\n".join(lines) + "\n"


def write_outputs(spec: SweepSpec, store: Path, df: pd.DataFrame, runs: list[RunSpec]) -> Path:
    out = store / "sweeps" / spec.name
    out.mkdir(parents=True, exist_ok=True)
    by = ["label", *[grid_column(k) for k in spec.grid]]

    def atomic(path: Path, text: str) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    atomic(out / "sweep.json", json.dumps({
        "spec": spec.to_dict(),
        "runs": [{"run_id": r.run_id, "label": r.label, "seed": r.seed, "grid": r.grid_values,
                  "config": r.config.to_dict()} for r in runs]}, indent=2))
    atomic(out / "results.csv", df.to_csv(index=False))
    summary = pd.concat([summarize(df, m, by) for m in ("test_acc", "test_loss")], ignore_index=True)
    atomic(out / "summary.csv", summary.to_csv(index=False))
    atomic(out / "summary.md", _summary_markdown(spec, df, by, len(runs)))
    return out
