"""ResNEsts, A-ResNEsts and DenseNEsts with vector features (RN paper: Chen, Lee, Garudadri, Rao,
NeurIPS 2021, papers/003_39cd59db41b06d3f.txt).

Conventions (samples are ROWS, float64 throughout):

- input ``x``: (N, N_in); residual stream ``x_i``: (N, M); feature ``v_i``: (N, K_i), v_0 = x, K_0 = N_in.
- a block is ``ResidualBlock(G, W)``: eq (1) x_i = x_{i-1} + W_i G_i(x_{i-1}), so with rows
  X_i = X_{i-1} + V_i W_i^T, W_i of shape (M, K_i). The expansion W_0 is (M, N_in): X_0 = x W_0^T.
- eq (2): ResNEst output y = W_{L+1} sum_{i=0}^{L} W_i v_i, W_{L+1} of shape (N_o, M).
- eq (6): A-ResNEst output y = sum_i H_i v_i. The solvers return the stacked coefficient
  ``H`` of shape (D, N_o), D = sum_i K_i, so that y^T = v^T H with v = [v_0; ...; v_L]; the paper's
  H_i is ``H[rows of block i].T``.
- DenseNEst (the paper's Sec. 5, only a block diagram survives in the slides; we use the paper's
  definition): v_0 = x, v_i = G_i([v_0; ...; v_{i-1}]) (each dense block sees the concatenation of
  all earlier features), output y = W_{L+1} [v_0; ...; v_L].

Losses: ``"squared"``: l(y_hat, y) = ||y - y_hat||^2 (the paper's squared loss, no 1/2);
``"cross_entropy"``: l(y_hat, y) = logsumexp(y_hat) - y^T y_hat with ``y`` a probability vector
(one-hot or soft labels), convex in y_hat (Assumption 2). Risks are means over the N samples, eq (5).

The empirical risks: (P_phi) eq (4)-(5) R(W_L, W_{L+1}; phi) with the feature-finding weights
phi = {W_{i-1}, theta_i} fixed, so only x_{L-1} = sum_{i<L} W_i v_i and v_L matter
(``PredictionFeatures``); (PA_phi) eq (7) A(H_0..H_L; phi), convex in H; eq (8)
eps = R(W_L*, W_{L+1}*) - A(H*) >= 0.

The modules: ``features`` (blocks, features, forward passes), ``risk`` ((PA_phi): losses, least
squares from moments, the cross-entropy solver with its duality certificate), ``prediction``
((P_phi): local minima from random starts, eps and its certificate), ``assumptions`` (Assumptions
1, 3, 4, eq (10), and the landscape of Prop. 1 / Thm 4), ``densenest`` (Prop. 3, 4). Every public
name is re-exported here, so ``from analysis.theory import rn`` then ``rn.a_resnest_risk`` works.
"""
from analysis.theory.rn.assumptions import (
    assumption1_holds,
    assumption3_holds,
    assumption4_holds,
    bottleneck_condition_holds,
    constructed_critical_point,
    nonconcavity_witness,
    nonconvexity_witness,
)
from analysis.theory.rn.densenest import densenest_features, densenest_forward, densenest_to_resnest
from analysis.theory.rn.features import (
    ACTIVATIONS,
    FeatureMap,
    PredictionFeatures,
    ResidualBlock,
    a_resnest_forward,
    activation,
    check_prediction_features,
    prediction_features,
    random_feature_map,
    random_resnest,
    resnest_features,
    resnest_forward,
    resnest_residuals,
    stack_features,
)
from analysis.theory.rn.prediction import (
    EpsilonGap,
    LocalMinimum,
    a_resnest_gradient_bound,
    epsilon_bound_from_gradient,
    epsilon_gap,
    induced_H,
    resnest_prediction_risk,
    solve_resnest_prediction,
)
from analysis.theory.rn.risk import (
    LOSSES,
    AResNEstSolution,
    a_resnest_risk,
    a_resnest_risk_curve,
    best_linear_risk,
    check_targets,
    lbfgs_minimize,
    least_squares_risk_from_moments,
    loss_and_gradient,
    loss_value,
    single_thread_blas,
    smallest_positive_eigenvalue,
)

__all__ = [
    "ACTIVATIONS",
    "LOSSES",
    "FeatureMap",
    "ResidualBlock",
    "PredictionFeatures",
    "AResNEstSolution",
    "LocalMinimum",
    "EpsilonGap",
    "activation",
    "random_feature_map",
    "random_resnest",
    "resnest_features",
    "resnest_residuals",
    "resnest_forward",
    "a_resnest_forward",
    "prediction_features",
    "least_squares_risk_from_moments",
    "best_linear_risk",
    "a_resnest_risk",
    "a_resnest_risk_curve",
    "loss_value",
    "resnest_prediction_risk",
    "solve_resnest_prediction",
    "epsilon_gap",
    "epsilon_bound_from_gradient",
    "a_resnest_gradient_bound",
    "induced_H",
    "assumption1_holds",
    "assumption3_holds",
    "assumption4_holds",
    "bottleneck_condition_holds",
    "nonconvexity_witness",
    "nonconcavity_witness",
    "constructed_critical_point",
    "densenest_features",
    "densenest_forward",
    "densenest_to_resnest",
    # shared by the solvers and by analysis.probes.risk_gap
    "single_thread_blas",
    "lbfgs_minimize",
    "stack_features",
    "check_prediction_features",
    "check_targets",
    "loss_and_gradient",
    "smallest_positive_eigenvalue",
]
