"""Training curves of a paper's runs and sweeps: tidy per-epoch metrics, the final-epoch table (mean and
std over seeds) and the figure (mean +- std bands), plus the log-axis rules the other figures share.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from experiments.report.store_index import as_index, paper_id, run_paper, sweep_paper

__all__ = ["CURVE_METRICS", "training_curves", "final_epoch_table", "plot_training_curves", "use_log_axis",
           "geometric_mean", "geometric_band"]

# Metrics drawn as training curves, in panel order; others in the store stay in the tables only.
CURVE_METRICS = ("test_acc", "test_loss", "loss")
_ID_COLUMNS = ("sweep", "source", "run_id", "label", "model", "seed", "epoch", "dataset", "paper", "finished")


def _numeric_metrics(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if c not in _ID_COLUMNS and not str(c).startswith("grid.")
            and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]


def _with_grid_labels(frame: pd.DataFrame) -> pd.Series:
    """Labels extended by the ``grid.<key>`` values that vary within a label (experiments.runs.sweep), so
    two grid points of one model are never averaged together as if they were seeds."""
    grid = [c for c in frame.columns if str(c).startswith("grid.")]
    varying = [c for c in grid if frame.groupby("label")[c].nunique(dropna=False).max() > 1]
    if not varying:
        return frame["label"].astype(str)
    extra = frame[varying].astype(str).apply(
        lambda row: ", ".join(f"{c.removeprefix('grid.')}={v}" for c, v in row.items()), axis=1)
    return frame["label"].astype(str) + " (" + extra + ")"


def _run_labels(runs: dict) -> dict[str, str]:
    """``model / dataset``, plus the settings in which runs with that name differ (never the seed)."""
    ignore = {"seed", "device"}
    groups: dict[tuple, list[str]] = {}
    for rid, r in runs.items():
        c = r["config"]
        groups.setdefault((c.get("model", "?"), c.get("dataset", "?")), []).append(rid)
    labels = {}
    for (model, dataset), rids in groups.items():
        configs = {rid: runs[rid]["config"] for rid in rids}
        keys = sorted({k for c in configs.values() for k in c} - ignore - {"model", "dataset"})
        differing = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in configs.values()}) > 1]
        for rid, c in configs.items():
            extra = ", ".join(f"{k}={json.dumps(c.get(k), sort_keys=True)}" for k in differing)
            labels[rid] = f"{model} / {dataset}" + (f" ({extra})" if extra else "")
    return labels


def training_curves(store, paper: str) -> pd.DataFrame:
    """Tidy per-epoch metrics of ``paper``'s sweeps and of its runs that no sweep lists.

    A sweep's paper is ``sweep_paper``'s, a run's ``run_paper``'s (``experiments.report.store_index``).

    Columns: ``source`` (sweep name, or ``runs on DATASET``), ``label``, ``seed``, ``run_id``,
    ``epoch`` and the numeric metrics. Empty (with those columns) when the store has none.
    """
    paper = paper_id(paper)
    index = as_index(store)
    parts = []
    in_sweeps = set()
    for name, frame in index.sweeps.items():
        if "run_id" in frame.columns:
            in_sweeps |= set(map(str, frame["run_id"].dropna()))
        if sweep_paper(name, frame) != paper:
            continue
        f = frame.copy()
        f["source"] = name
        if "label" not in f.columns:
            f["label"] = f["model"] if "model" in f.columns else name
        if "run_id" not in f.columns:
            f["run_id"] = f["seed"].astype(str) if "seed" in f.columns else "?"
        if "seed" not in f.columns:
            f["seed"] = f["run_id"]
        f["label"] = _with_grid_labels(f)
        parts.append(f)
    mine = {rid: r for rid, r in index.runs.items() if rid not in in_sweeps and run_paper(r) == paper}
    labels = _run_labels(mine)
    for rid, r in mine.items():
        f = r["metrics"].copy()
        f["source"] = f"runs on {r['config'].get('dataset', '?')}"
        f["label"] = labels[rid]
        f["run_id"] = rid
        f["seed"] = r["config"].get("seed", rid)
        parts.append(f)
    if not parts:
        return pd.DataFrame(columns=["source", "label", "seed", "run_id", "epoch"])
    frame = pd.concat(parts, ignore_index=True)
    metrics = [m for m in dict.fromkeys(c for p in parts for c in _numeric_metrics(p))]
    frame = frame[["source", "label", "seed", "run_id", "epoch", *metrics]]
    return frame.sort_values(["source", "label", "run_id", "epoch"], kind="stable").reset_index(drop=True)


def final_epoch_table(curves: pd.DataFrame, metrics=CURVE_METRICS) -> pd.DataFrame:
    """Per (source, label): seeds, the final epoch(s), and mean and std over seeds of each metric there."""
    metrics = [m for m in metrics if m in curves.columns]
    last = curves.sort_values("epoch", kind="stable").groupby(["source", "label", "run_id"], sort=False).tail(1)
    rows = []
    for (source, label), g in last.groupby(["source", "label"], sort=True):
        lo, hi = int(g["epoch"].min()), int(g["epoch"].max())
        row = {"source": source, "label": label, "seeds": int(g["seed"].nunique()),
               "final epoch": str(lo) if lo == hi else f"{lo}-{hi}"}
        for m in metrics:
            values = g[m].dropna()
            row[f"{m} mean"] = float(values.mean()) if len(values) else math.nan
            # ddof=1 (sample std) as the bands in the figure; one seed has no spread to report.
            row[f"{m} std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def use_log_axis(values: np.ndarray, ratio: float = 20.0) -> bool:
    """A log axis for positive values spanning more than ``ratio`` (losses falling by decades)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return bool(values.size and np.all(values > 0) and values.max() / values.min() > ratio)


def geometric_mean(values) -> float:
    """exp(mean(log v)): the centre of positive values drawn on a log axis."""
    return float(np.exp(np.mean(np.log(np.asarray(values, dtype=np.float64)))))


def geometric_band(values) -> tuple[float, float]:
    """exp(mean(log v) -+ std(log v)): the band of a log axis (the seeds' spread as a factor)."""
    logs = np.log(np.asarray(values, dtype=np.float64))
    m = logs.mean()
    sd = logs.std(ddof=1) if logs.size > 1 else 0.0
    return float(np.exp(m - sd)), float(np.exp(m + sd))


_METRIC_NAMES = {"test_acc": "test accuracy", "test_loss": "test loss", "loss": "training loss",
                 "acc": "training accuracy"}


def plot_training_curves(curves: pd.DataFrame, metrics=CURVE_METRICS, title: str | None = None):
    """Mean +- std over seeds per label and epoch, one panel per metric; returns the Figure."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator, NullFormatter

    metrics = [m for m in metrics if m in curves.columns and curves[m].notna().any()]
    if curves.empty or not metrics:
        raise ValueError(f"nothing to plot: the curves hold none of the metrics {', '.join(CURVE_METRICS)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    any_log = False
    for i, (ax, m) in enumerate(zip(axes[0], metrics)):
        log = use_log_axis(curves[m].dropna().to_numpy())
        any_log |= log
        # Mean +- one sample std over seeds at each epoch (no bootstrap, so the same store always
        # draws the same figure); on a log axis both in log space, as an arithmetic band whose
        # lower edge goes below 0 would fill the axis to its bottom.
        estimator, errorbar = (geometric_mean, geometric_band) if log else ("mean", "sd")
        sns.lineplot(data=curves, x="epoch", y=m, hue="label", estimator=estimator, errorbar=errorbar, ax=ax,
                     legend=i == 0, linewidth=1.2)
        ax.set_ylabel(_METRIC_NAMES.get(m, m))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if log:
            ax.set_yscale("log")
            ax.yaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks crowd a short log axis
    if axes[0][0].get_legend() is not None:
        axes[0][0].legend(fontsize=7, title=None)
    n = curves.groupby("label")["seed"].nunique()
    seeds = f"{n.min()}" if n.min() == n.max() else f"{n.min()}-{n.max()}"
    note = "; log axes: geometric mean ×/÷ geometric std" if any_log else ""
    fig.suptitle(f"{title or 'mean ± std over seeds'} ({seeds} seed(s) per label{note})", fontsize=10)
    fig.tight_layout()
    return fig
