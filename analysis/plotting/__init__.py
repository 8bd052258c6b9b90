"""Figures of the probes, drawn with matplotlib (imported on first use, so the library imports without it).

- ``analysis.plotting.landscape``  ``plot_contour``, ``plot_side_by_side``, ``plot_curve``, ``save_figure``;
- ``analysis.plotting.curvature``  ``plot_spectral_density``;
- ``analysis.plotting.risk_gap``   ``plot_risk_gap``.

Every function returns the Figure (or writes a PNG and returns its path); none shows a window.
"""
from __future__ import annotations

__all__ = ["pyplot"]


def pyplot():
    """``matplotlib.pyplot``, imported on first use, on the Agg backend unless it already runs Agg or
    a notebook's inline backend (so figures render without a display)."""
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt
