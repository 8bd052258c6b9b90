"""Figures of a block audit (``experiments.audit.block``): block and baseline on shared axes."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.plotting import pyplot

__all__ = ["plot_block_audit"]

_COLOURS = {"block": "tab:red", "baseline": "tab:blue", "block_linear": "tab:red", "baseline_linear": "tab:blue"}


def plot_block_audit(curves: pd.DataFrame, effects: pd.DataFrame, title: str):
    """Left: test accuracy per epoch of every label (mean over seeds, band = min..max); right: each
    ratio check's mean and 95% interval on a log axis, with 1 (no difference) marked.

    ``curves``: results-table rows (label, seed, epoch, test_acc); ``effects``: the audit's rows
    (check, unit, effect, ci_low, ci_high, verdict). Returns the Figure.
    """
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.5, 3.8), gridspec_kw={"width_ratios": [1, 1.1]})
    for label, rows in curves.groupby("label", sort=False):
        if "+" in str(label):  # the float-noise twins ("<label>+ulp") are in the verdicts, not the curves
            continue
        g = rows.groupby("epoch")["test_acc"]
        mean, lo, hi = 100 * g.mean(), 100 * g.min(), 100 * g.max()
        style = "--" if label.endswith("_linear") else "-"
        left.plot(mean.index, mean.values, style, color=_COLOURS.get(label, "tab:gray"), label=label)
        left.fill_between(mean.index, lo.values, hi.values, color=_COLOURS.get(label, "tab:gray"), alpha=0.15)
    left.set(xlabel="epoch", ylabel="test accuracy (%)", title="training (mean, min..max over seeds)")
    left.legend(fontsize=8, frameon=False)
    ratios = effects[(effects["unit"] == "x") & np.isfinite(effects["effect"]) & (effects["effect"] > 0)]
    ratios = ratios.drop_duplicates("check")
    y = np.arange(len(ratios))[::-1]
    lo = np.where(ratios["ci_low"] > 0, ratios["ci_low"], ratios["effect"])
    hi = np.where(np.isfinite(ratios["ci_high"]), ratios["ci_high"], ratios["effect"])
    right.errorbar(ratios["effect"], y, xerr=[ratios["effect"] - lo, hi - ratios["effect"]], fmt="o", color="k",
                   capsize=3)
    right.axvline(1.0, color="gray", lw=1)
    right.set_xscale("log")
    right.set_yticks(y, ratios["check"])
    right.set(xlabel="block / baseline (95% CI over seeds)", title="ratio checks")
    pts = effects[effects["unit"] == "pts"].drop_duplicates("check")
    text = "; ".join(f"{c}: {e:+.2f} pts [{a:+.2f}, {b:+.2f}]" if math.isfinite(a) else f"{c}: {e:+.2f} pts"
                     for c, e, a, b in zip(pts["check"], pts["effect"], pts["ci_low"], pts["ci_high"]))
    fig.suptitle(f"{title}\n{text}", fontsize=9)
    fig.tight_layout()
    return fig
