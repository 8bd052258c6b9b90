"""OAI: Li et al., optimization-algorithm-inspired structures. Its claims (CLAIMS.md) and their checks."""

from __future__ import annotations

from experiments.claims.profiles import full_profile, model, quick_profile
from experiments.claims.types import Claim, Comparison, EmpiricalCheck, Paper, Region, Reproduction, TheoryCheck

PAPER = Paper(
    "OAI", "Li et al., Optimization Algorithm Inspired DNN Structure Design (2018), papers/002_605766797e3c4bb5.txt"
)

THEORY = TheoryCheck()
THEORY_TOL = "tolerances derived per assertion in the test (float64 round-off or solver certificate)"


OAI_CIFAR_CHECK = EmpiricalCheck(
    "oai-cifar",
    quick=quick_profile(
        "oai-cifar",
        [model("hbnet9", "hbnet9", width=4), model("resnet56", "postact_resnet56", width=4)],
        [
            Comparison(
                "hbnet9",
                "resnet56",
                Region(lo=0.0),
                "+0.02 pts on C10+ (5.04% vs 5.06% error, n = 18), +0.51 on C10",
                "HB-Net better than the post-activation ResNet of the same depth",
            )
        ],
        width=4,
        epochs=4,
    ),
    full=full_profile(
        "oai-cifar",
        [model("hbnet9", "hbnet9"), model("resnet56", "postact_resnet56")],
        [
            Comparison(
                "hbnet9",
                "resnet56",
                Region(lo=0.0),
                "+0.02 pts on C10+ (5.04% vs 5.06% error, n = 18, Table 4)",
                "HB-Net better than the post-activation ResNet of the same depth",
            )
        ],
        seeds=[0, 1],
        epochs=6,
        note="C10+ (augmented); n = 9 (HB-Net-9 vs ResNet-56), not the paper's n = 18, to fit the "
        "budget; AGD-Net vs DenseNet not run",
    ),
)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "OAI-lemma1",
        "Lemma 1, eq (8)-(10)",
        "for W symmetric positive definite and U = sqrt(W), gradient descent (step 1) on f(z) = "
        "||z||^2/2 - sum_i Psi(U_i^T z) with Psi' = phi, mapped back by x = U^{-1} z, is exactly "
        "x_{k+1} = phi(W x_k)",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "OAI-table1",
        "Table 1",
        "the objective for each activation (sigmoid, tanh, ReLU, leaky ReLU, ELU, swish) has "
        "derivative equal to that activation",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "OAI-hb-agd-admm",
        "eq (11)-(14)",
        "the same change of variables turns heavy-ball, Nesterov (both forms) and linearized ADMM into "
        "the stated x-space recurrences",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "OAI-agd-forms",
        "eq (3)-(5)",
        "Nesterov form (4) with weights (5) produces the same iterates as form (3)",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "OAI-rates",
        "sec 2",
        "on mu-strongly convex, L-smooth f, HB and AGD need O(sqrt(L/mu) log 1/eps) iterations vs "
        "O(L/mu log 1/eps) for GD",
        "theorem (numeric check on quadratics)",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "OAI-table2",
        "Table 2, sec 5.3",
        "trained nets of depth 10..40 on 10,000 random N(0,I) pairs in R^100, sigmoid, MSE after 1000 "
        "epochs: HB, AGD, AGD2 below GD; ADMM worst",
        "numeric",
        Reproduction("oai-table2"),
        "see `blockaudit reproduce oai-table2`",
        "differences ~0.5%",
    ),
    Claim(
        "OAI-special",
        "Table 3",
        "ResNet = HB form (16) with beta2 = 0; DenseNet = AGD form (18) with beta = 0, alpha = 1 (up to "
        "concatenation vs sum); DMRNet = ADMM form (20) with alpha = beta = 1/2",
        "structural",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "OAI-cifar",
        "Table 4",
        "HB-Net (n = 18) 8.66 / 36.4 / 5.04 / 23.93 % error on C10 / C100 / C10+ / C100+ vs ResNet-110 "
        "9.17 / 38.13 / 5.06 / 24.71; AGD-Net beats DenseNet",
        "empirical",
        OAI_CIFAR_CHECK,
        "CI of HB-Net - ResNet accuracy (same depth) above 0",
        "~0.5-1.7 pts",
    ),
)
