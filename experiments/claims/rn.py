"""RN: Chen et al., ResNEsts and DenseNEsts. Its claims (CLAIMS.md) and the checks that settle them."""

from __future__ import annotations

from experiments.claims.profiles import FULL_BASE, QUICK_BASE, full_profile, model, quick_profile
from experiments.claims.types import Claim, Comparison, EmpiricalCheck, Paper, Region, TheoryCheck

PAPER = Paper("RN", "Chen et al., ResNEsts and DenseNEsts (NeurIPS 2021), papers/003_39cd59db41b06d3f.txt")

THEORY = TheoryCheck()
THEORY_TOL = "tolerances derived per assertion in the test (float64 round-off or solver certificate)"


def _rn_models(lr: float, **width) -> list[dict]:
    # The plain ResNEst trains at a tenth of the others' learning rate (the authors' code: 0.01 vs 0.1).
    resnest = {**model("resnest", "resnest20", **width), "base": {"lr": lr / 10}}
    return [
        model("standard", "resnet20", **width),
        resnest,
        model("bn_resnest", "bn_resnest20", **width),
        model("a_resnest", "a_resnest20", **width),
    ]


_RN_CMPS = (
    Comparison(
        "resnest",
        "standard",
        Region(hi=0.0),
        "-1.58 pts (91.02 vs 92.60, ResNet-20)",
        "plain ResNEst below the standard ResNet",
    ),
    Comparison(
        "bn_resnest",
        "standard",
        Region(-0.5),
        "-0.04 pts (92.56 vs 92.60)",
        "BN-ResNEst at most 0.5 pt below the standard ResNet",
    ),
    Comparison(
        "a_resnest",
        "standard",
        Region(-0.5),
        "-0.13 pts (92.47 vs 92.60)",
        "A-ResNEst at most 0.5 pt below the standard ResNet",
    ),
)


RN_CIFAR_CHECK = EmpiricalCheck(
    "rn-cifar",
    quick=quick_profile("rn-cifar", _rn_models(QUICK_BASE["lr"], width=8), _RN_CMPS, width=8, artefacts=("risk_gap",)),
    full=full_profile(
        "rn-cifar",
        _rn_models(FULL_BASE["lr"]),
        _RN_CMPS,
        seeds=[0, 1, 2],
        epochs=15,
        artefacts=("risk_gap",),
        workers_hint=4,
        note="ResNet-20 only (not ResNet-110 / WRN-16-8 / CIFAR-100); plain ResNEst at "
        "lr 0.02, as the authors' 10x smaller rate",
    ),
)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "RN-P1",
        "Prop. 1",
        "squared loss + Assumption 1: (P_phi) is non-convex and non-concave; every critical point that "
        "is not a local minimum is a saddle",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-P2",
        "Prop. 2",
        "with a loss convex in the prediction, (PA_phi) is convex, and eps = R(W_L*, W_{L+1}*) - A(H*) "
        ">= 0 for every local minimiser of (P_phi)",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-unpredictable",
        "Question 2",
        "a block can strictly improve the A-ResNEst risk only if its features are not linearly "
        "predictable from earlier features",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-T1",
        "Theorem 1",
        "Assumptions 2, 3 (M >= N_o) and 4: every critical point of (P_phi) with full-rank W_{L+1} is a "
        "global minimum, and eps = 0 at every local minimiser",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-bottleneck",
        "eq (10)",
        "Assumption 4 needs M >= sum_{i<L} K_i (bottleneck condition); without expansion Assumption 4 fails for L > 1",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-R2",
        "Remark 2, Cor. 2",
        "under the assumptions, residual representations improve monotonically over blocks; a deeper "
        "ResNEst is no worse than a shallower one",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-C3",
        "Cor. 3",
        "under Assumptions 2-4, every local minimiser's risk <= the best linear predictor's risk; "
        "strictly, if the nonlinear features help",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-T4",
        "Theorem 4",
        "squared loss, Assumptions 1, 3, 4: at every saddle of (P_phi) W_{L+1} is rank-deficient and "
        "there is a direction of strictly negative curvature",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-P3",
        "Prop. 3",
        "every local minimum of a DenseNEst is <= the best linear predictor's risk, with no special design",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-P4",
        "Prop. 4",
        "every DenseNEst equals a wide ResNEst with bottleneck blocks (same outputs for all inputs) with "
        "eps = 0 at all local minima",
        "structural + theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "RN-cifar",
        "tables",
        "CIFAR-10 accuracy, Standard / ResNEst / BN-ResNEst / A-ResNEst: ResNet-20 92.60 / 91.02 / "
        "92.56 / 92.47; ResNet-110 94.46 / 92.77 / 94.52 / 93.97; WRN-16-8 95.56 / 94.39 / 95.48 / 95.29; "
        "CIFAR-100 ResNet-20 68.56 / 64.73 / 68.47 / 68.16",
        "empirical",
        RN_CIFAR_CHECK,
        "CI of ResNEst - Standard below 0; of BN-/A-ResNEst - Standard inside (-0.5, +inf) pts",
        "ResNEst ~1.5 pts below, the others within ~0.5",
    ),
)
