# %% [markdown]
# # RN: ResNEsts and DenseNEsts (Chen et al., NeurIPS 2021)
#
# Built by `blockaudit report` from stored results; do not edit the `.ipynb`, edit
# `experiments/notebooks/rn.py` and rebuild. Every number below is read from the audit
# (`blockaudit audit`) or the results store; a section whose input is absent says `not run`.

# %% tags=["parameters"]
PAPER = "RN"
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
# The theorems (Prop. 1-4, Thm. 1 and 4, Cor. 3) are settled by `theory_checks/test_rn.py`;
# RN-cifar by the Standard / ResNEst / BN-ResNEst / A-ResNEst training comparison.

# %%
report.show_claims(ctx)

# %% [markdown]
# ## Training curves (RN-cifar)
#
# Test accuracy and losses per epoch, mean ± one standard deviation over seeds. The paper:
# ResNEst about 1.5 points below the standard ResNet, BN-ResNEst and A-ResNEst within 0.5.

# %%
report.show_training_curves(ctx)

# %% [markdown]
# ## Risk gap per block (Prop. 2, Question 2)
#
# A(H_0..H_i) is the best linear predictor on the pooled input and the features of blocks
# 1..i (eq. (7)); eps = R - A* >= 0 at a local minimiser (eq. (8)). A block lowers the curve only
# if its features are not linearly predictable from the earlier ones (eq. (9)).

# %%
report.show_risk_gaps(ctx)

# %% [markdown]
# ## Loss landscapes
#
# Filter-normalised random directions around the trained weights; models trained on the same
# data are drawn side by side on shared contour levels, so equal colours mean equal loss.

# %%
report.show_landscapes(ctx)

# %% [markdown]
# ## Curvature
#
# Hessian spectral density (stochastic Lanczos quadrature) and extreme eigenvalues at the
# trained weights; a negative smallest eigenvalue beyond its bound means a saddle, not a minimum.

# %%
report.show_curvature(ctx)
