"""IM's report notebook: what it says beyond the template (``experiments.report.template``)."""
from experiments.report.template import (
    NotebookSpec,
    curvature_section,
    landscape_section,
    risk_gap_section,
    training_section,
)

NOTEBOOK = NotebookSpec(
    paper="IM",
    title="IM: Identity Matters in Deep Learning (Hardt & Ma, ICLR 2017)",
    claims="""\
Theorem 1, its counterexample without the norm bound, and the construction of Theorem 2
are settled by `theory_checks/test_im.py`; IM-cifar by training the all-convolutional
identity ResNet (no batch norm, fixed random last layer).""",
    sections=(
        training_section("IM-cifar", """\
The claim: the identity ResNet trains well on CIFAR-10 (test accuracy well above chance, > 80%)."""),
        landscape_section(),
        risk_gap_section("identity-ResNet runs"),
        curvature_section("""\
Theorem 1 says critical points near the identity are global minima, so no negative
eigenvalue beyond its bound is expected there."""),
    ),
)
