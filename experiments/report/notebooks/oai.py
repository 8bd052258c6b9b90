# %% [markdown]
# # OAI: Optimization Algorithm Inspired DNN Structure Design (Li et al., 2018)
#
# Built by `blockaudit report` from stored results; do not edit the `.ipynb`, edit
# `experiments/notebooks/oai.py` and rebuild. Every number below is read from the audit
# (`blockaudit audit`), the committed reproduction or the results store; a section whose input
# is absent says `not run`.

# %% tags=["parameters"]
PAPER = "OAI"
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
# Lemma 1, Table 1, the HB/AGD/ADMM forms and the rates are settled by
# `theory_checks/test_oai.py`; OAI-table2 by the reproduction below; OAI-cifar by HB-Net /
# AGD-Net vs ResNet / DenseNet training comparisons.

# %%
report.show_claims(ctx)

# %% [markdown]
# ## Table 2 reproduction (OAI-table2)
#
# MSE of the GD, HB, AGD, AGD2 and ADMM nets on random pairs, mean and sd over seeds, with
# the MSE over training (`blockaudit reproduce oai-table2`).

# %%
report.show_reproduction(ctx, "oai-table2")

# %% [markdown]
# ## Training curves (OAI-cifar)
#
# Test accuracy and losses per epoch, mean ± one standard deviation over seeds. The paper:
# HB-Net (n = 18) 5.04% vs ResNet-110 5.06% error on C10+, AGD-Net ahead of DenseNet.

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
# The ResNEst risk gap (RN Prop. 2) of HB-Net, AGD-Net or baseline runs analysed with
# `blockaudit risk-gap`.

# %%
report.show_risk_gaps(ctx)

# %% [markdown]
# ## Curvature
#
# Hessian spectral density (stochastic Lanczos quadrature) and extreme eigenvalues at the
# trained weights; the momentum of HB/AGD blocks is claimed to act like a better-conditioned
# optimiser.

# %%
report.show_curvature(ctx)
