"""IM: Hardt & Ma, Identity matters in deep learning. Its claims (CLAIMS.md) and their checks."""

from __future__ import annotations

from experiments.claims.profiles import full_profile, model, quick_profile
from experiments.claims.types import Claim, Comparison, EmpiricalCheck, Paper, Region, TheoryCheck

PAPER = Paper(
    "IM", "Hardt & Ma, Identity Matters in Deep Learning (ICLR 2017, review), papers/004_49889ba9d174fc35.txt"
)

THEORY = TheoryCheck()
THEORY_TOL = "tolerances derived per assertion in the test (float64 round-off or solver certificate)"


IM_CIFAR_CHECK = EmpiricalCheck(
    "im-cifar",
    quick=quick_profile(
        "im-cifar",
        [model("identity_resnet", "identity_resnet", width=8, stem_width=8, blocks_per_stage=2)],
        [
            Comparison(
                "identity_resnet",
                None,
                Region(lo=80.0, hi=100.0),
                "93.6% (6.4% error, Hardt & Ma)",
                "test accuracy above 80% (chance: 10%)",
            )
        ],
        width=8,
    ),
    full=full_profile(
        "im-cifar",
        [model("identity_resnet", "identity_resnet")],
        [
            Comparison(
                "identity_resnet",
                None,
                Region(lo=80.0, hi=100.0),
                "93.6% (6.4% error, Hardt & Ma)",
                "test accuracy above 80% (chance: 10%)",
            )
        ],
        seeds=[0, 1],
        epochs=6,
        lr=0.05,
        note="lr 0.05 (no batch norm); outside the 10-minute budget",
    ),
)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "IM-T1",
        "Theorem 1",
        "for h(x) = (I + A_l)...(I + A_1) x and f(A) = E||Y - h(X)||^2 with Y = RX + noise, every "
        "critical point with max_i ||A_i|| <= tau < 1 is a global minimum",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "IM-small",
        "footnote 4",
        "a global minimum exists with max_i ||A_i*|| <= (4 pi + 3 gamma)/l when l >= 3 gamma",
        "theorem",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "IM-spurious",
        "(complement of IM-T1)",
        "without the norm bound, spurious critical points exist (e.g. with l >= 3, every A_i = -I makes "
        "the product zero and the gradient zero)",
        "theorem (counterexample)",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "IM-T2",
        "Theorem 2",
        "a ReLU residual net with O(n log n + r^2) parameters fits n points separated by rho > 0 perfectly",
        "theorem (construction on small n)",
        THEORY,
        THEORY_TOL,
    ),
    Claim(
        "IM-cifar",
        "experiments",
        "an all-convolutional ResNet with no batch norm and a fixed random last layer trains well on CIFAR-10",
        "empirical",
        IM_CIFAR_CHECK,
        "95% CI of the test accuracy inside (80, 100)%",
    ),
)
