"""ND's report notebook: what it says beyond the template (``experiments.report.template``)."""
from experiments.report.template import (
    NotebookSpec,
    curvature_section,
    landscape_section,
    reproduction_section,
    risk_gap_section,
    training_section,
)

NOTEBOOK = NotebookSpec(
    paper="ND",
    title="ND: Newton design (Shen et al., Sci China Inf Sci 2023)",
    claims="""\
The theorems (Prop. 1, the Hessian, the Neumann series, the linear rate, Newton-CG) are
settled by `theory_checks/test_nd.py`; ND-table2 by the reproduction below; ND-depth and
ND-best by Newton-CGNet vs ResNet training comparisons.""",
    sections=(
        reproduction_section("Table 2 reproduction (ND-table2)", "nd-table2", """\
Iterations of quasi-Newton and Newton-CG to |F(x_k) - F(0)| < 1e-20 on the paper's
quadratic (n = 2048, gamma = 0.9999), ours beside the paper's (`blockaudit reproduce nd-table2`)."""),
        training_section("ND-depth, ND-best", """\
The paper: Newton-CGNets lose to ResNets of equal size with few CG blocks and win with many
(Newton-CGNet-82 4.90% vs ResNet-164 5.57% error on C10+)."""),
        landscape_section(),
        risk_gap_section("Newton-CGNet or ResNet runs"),
        curvature_section(),
    ),
)
