# %% [markdown]
# # IM: Identity Matters in Deep Learning (Hardt & Ma, ICLR 2017)
#
# Built by `blockaudit report` from stored results; do not edit the `.ipynb`, edit
# `experiments/notebooks/im.py` and rebuild. Every number below is read from the audit
# (`blockaudit audit`) or the results store; a section whose input is absent says `not run`.

# %% tags=["parameters"]
PAPER = "IM"
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
# Theorem 1, its counterexample without the norm bound, and the construction of Theorem 2
# are settled by `theory_checks/test_im.py`; IM-cifar by training the all-convolutional
# identity ResNet (no batch norm, fixed random last layer).

# %%
report.show_claims(ctx)

# %% [markdown]
# ## Training curves (IM-cifar)
#
# Test accuracy and losses per epoch, mean ± one standard deviation over seeds. The claim:
# the identity ResNet trains well on CIFAR-10 (test accuracy well above chance, > 80%).

# %%
report.show_training_curves(ctx)

# %% [markdown]
# ## Loss landscapes
#
# Filter-normalised random directions around the trained weights, comparable models side
# by side on shared contour levels.

# %%
report.show_landscapes(ctx)

# %% [markdown]
# ## Risk gap per block
#
# The ResNEst risk gap (RN Prop. 2) of identity-ResNet runs analysed with `blockaudit risk-gap`.

# %%
report.show_risk_gaps(ctx)

# %% [markdown]
# ## Curvature
#
# Hessian spectral density and extreme eigenvalues at the trained weights; Theorem 1 says
# critical points near the identity are global minima, so no negative eigenvalue beyond its
# bound is expected there.

# %%
report.show_curvature(ctx)
