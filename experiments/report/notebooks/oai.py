"""OAI's report notebook: what it says beyond the template (``experiments.report.template``)."""
from experiments.report.template import (
    NotebookSpec,
    curvature_section,
    landscape_section,
    reproduction_section,
    risk_gap_section,
    training_section,
)

NOTEBOOK = NotebookSpec(
    paper="OAI",
    title="OAI: Optimization Algorithm Inspired DNN Structure Design (Li et al., 2018)",
    claims="""\
Lemma 1, Table 1, the HB/AGD/ADMM forms and the rates are settled by
`theory_checks/test_oai.py`; OAI-table2 by the reproduction below; OAI-cifar by HB-Net /
AGD-Net vs ResNet / DenseNet training comparisons.""",
    sections=(
        reproduction_section("Table 2 reproduction (OAI-table2)", "oai-table2", """\
MSE of the GD, HB, AGD, AGD2 and ADMM nets on random pairs, mean and sd over seeds, with
the MSE over training (`blockaudit reproduce oai-table2`)."""),
        training_section("OAI-cifar", """\
The paper: HB-Net (n = 18) 5.04% vs ResNet-110 5.06% error on C10+, AGD-Net ahead of DenseNet."""),
        landscape_section(),
        risk_gap_section("HB-Net, AGD-Net or baseline runs"),
        curvature_section("""\
the momentum of HB/AGD blocks is claimed to act like a better-conditioned
optimiser."""),
    ),
)
