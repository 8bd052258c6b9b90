"""Figures of Hessian curvature (``analysis.probes.curvature``): the smoothed spectral density."""
from __future__ import annotations

from analysis.plotting import pyplot
from analysis.probes.curvature import SpectralDensity

__all__ = ["plot_spectral_density"]


def plot_spectral_density(density: SpectralDensity, *, sigma: float | None = None, log: bool = True,
                          title: str | None = None, ax=None):
    """The smoothed density (log scale by default, as Ghorbani et al.); returns the Figure."""
    if not isinstance(density, SpectralDensity):
        raise TypeError(f"density must be a SpectralDensity; got {type(density).__name__}")
    plt = pyplot()
    fig = ax.figure if ax is not None else plt.subplots(figsize=(4.6, 3.2))[0]
    ax = ax or fig.axes[0]
    grid, dens = density.curve(sigma=sigma)
    ax.plot(grid, dens, color="tab:blue")
    if log:
        ax.set_yscale("log")
        ax.set_ylim(max(dens.max() * 1e-8, 1e-12), dens.max() * 2)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    if title:
        ax.set_title(title, fontsize=9)
    return fig
