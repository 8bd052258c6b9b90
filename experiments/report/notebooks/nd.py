# %% [markdown]
# # ND: Newton design (Shen et al., Sci China Inf Sci 2023)
#
# Built by `blockaudit report` from stored results; do not edit the `.ipynb`, edit
# `experiments/notebooks/nd.py` and rebuild. Every number below is read from the audit
# (`blockaudit audit`), the committed reproduction or the results store; a section whose input
# is absent says `not run`.

# %% tags=["parameters"]
PAPER = "ND"
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
# The theorems (Prop. 1, the Hessian, the Neumann series, the linear rate, Newton-CG) are
# settled by `theory_checks/test_nd.py`; ND-table2 by the reproduction below; ND-depth and
# ND-best by Newton-CGNet vs ResNet training comparisons.

# %%
report.show_claims(ctx)

# %% [markdown]
# ## Table 2 reproduction (ND-table2)
#
# Iterations of quasi-Newton and Newton-CG to |F(x_k) - F(0)| < 1e-20 on the paper's
# quadratic (n = 2048, gamma = 0.9999), ours beside the paper's (`blockaudit reproduce nd-table2`).

# %%
report.show_reproduction(ctx, "nd-table2")

# %% [markdown]
# ## Training curves (ND-depth, ND-best)
#
# Test accuracy and losses per epoch, mean ± one standard deviation over seeds. The paper:
# Newton-CGNets lose to ResNets of equal size with few CG blocks and win with many
# (Newton-CGNet-82 4.90% vs ResNet-164 5.57% error on C10+).

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
# The ResNEst risk gap (RN Prop. 2) of Newton-CGNet or ResNet runs analysed with
# `blockaudit risk-gap`.

# %%
report.show_risk_gaps(ctx)

# %% [markdown]
# ## Curvature
#
# Hessian spectral density (stochastic Lanczos quadrature) and extreme eigenvalues at the
# trained weights.

# %%
report.show_curvature(ctx)
