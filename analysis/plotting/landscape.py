"""Figures of loss landscapes (``analysis.probes.landscape``): filled contours with labelled levels,
panels on shared levels, 1-D curves, and a compact PNG writer."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from analysis.plotting import pyplot
from analysis.probes.landscape.result import LandscapeResult
from analysis.validation import check_int

__all__ = ["plot_contour", "plot_side_by_side", "plot_curve", "save_figure"]


def _levels(values: Sequence[np.ndarray], levels, log: bool) -> np.ndarray:
    if levels is not None and not isinstance(levels, (int, np.integer)):
        explicit = np.asarray(levels, dtype=np.float64)
        if log and np.any(explicit <= 0):
            raise ValueError(f"log=True needs positive contour levels; got {explicit.min():g}")
        return explicit
    n = 20 if levels is None else check_int("levels", levels, min_value=2)
    finite = np.concatenate([v[np.isfinite(v)].ravel() for v in values])
    if finite.size == 0:
        raise ValueError("nothing to plot: every grid value is NaN (an unfinished run?)")
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + 1e-12 + abs(lo) * 1e-6
    if log:
        positive = finite[finite > 0]
        if positive.size == 0:
            raise ValueError("log=True needs positive values; every grid value is <= 0 (use log=False)")
        lo = float(positive.min())
        hi = max(hi, lo * (1 + 1e-6))
        return np.geomspace(lo, hi, n)
    return np.linspace(lo, hi, n)


def _require_2d(name: str, result) -> LandscapeResult:
    if not isinstance(result, LandscapeResult):
        raise TypeError(f"{name} must be a LandscapeResult; got {type(result).__name__}")
    if result.ndim != 2:
        raise ValueError(f"{name} is a 1-D landscape; contour plots need 2 directions (use plot_curve)")
    return result


def _draw_contour(ax, result, levels, filled, trajectory, title, label_every: int = 2, log: bool = False):
    a, b = np.meshgrid(result.alphas, result.betas, indexing="ij")
    values = result.loss
    # With log levels the colours must follow the levels: a LogNorm spreads the colour map evenly
    # over the decades (a linear norm would paint every level below the top decade alike).
    norm = None
    if log:
        from matplotlib.colors import LogNorm
        norm = LogNorm(vmin=float(levels[0]), vmax=float(levels[-1]))
        values = np.where(values > 0, values, np.nan)  # log scale: non-positive values are not drawn
    cs_f = ax.contourf(a, b, values, levels=levels, cmap="viridis", norm=norm) if filled else None
    cs = ax.contour(a, b, values, levels=levels, colors="k" if filled else None,
                    cmap=None if filled else "viridis", norm=None if filled else norm, linewidths=0.6)
    ax.clabel(cs, cs.levels[::label_every], inline=True, fontsize=7, fmt="%.3g")
    if trajectory is not None:
        t = np.asarray(trajectory, dtype=np.float64)
        ax.plot(t[:, 0], t[:, 1], "-o", color="tab:red", markersize=2.5, linewidth=1.0, label="trajectory")
        ax.legend(loc="upper right", fontsize=7)
    ax.plot([0.0], [0.0], marker="*", color="white" if filled else "k", markersize=9, markeredgecolor="k")
    ax.set_xlabel(r"$\alpha$ (direction 1)")
    ax.set_ylabel(r"$\beta$ (direction 2)")
    ax.set_aspect("auto")
    if title:
        ax.set_title(title, fontsize=9)
    return cs_f if filled else cs


def _colorbar(fig, mappable, ax, label: str, log: bool):
    bar = fig.colorbar(mappable, ax=ax, label=label)
    if log:
        # contourf hands the colour bar its (geometric) levels as ticks, printed as 1.22668x10^3;
        # decades with plain labels read better, the contour labels give the exact levels
        from matplotlib.ticker import LogFormatterSciNotation, LogLocator
        bar.ax.yaxis.set_major_locator(LogLocator(base=10))
        bar.ax.yaxis.set_major_formatter(LogFormatterSciNotation(base=10))
        bar.ax.yaxis.set_minor_locator(LogLocator(base=10, subs="auto"))
    return bar


def plot_contour(result: LandscapeResult, *, levels=None, filled: bool = True, log: bool = False,
                 trajectory=None, title: str | None = None, ax=None):
    """Contour (filled by default) of a 2-D landscape with labelled levels; returns the Figure.

    ``levels``: a count or explicit values; ``log``: levels spaced geometrically (a count) and
    colours on a ``LogNorm``, labelled with their values; ``trajectory``: N x 2 coordinates to overlay (e.g.
    ``directions.info["trajectory"]`` of PCA directions). The trained weights are the star at 0.
    """
    _require_2d("result", result)
    plt = pyplot()
    lv = _levels([result.loss], levels, log)
    fig = ax.figure if ax is not None else plt.subplots(figsize=(4.6, 3.8))[0]
    ax = ax or fig.axes[0]
    mappable = _draw_contour(ax, result, lv, filled, trajectory, title, log=log)
    if filled:
        _colorbar(fig, mappable, ax, result.loss_name, log)
    return fig


def plot_side_by_side(results: dict, *, levels=None, filled: bool = True, log: bool = False):
    """Panels of several 2-D landscapes (e.g. a block and its baseline) on SHARED contour levels."""
    if not isinstance(results, dict) or not results:
        raise ValueError("results must be a non-empty dict title -> LandscapeResult")
    for k, r in results.items():
        _require_2d(f"results[{k!r}]", r)
    plt = pyplot()
    lv = _levels([r.loss for r in results.values()], levels, log)
    fig, axes = plt.subplots(1, len(results), figsize=(4.0 * len(results) + 0.8, 3.6), squeeze=False)
    mappable = None
    for ax, (title, r) in zip(axes[0], results.items()):
        mappable = _draw_contour(ax, r, lv, filled, None, title, log=log)
    if filled:
        _colorbar(fig, mappable, list(axes[0]), next(iter(results.values())).loss_name, log)
    fig.levels = lv  # the shared levels, for callers and tests
    return fig


def plot_curve(result: LandscapeResult, *, title: str | None = None, ax=None):
    """A 1-D landscape: loss (left axis) and accuracy (right axis) against alpha; returns the Figure."""
    if not isinstance(result, LandscapeResult):
        raise TypeError(f"result must be a LandscapeResult; got {type(result).__name__}")
    if result.ndim != 1:
        raise ValueError("result is a 2-D landscape; use plot_contour (or slice it)")
    plt = pyplot()
    fig = ax.figure if ax is not None else plt.subplots(figsize=(4.6, 3.2))[0]
    ax = ax or fig.axes[0]
    ax.plot(result.alphas, result.loss, color="tab:blue", label=result.loss_name)
    ax.set_xlabel(r"$\alpha$")
    ax.set_ylabel(result.loss_name, color="tab:blue")
    twin = ax.twinx()
    twin.plot(result.alphas, 100 * result.accuracy, color="tab:orange", linestyle="--", label="accuracy")
    twin.set_ylabel("accuracy (%)", color="tab:orange")
    twin.set_ylim(0, 100)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def save_figure(fig, path, *, dpi: int = 110) -> Path:
    """Save ``fig`` as a compact PNG (tight box, modest dpi) and close it; returns the path."""
    plt = pyplot()
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path
