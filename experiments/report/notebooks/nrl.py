# %% [markdown]
# # NRL: Newton Residual Learning (ICLR 2020 submission)
#
# Built by `blockaudit report` from stored results; do not edit the `.ipynb`, edit
# `experiments/notebooks/nrl.py` and rebuild. Every number below is read from the audit
# (`blockaudit audit`) or the results store; a section whose input is absent says `not run`.

# %% tags=["parameters"]
PAPER = "NRL"
STORE = "../../runs"
AUDIT_JSON = "../audit.json"
REPORTS = ".."

# %%
from experiments import report

report.setup_notebook()
ctx = report.ReportContext.from_parameters(PAPER, STORE, AUDIT_JSON, REPORTS)
report.show_header(ctx)

# %% [markdown]
# ## Claims and verdicts
#
# NRL-block and NRL-poly are settled by `theory_checks/test_nrl.py`; the CIFAR claims
# (NRL-params, NRL-linear, NRL-c100), NRL-fp16 and NRL-contour by training comparisons.

# %%
report.show_claims(ctx)

# %% [markdown]
# ## Training curves (NRL-params, NRL-linear, NRL-c100, NRL-fp16)
#
# Test accuracy and losses per epoch, mean ± one standard deviation over seeds. The paper:
# Newton-ResNets match ResNet18/34 with ~40% fewer parameters, and stay far ahead of them
# with every activation removed (Table 2: 0.876-0.916 vs 0.391).

# %%
report.show_training_curves(ctx)

# %% [markdown]
# ## Float16 headroom (NRL-fp16, sec. 4.4)
#
# The paper trained in float16 and saw the second-order term overflow, fixed by a tanh after N2.
# Each Newton-ResNet [2,2,1,1] run below trained in float16 autocast, with or without that tanh; a
# run whose loss turned non-finite stopped there (step and layer given). The peaks are measured
# after training, in float32 on training images: how close the term came to float16's 65504.

# %%
report.show_fp16(ctx)

# %% [markdown]
# ## Loss landscapes (NRL-contour, Fig. 1)
#
# Filter-normalised random directions around the trained weights; Newton-ResNet and ResNet
# trained on the same data are drawn side by side on shared contour levels.

# %%
report.show_landscapes(ctx)

# %% [markdown]
# ## Risk gap per block
#
# The ResNEst risk gap (RN Prop. 2) applies to any residual feature finder; shown when a
# Newton-ResNet run was analysed with `blockaudit risk-gap`.

# %%
report.show_risk_gaps(ctx)

# %% [markdown]
# ## Curvature
#
# Hessian spectral density (stochastic Lanczos quadrature) and extreme eigenvalues at the
# trained weights; the second-order term of the Newton block changes the curvature the
# optimiser sees.

# %%
report.show_curvature(ctx)
