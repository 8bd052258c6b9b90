"""Tables and figures of the analyses a store holds besides training curves: loss landscapes, the
per-block risk gap (RN Prop. 2), Hessian curvature, and the float16 headroom of Newton-ResNets
(NRL-fp16). Each takes the ``Artefact``s of ``experiments.report.store_index`` (the float16 table reads
the run directories themselves).

- ``plot_landscapes``: 2-D contours side by side on shared levels (1-D landscapes as curves).
- ``plot_risk_gaps`` / ``risk_gap_table``: the per-block curve A(H_0..H_i) of RN Prop. 2.
- ``plot_curvature`` / ``curvature_table``: Hessian spectral densities and extreme eigenvalues.
- ``fp16_table`` / ``plot_fp16_peaks``: float16 Newton-ResNet runs, whether they overflowed, and
  the peaks of the second-order term against float16's largest value.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plotting.curvature import plot_spectral_density
from analysis.plotting.landscape import plot_side_by_side
from analysis.probes.curvature import SpectralDensity
from analysis.probes.fp16_peaks import FP16_MAX
from experiments.report.curves import geometric_mean, use_log_axis
from experiments.report.store_index import Artefact, as_index
from experiments.runs.store import RunDir

__all__ = ["landscape_table", "plot_landscapes", "risk_gap_table", "plot_risk_gaps", "fp16_table", "plot_fp16_peaks",
           "curvature_table", "plot_curvature"]

_MAX_PANELS = 4


# ----------------------------------------------------------------------------------------------
# landscapes
# ----------------------------------------------------------------------------------------------

def _artefact_labels(artefacts: list[Artefact]) -> list[str]:
    base = [a.model or a.path.parent.name for a in artefacts]
    counts = pd.Series(base).value_counts()
    return [b if counts[b] == 1 else f"{b} ({a.run or a.path.parent.name})" for b, a in zip(base, artefacts)]


def _landscape_group_key(r) -> tuple:
    m = r.meta
    return (r.ndim, r.shape, m.get("dataset"), m.get("range"), r.directions.get("normalization"), r.bn, r.loss_name)


def landscape_table(artefacts: list[Artefact]) -> pd.DataFrame:
    """Grid, data, normalisation, BatchNorm mode and the loss range of each landscape, one row each."""
    rows = []
    for label, a in zip(_artefact_labels(artefacts), artefacts):
        r = a.data
        loss = r.loss[np.isfinite(r.loss)]
        rows.append({"landscape": label, "dataset": r.meta.get("dataset"), "grid": " x ".join(map(str, r.shape)),
                     "normalisation": r.directions.get("normalization"), "BatchNorm": r.bn,
                     "images": r.num_samples, "centre loss": r.meta.get("centre_loss", math.nan),
                     "min loss": float(loss.min()) if loss.size else math.nan,
                     "max loss": float(loss.max()) if loss.size else math.nan,
                     "file in store": a.where})
    return pd.DataFrame(rows)


def _shared_levels(results, log: bool, n: int = 20) -> np.ndarray:
    finite = np.concatenate([r.loss[np.isfinite(r.loss)].ravel() for r in results])
    if finite.size == 0:
        raise ValueError("nothing to plot: every grid value is NaN (an unfinished landscape?)")
    lo, hi = float(finite.min()), float(finite.max())
    hi = hi if hi > lo else lo + 1e-12 + abs(lo) * 1e-6
    return np.geomspace(max(lo, 1e-12), hi, n) if log and lo > 0 else np.linspace(lo, hi, n)


def plot_landscapes(artefacts: list[Artefact]) -> list:
    """Figures of landscapes: comparable 2-D ones (same grid, data, normalisation, BatchNorm) side by
    side on SHARED contour levels, at most four panels a row; 1-D ones as overlaid curves."""
    import matplotlib.pyplot as plt

    labels = _artefact_labels(artefacts)
    groups: dict[tuple, list] = {}
    for label, a in zip(labels, artefacts):
        groups.setdefault(_landscape_group_key(a.data), []).append((label, a.data))
    figures = []
    for key, members in groups.items():
        results = [r for _, r in members]
        if key[0] == 2:
            # Levels over the whole group, so panels split over several rows still share them; log
            # levels as `blockaudit landscape` chose them (loss spanning > 2 decades).
            log = any(r.meta.get("log_levels") for r in results)
            levels = _shared_levels(results, log)
            for start in range(0, len(members), _MAX_PANELS):
                chunk = dict(members[start:start + _MAX_PANELS])
                fig = plot_side_by_side(chunk, levels=levels, log=log)
                for ax in fig.axes[1:len(chunk)]:
                    ax.set_ylabel("")  # beside the first panel it would overlap its neighbour's ticks
                if log:
                    # A log colour bar labels only whole decades, often one or none: label levels.
                    ticks = levels[::3]
                    fig.axes[-1].set_yticks(ticks, [f"{t:.3g}" for t in ticks])
                    fig.axes[-1].minorticks_off()
                fig.suptitle(f"{key[2]}, {key[4]}-normalised directions, bn={key[5]}: shared "
                             f"{'log' if log else 'linear'} levels", fontsize=9, y=1.02)
                figures.append(fig)
        else:
            fig, ax = plt.subplots(figsize=(5.0, 3.3))
            for label, r in members:
                ax.plot(r.alphas, r.loss, label=label, linewidth=1.2)
            ax.set_xlabel(r"$\alpha$ (direction 1)")
            ax.set_ylabel(key[6])
            finite = np.concatenate([r.loss[np.isfinite(r.loss)] for r in results])
            if finite.size and finite.min() > 0 and finite.max() / finite.min() > 100:
                ax.set_yscale("log")
            ax.legend(fontsize=7)
            ax.set_title(f"1-D landscapes on {key[2]} ({key[4]}-normalised, bn={key[5]})", fontsize=9)
            figures.append(fig)
    return figures


# ----------------------------------------------------------------------------------------------
# risk gap
# ----------------------------------------------------------------------------------------------

def risk_gap_table(artefacts: list[Artefact]) -> pd.DataFrame:
    """R, A*, eps = R - A* (RN eq. (8)) and the solver certificates of each risk-gap result."""
    rows = []
    for label, a in zip(_artefact_labels(artefacts), artefacts):
        r = a.data
        rows.append({"model": label, "dataset": r.meta.get("dataset"), "loss": r.loss, "blocks": len(r.curve_train) - 1,
                     "n train": r.n_train, "n test": r.n_test, "R train": r.model_risk_train,
                     "A* train": r.a_star_train, "eps train": r.eps_train,
                     "eps test": math.nan if r.eps_test is None else r.eps_test,
                     "A(H_0) train": r.input_baseline_train,
                     "fits converged": f"{sum(c.converged for c in r.certificates)}/{len(r.certificates)}",
                     "file in store": a.where})
    return pd.DataFrame(rows)


def plot_risk_gaps(artefacts: list[Artefact]) -> list:
    """Per-block curves A(H_0..H_i), train and test panels: per model the mean over its runs (seeds)
    with a +- one-std band, and its mean R dashed; one figure per loss (cross-entropy and squared
    risks are not on one scale)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups: dict[str, dict[tuple, list]] = {}
    for a in artefacts:
        r = a.data
        # Runs of one model average only over curves of one length (same number of blocks).
        groups.setdefault(r.loss, {}).setdefault((a.model or a.path.parent.name, len(r.curve_train)), []).append(r)
    figures = []
    for loss, by_model in groups.items():
        has_test = any(r.curve_test is not None for rs in by_model.values() for r in rs)
        fig, axes = plt.subplots(1, 2 if has_test else 1, figsize=(10.0 if has_test else 5.2, 3.6), squeeze=False)
        for ax, split in zip(axes[0], ("train", "test")):
            data = []
            for (model, _), rs in by_model.items():
                curves = [r.curve_train if split == "train" else r.curve_test for r in rs]
                risks = [r.model_risk_train if split == "train" else r.model_risk_test for r in rs]
                data.append((model, np.array([c for c in curves if c is not None], dtype=np.float64),
                             np.array([x for x in risks if x is not None], dtype=np.float64)))
            # Separable training features push A towards 0 by decades: a log axis, and the runs'
            # spread as a factor (log-space mean +- std), as an arithmetic band would cross 0.
            log = use_log_axis(np.concatenate([np.concatenate([c.ravel(), r]) for _, c, r in data]), ratio=50.0)
            for i, (model, curves, risks) in enumerate(data):
                if curves.size == 0:
                    continue
                color = f"C{i % 10}"
                x = np.arange(curves.shape[1])
                if log:
                    logs = np.log(curves)
                    centre = np.exp(logs.mean(axis=0))
                    sd = logs.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
                    lo, hi = centre / np.exp(sd), centre * np.exp(sd)
                else:
                    centre = curves.mean(axis=0)
                    sd = curves.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(curves.shape[1])
                    lo, hi = centre - sd, centre + sd
                ax.plot(x, centre, "-o", color=color, markersize=3, linewidth=1.2, label=f"{model} (n={len(curves)})")
                if len(curves) > 1:
                    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
                if risks.size:
                    ax.axhline(geometric_mean(risks) if log else risks.mean(), color=color, linestyle="--",
                               linewidth=0.9)
            if log:
                ax.set_yscale("log")
            ax.set_xlabel("last block i included (0 = pooled input only)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(f"A(H_0..H_i), {split}")
            band = "geometric mean ×/÷ std" if log else "mean ± std"
            ax.set_title(f"{split}: solid A(H_0..H_i) ({band} over runs), dashed R", fontsize=9)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"risk gap per block ({loss.replace('_', '-')} loss)", fontsize=10)
        fig.tight_layout()
        figures.append(fig)
    return figures


# ----------------------------------------------------------------------------------------------
# float16 headroom (NRL-fp16)
# ----------------------------------------------------------------------------------------------

def fp16_table(store) -> pd.DataFrame:
    """One row per float16 run of a Newton model in the store: whether it overflowed and its peaks.

    Reads each run's ``result.json`` (``nonfinite``: the step and layer where a loss turned
    non-finite) and ``fp16_peaks.json`` (``analysis.probes.fp16_peaks.second_order_peaks``); a run lacking
    the peaks file shows NaN there.
    """
    index = as_index(store)
    rows = []
    for run_id, run in sorted(index.runs.items()):
        config = run["config"]
        if config.get("precision") != "fp16" or not str(config.get("model", "")).startswith("newton_resnet"):
            continue
        path = Path(run["path"])
        result = RunDir(path).read_result() or {}
        peaks = json.loads((path / "fp16_peaks.json").read_text()) if (path / "fp16_peaks.json").is_file() else {}
        bad = result.get("nonfinite") or {}
        peak = peaks.get("peak") or {}
        label = run_id.split("-s")[0]
        rows.append({"run": run_id, "label": label, "seed": config.get("seed"),
                     "tanh": bool(config.get("model_options", {}).get("second_order_tanh", False)),
                     "overflowed": bool(bad), "at step": bad.get("step"), "where": bad.get("where", ""),
                     "epochs done": result.get("epochs_completed"),
                     "peak |N1(s)*f|": peak.get("product", math.nan), "peak |N2(.)|": peak.get("term", math.nan),
                     "peak |block out|": peak.get("output", math.nan),
                     "headroom (65504 / peak product)":
                         (FP16_MAX / peak["product"]) if peak.get("product") else math.nan})
    return pd.DataFrame(rows)


def plot_fp16_peaks(table: pd.DataFrame):
    """Peak |N1(s)*f| and |N2(.)| per run on a log axis against float16's largest value (65504);
    runs that hit a non-finite loss are drawn as red crosses."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.2), sharey=True)
    labels = list(dict.fromkeys(table["label"]))
    for ax, column in zip(axes, ("peak |N1(s)*f|", "peak |N2(.)|")):
        for i, label in enumerate(labels):
            part = table[table["label"] == label]
            x = i + np.linspace(-0.15, 0.15, len(part)) if len(part) > 1 else np.full(len(part), float(i))
            ok = ~part["overflowed"].to_numpy(dtype=bool)
            values = part[column].to_numpy(dtype=float)
            ax.scatter(x[ok], values[ok], color="C0", s=22, label="finite run" if i == 0 else None)
            if (~ok).any():
                # An overflowed run's peaks are those of its last good checkpoint (float32 forward).
                ax.scatter(x[~ok], values[~ok], color="C3", marker="x", s=30, label="overflowed")
        ax.axhline(FP16_MAX, color="k", linestyle="--", linewidth=0.9, label="float16 max 65504")
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(column, fontsize=9)
    axes[0].set_ylabel("largest |value| on training images")
    axes[0].legend(fontsize=7)
    fig.suptitle("float16 headroom of the second-order term (NRL-fp16)", fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------
# curvature
# ----------------------------------------------------------------------------------------------

def curvature_table(artefacts: list[Artefact]) -> pd.DataFrame:
    """Extreme Hessian eigenvalues (with their Lanczos error bounds) and the Hutch++ trace of each result."""
    rows = []
    for label, a in zip(_artefact_labels(artefacts), artefacts):
        s = a.data
        top, bounds = s.get("top_eigenvalues") or [math.nan], s.get("top_error_bounds") or [math.nan]
        trace = s.get("trace") or {}
        rows.append({"model": label, "module": s.get("module") or "(all)", "parameters": s.get("dim"),
                     "images": s.get("num_samples"), "BatchNorm": s.get("bn"), "loss": s.get("loss"),
                     "lambda_max": top[0], "lambda_max bound": bounds[0],
                     "lambda_min": s.get("min_eigenvalue", math.nan),
                     "lambda_min bound": s.get("min_error_bound", math.nan),
                     "trace": trace.get("value", math.nan), "trace std err": trace.get("std_error", math.nan),
                     "file in store": a.where})
    return pd.DataFrame(rows)


def plot_curvature(artefacts: list[Artefact]):
    """Smoothed Hessian spectral densities (SLQ, log scale), one panel per result; returns the Figure."""
    import matplotlib.pyplot as plt

    labels = _artefact_labels(artefacts)
    ncols = min(len(artefacts), _MAX_PANELS)
    nrows = math.ceil(len(artefacts) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.8 * ncols, 3.0 * nrows), squeeze=False)
    for ax, label, a in zip(axes.ravel(), labels, artefacts):
        d = a.data["density"]
        density = SpectralDensity(np.asarray(d["nodes"], dtype=np.float64), np.asarray(d["weights"], dtype=np.float64),
                                  int(d.get("num_matvecs", 0)))
        where = f" / {a.data['module']}" if a.data.get("module") else ""
        plot_spectral_density(density, title=f"{label}{where}", ax=ax)
    for ax in axes.ravel()[len(artefacts):]:
        ax.set_visible(False)
    fig.suptitle("Hessian spectral density (stochastic Lanczos quadrature)", fontsize=10)
    fig.tight_layout()
    return fig
