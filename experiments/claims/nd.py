"""ND: Shen et al., Newton design. Its claims (CLAIMS.md) and the checks that settle them."""

from __future__ import annotations

from experiments.claims.profiles import full_profile, model, quick_profile
from experiments.claims.types import (
    Claim,
    Comparison,
    EmpiricalCheck,
    Paper,
    ProfileSpec,
    Region,
    Reproduction,
    TheoryCheck,
)

PAPER = Paper("ND", "Shen et al., Newton design (Sci China Inf Sci 2023), papers/001_7d8a77c69ed28a39.txt")

THEORY = TheoryCheck()
THEORY_TOL = "tolerances derived per assertion in the test (float64 round-off or solver certificate)"


_ND_CMPS = (
    Comparison(
        "cgnet_shallow",
        "resnet_shallow",
        Region(hi=0.0),
        "-0.30 pts (Newton-CGNet-16 7.29% vs ResNet-32 6.99% error, N3 = 3, Table 3)",
        "with few CG blocks (N3 <= 5) the Newton-CGNet is worse",
    ),
    Comparison(
        "cgnet_deep",
        "resnet_deep",
        Region(lo=0.0),
        "+0.38 pts (Newton-CGNet-56 5.35% vs ResNet-110 5.73% error, N3 = 9)",
        "with many CG blocks (N3 >= 9) the Newton-CGNet is better",
    ),
)


ND_DEPTH_CHECK = EmpiricalCheck(
    "nd-depth",
    quick=quick_profile(
        "nd-depth",
        [
            model("cgnet_shallow", "newton_cgnet16", width=4),
            model("resnet_shallow", "resnet32", width=4),
            model("cgnet_deep", "newton_cgnet56", width=4),
            model("resnet_deep", "resnet110", width=4),
        ],
        _ND_CMPS,
        width=4,
        epochs=4,
    ),
    full=full_profile(
        "nd-depth",
        [
            model("cgnet_shallow", "newton_cgnet16"),
            model("resnet_shallow", "resnet32"),
            model("cgnet_deep", "newton_cgnet56"),
            model("resnet_deep", "resnet110"),
        ],
        _ND_CMPS,
        seeds=[0, 1],
        epochs=6,
        note="pairs N3 = 3 (Newton-CGNet-16 vs ResNet-32) and N3 = 9 (Newton-CGNet-56 vs ResNet-110)",
    ),
)

ND_BEST_CHECK = EmpiricalCheck(
    "nd-best",
    quick=ProfileSpec(
        None,
        reason="no CPU analogue within the quick budget: the claim is about 82- and "
        "164-layer nets (one epoch of either at width 4 on 8x8 digits takes "
        "~10 s here); the ND-depth analogue covers the depth trend",
    ),
    full=full_profile(
        "nd-best",
        [model("cgnet82", "newton_cgnet82"), model("resnet164", "resnet164")],
        [
            Comparison(
                "cgnet82",
                "resnet164",
                Region(lo=0.0),
                "+0.67 pts (4.90% vs 5.57% error, Table 4)",
                "Newton-CGNet-82 better than ResNet-164 (same 2.6M parameters)",
            )
        ],
        seeds=[0, 1],
        epochs=6,
        note="outside the 10-minute budget (~4 GPU minutes more)",
    ),
)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "ND-P1",
        "Prop. 1, eq (3)-(5)",
        "for symmetric invertible A and ReLU phi, grad F(x) = A[x - phi(Ax)] for F(x) = x^T A x / 2 - "
        "1^T P(Ax) with P' = phi, and x - A^{-1} grad F(x) = phi(Ax); the gradient formula needs A "
        "symmetric",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "ND-hess",
        "eq (6)",
        "Hessian of F is A - A Diag[phi'(Ax)] A (away from the ReLU kinks)",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "ND-neumann",
        "eq (7)",
        "if ||A||_2 < 1, [Hessian]^{-1} = sum_{n>=0} (Diag[phi'(Ax)] A)^n A^{-1}; the gap to A^{-1} is "
        "the tail, which is not negligible; truncating after m terms leaves an error bounded by "
        "||A||^{m+1}/(1-||A||) ||A^{-1}||",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "ND-linear-rate",
        "Appendix B (not in the text)",
        "the m = 0 quasi-Newton iteration converges only linearly",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "ND-resnet",
        "eq (8)-(9)",
        "the quasi-Newton step with H_k gives phi[(I - H_k A) x + H_k A phi(Ax)], the non-bottleneck "
        "ResNet block when its matrices are learned",
        "structural",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "ND-table2",
        "Table 2, sec 3.3",
        "on F with n = 2048, gamma = 0.9999, eps = 1e-20, median of 10 runs, iterations to |F(x_k) - "
        "F(0)| < eps: quasi-Newton m = 0: 72, m = 1: 36, m = 2: 24; Newton-CG N = 3: 157, N = 4: 36, "
        "N = 6: 14.5, N = 8: 9, N = 10: 7",
        "numeric",
        Reproduction("nd-table2"),
        "see `blockaudit reproduce nd-table2`",
        "the table",
    ),
    Claim(
        "ND-cg",
        "Alg. 1, eq (11)-(17)",
        "CG on Q y = b (Q = U^T U, U = I - Diag[phi'(Ax)]A, b = U^T r) solves U y = r in at most n "
        "steps; eq (17) expands g = Qy - b correctly",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "ND-block",
        "Alg. 2",
        "Newton-CG block: N CG blocks, each computing g_t from three conv branches with dropout, "
        "learnable alpha_t, beta_t; x_{k+1} = ReLU(x_k + y_N)",
        "structural",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "ND-depth",
        "Table 3, Fig. 3a",
        "on C10+ Newton-CGNets are worse than ResNets of equal parameters with few CG blocks (N3 <= 5) "
        "and better with many (N3 >= 9): e.g. Newton-CGNet-56 (1.70M) 5.35% vs ResNet-110 (1.73M) 5.73%",
        "empirical",
        ND_DEPTH_CHECK,
        "CI of block - baseline accuracy below 0 at N3 = 3 and above 0 at N3 = 9",
        "crossover near N3 = 5..9",
    ),
    Claim(
        "ND-best",
        "Table 4",
        "Newton-CGNet-82 (2.62M) 4.90% on C10+ vs ResNet-164 5.57%",
        "empirical",
        ND_BEST_CHECK,
        "CI of Newton-CGNet-82 - ResNet-164 accuracy above 0",
        "-0.67 pts",
    ),
)
