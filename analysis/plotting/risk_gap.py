"""Figures of the ResNEst risk gap (``analysis.probes.risk_gap``): the per-block curve A(H_0..H_i)."""
from __future__ import annotations

from pathlib import Path
import numpy as np

from analysis.probes.risk_gap import RiskGapResult

__all__ = ["plot_risk_gap"]


def plot_risk_gap(result: RiskGapResult, path: Path | str, title: str | None = None) -> Path:
    """Draw the per-block curve A(H_0..H_i) (train, test) with R as horizontal lines; write a PNG."""
    # Agg whatever the backend was (unlike analysis.plotting.pyplot, which keeps a notebook's inline
    # backend): this function only ever writes a file.
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = result.to_frame()
    long = frame.melt(id_vars=["block"], value_vars=["A_train", "A_test"], var_name="split", value_name="risk")
    long = long.dropna()
    long["split"] = long["split"].map({"A_train": "A(H_0..H_i), train", "A_test": "A(H_0..H_i), test"})
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    sns.lineplot(data=long, x="block", y="risk", hue="split", marker="o", ax=ax)
    ax.axhline(result.model_risk_train, color="C0", ls="--", lw=1, label="R (trained head), train")
    if result.model_risk_test is not None:
        ax.axhline(result.model_risk_test, color="C1", ls="--", lw=1, label="R (trained head), test")
    values = np.concatenate([long["risk"].to_numpy(), [result.model_risk_train]])
    if np.all(values > 0) and values.max() / values.min() > 50:
        ax.set_yscale("log")  # separable train features push A towards 0 and test A far up
    ax.set_xlabel("last block i included (0 = pooled input only)")
    ax.set_ylabel(f"{result.loss.replace('_', '-')} risk")
    ax.set_title(title or f"risk gap eps = R - A* = {result.eps_train:.4g} (train)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
