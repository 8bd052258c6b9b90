"""RN's report notebook: what it says beyond the template (``experiments.report.template``)."""
from experiments.report.template import (
    NotebookSpec,
    curvature_section,
    landscape_section,
    risk_gap_section,
    training_section,
)

NOTEBOOK = NotebookSpec(
    paper="RN",
    title="RN: ResNEsts and DenseNEsts (Chen et al., NeurIPS 2021)",
    claims="""\
The theorems (Prop. 1-4, Thm. 1 and 4, Cor. 3) are settled by `theory_checks/test_rn.py`;
RN-cifar by the Standard / ResNEst / BN-ResNEst / A-ResNEst training comparison.""",
    sections=(
        training_section("RN-cifar", """\
The paper: ResNEst about 1.5 points below the standard ResNet, BN-ResNEst and A-ResNEst within 0.5."""),
        risk_gap_section(heading="Risk gap per block (Prop. 2, Question 2)", text="""\
A(H_0..H_i) is the best linear predictor on the pooled input and the features of blocks
1..i (eq. (7)); eps = R - A* >= 0 at a local minimiser (eq. (8)). A block lowers the curve only
if its features are not linearly predictable from the earlier ones (eq. (9))."""),
        landscape_section("""\
Filter-normalised random directions around the trained weights; models trained on the same
data are drawn side by side on shared contour levels, so equal colours mean equal loss."""),
        curvature_section("a negative smallest eigenvalue beyond its bound means a saddle, not a minimum."),
    ),
)
