"""NRL's report notebook: what it says beyond the template (``experiments.report.template``),
including its float16 section (NRL-fp16)."""
from experiments.report.template import (
    NotebookSpec,
    curvature_section,
    fp16_section,
    landscape_section,
    risk_gap_section,
    training_section,
)

NOTEBOOK = NotebookSpec(
    paper="NRL",
    title="NRL: Newton Residual Learning (ICLR 2020 submission)",
    claims="""\
NRL-block and NRL-poly are settled by `theory_checks/test_nrl.py`; the CIFAR claims
(NRL-params, NRL-linear, NRL-c100), NRL-fp16 and NRL-contour by training comparisons.""",
    sections=(
        training_section("NRL-params, NRL-linear, NRL-c100, NRL-fp16", """\
The paper: Newton-ResNets match ResNet18/34 with ~40% fewer parameters, and stay far ahead of them
with every activation removed (Table 2: 0.876-0.916 vs 0.391)."""),
        fp16_section("Float16 headroom (NRL-fp16, sec. 4.4)", """\
The paper trained in float16 and saw the second-order term overflow, fixed by a tanh after N2.
Each Newton-ResNet [2,2,1,1] run below trained in float16 autocast, with or without that tanh; a
run whose loss turned non-finite stopped there (step and layer given). The peaks are measured
after training, in float32 on training images: how close the term came to float16's 65504."""),
        landscape_section(heading="Loss landscapes (NRL-contour, Fig. 1)", text="""\
Filter-normalised random directions around the trained weights; Newton-ResNet and ResNet
trained on the same data are drawn side by side on shared contour levels."""),
        risk_gap_section(text="""\
The ResNEst risk gap (RN Prop. 2) applies to any residual feature finder; shown when a
Newton-ResNet run was analysed with `blockaudit risk-gap`."""),
        curvature_section("""\
the second-order term of the Newton block changes the curvature the
optimiser sees."""),
    ),
)
