# %% [markdown]
# # Block audit
#
# A user's block against a baseline in the baseline's skeleton, trained on paired seeds
# (`blockaudit audit-block`). This notebook reads the audit written next to it
# (`block_audit.json`, `block_audit_curves.csv`) and the runs in the results store, and draws block
# and baseline on shared axes. Rebuild it with `blockaudit audit-block ... --out DIR` (nothing is
# trained again) or `python -m experiments.report.block_notebook DIR --store STORE`.

# %% tags=["parameters"]
AUDIT_DIR = "."
STORE = "runs"
BLOCK_ROOT = "."  # the folder the audit ran in: a block named by a relative FILE.py path is found from there

# %%
import math
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from IPython.display import Markdown, display

from experiments.audit.block import BlockAuditResult
from experiments.audit.block_probes import CURVATURE_IMAGES
from analysis.plotting.block_compare import plot_block_audit
from analysis.probes.landscape import loss_landscape, random_directions
from experiments.runs.data import load_dataset, normalize
from experiments.runs.store import load_run

plt.rcParams.update({"figure.dpi": 80, "font.size": 9})
result = BlockAuditResult.read(AUDIT_DIR)
frame = result.to_pandas()
meta = result.meta
display(Markdown(f"**{meta['block']}** ({meta.get('kind', 'block')}) vs **{meta['baseline']}**, profile "
                 f"`{meta['profile']}`: {meta['setting']}.  \nMade on {meta['provenance_line']}."))

# %% [markdown]
# ## Verdicts
#
# Effects are means over seeds with the two-sided 95% t interval: accuracy in percentage points,
# the risk gap in nats, the rest as ratios block / baseline. `spread` is the float-noise twins'
# change of the effect; a verdict that the interval shifted by it would change is inconclusive.

# %%
shown = frame[["check", "claim", "region", "block", "baseline", "effect", "ci_low", "ci_high", "n", "spread",
               "verdict"]]
display(shown.style.format({c: "{:.4g}" for c in ("block", "baseline", "effect", "ci_low", "ci_high", "spread")},
                           na_rep="n/a").hide(axis="index"))
for check, why in meta.get("not_applicable", {}).items():
    display(Markdown(f"- `{check}` not measured: {why}."))

# %% [markdown]
# ## Training and the ratio checks
#
# Left: test accuracy per epoch (mean over seeds, band min..max); dashed, the same nets with every
# activation removed (linear capacity). Right: each ratio with its interval on a log axis; 1 is
# no difference.

# %%
if result.curves is not None:
    fig = plot_block_audit(result.curves, frame, f"{meta['block']} vs {meta['baseline']}")
    plt.show()

# %% [markdown]
# ## Per seed
#
# Every check's value for block and baseline on each seed, a line joining the pair: paired seeds
# share initialisation stream and batch order, so the pairs, not the clouds, carry the comparison.

# %%
checks = [r for r in result.rows if r.get("block_values")]
checks = list({r["check"]: r for r in checks}.values())
cols = 4
rows_n = math.ceil(len(checks) / cols)
fig, axes = plt.subplots(rows_n, cols, figsize=(2.6 * cols, 2.1 * rows_n), squeeze=False)
for ax, row in zip(axes.flat, checks):
    b, a = np.asarray(row["block_values"]), np.asarray(row["baseline_values"])
    for i, (bi, ai) in enumerate(zip(b, a)):
        ax.plot([0, 1], [ai, bi], "-", color="0.7", lw=1)
    ax.plot(np.zeros_like(a), a, "o", color="tab:blue", label="baseline")
    ax.plot(np.ones_like(b), b, "o", color="tab:red", label="block")
    ax.set_xticks([0, 1], ["baseline", "block"])
    ax.set_xlim(-0.4, 1.4)
    ax.set_title(row["check"], fontsize=9)
    if row["unit"] == "x" and min(a.min(), b.min()) > 0 and max(a.max(), b.max()) / min(a.min(), b.min()) > 20:
        ax.set_yscale("log")
for ax in list(axes.flat)[len(checks):]:
    ax.axis("off")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Loss along a shared direction
#
# Seed 0 of block and baseline at their trained weights, the test loss on the probes' images along
# one seeded filter-normalised random direction (Li et al. 2018): the normalisation scales each
# filter of the direction to the norm of the model's filter, so the two curves are on one scale
# although the models differ. The sharpness check reads this curve at +-0.25.

# %%
store = Path(STORE)
run_ids = {label: next((r for r in meta["runs"] if r.startswith(f"{label}-s0-")), None)
           for label in ("block", "baseline")}
if not all(run_ids.values()) or not all((store / "runs" / r / "checkpoint.pt").exists() for r in run_ids.values()):
    display(Markdown(f"The seed-0 checkpoints are not in `{store}`: no slice drawn."))
else:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    steps = np.linspace(-1.0, 1.0, 21)
    data = None
    for label, colour in (("baseline", "tab:blue"), ("block", "tab:red")):
        here, run_path = os.getcwd(), (store / "runs" / run_ids[label]).resolve()
        os.chdir(BLOCK_ROOT)
        try:
            net, config = load_run(run_path)
        finally:
            os.chdir(here)
        if data is None:
            data = load_dataset(config.dataset, **config.dataset_options)
            batch = (normalize(data.test_images, data.mean, data.std)[:CURVATURE_IMAGES],
                     data.test_labels[:CURVATURE_IMAGES])
        land = loss_landscape(net, random_directions(net, 1, seed=0), [batch], steps, bn="eval")
        ax.plot(steps, np.asarray(land.loss).reshape(-1), "-o", ms=3, color=colour, label=label)
    ax.axvspan(-0.25, 0.25, color="0.92", zorder=0)
    ax.set(xlabel="step along the filter-normalised direction", ylabel="test loss", yscale="log",
           title="seed 0, shared direction seed")
    ax.legend(frameon=False)
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Where the numbers come from

# %%
display(Markdown("\n".join([f"- spec: `{meta.get('spec')}`", f"- block source SHA-256: `{meta['block_sha256']}`",
                            f"- sweep `{meta['sweep']}`, store `{meta['store']}`, {len(meta['runs'])} runs",
                            f"- torch {torch.__version__}; made on {meta['provenance_line']}"])))
