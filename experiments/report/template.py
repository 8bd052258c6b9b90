"""The one template of the report notebooks, and the per-paper notebook specs it is filled with.

Every paper's notebook has the same cells: a title, the parameters cell (tagged ``parameters``;
``blockaudit report`` injects its own values after it), the setup cell, the claims and verdicts,
then the paper's sections, each a level-2 heading, a paragraph, and one call of a ``report.show_*``
section function (``experiments.report.context``). What differs between papers is stated in
``experiments/report/notebooks/<paper>.py`` as ``NOTEBOOK = NotebookSpec(...)``: the title, how the
claims are settled, and which sections in which order with which texts (a reproduction, the
float16 section of NRL).

``render_source(spec)`` writes a spec as a notebook in jupytext's "percent" format, which is what
``build_notebook`` executes. A notebook source may also be such a jupytext file written by hand
(``blockaudit report --sources DIR``); ``read_source`` tells the two apart by jupytext's cell marker.
"""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PARAMETER_NAMES", "Section", "NotebookSpec", "training_section", "landscape_section",
           "risk_gap_section", "curvature_section", "reproduction_section", "fp16_section", "render_source",
           "load_notebook_spec", "read_source"]

# The parameters cell's names and default values: the committed notebooks lie in reports/notebooks/,
# so the defaults are the repository's store and reports, relative to there.
PARAMETER_NAMES = ("PAPER", "STORE", "AUDIT_JSON", "REPORTS")
_DEFAULTS = {"STORE": "../../runs", "AUDIT_JSON": "../audit.json", "REPORTS": ".."}

_SETUP = """\
from experiments import report

report.setup_notebook()
ctx = report.ReportContext.from_parameters(PAPER, STORE, AUDIT_JSON, REPORTS)
report.show_header(ctx)"""

_TRAINING = "Test accuracy and losses per epoch, mean ± one standard deviation over seeds."
_LANDSCAPES = """\
Filter-normalised random directions around the trained weights, comparable models side
by side on shared contour levels."""
_CURVATURE = """\
Hessian spectral density (stochastic Lanczos quadrature) and extreme eigenvalues at the
trained weights"""
_JUPYTEXT_CELL = re.compile(r"^# %%", re.M)


@dataclass(frozen=True)
class Section:
    """One section of a report notebook: its level-2 ``heading``, the markdown ``text`` under it, and
    the code ``call`` that shows it (e.g. ``report.show_curvature(ctx)``)."""

    heading: str
    text: str
    call: str


@dataclass(frozen=True)
class NotebookSpec:
    """What one paper's report notebook states beyond the template.

    ``paper``: its id (``"RN"``); ``title``: the notebook's title; ``claims``: how the paper's
    claims are settled (the text above the claims table); ``sections``: the sections after it, in order.
    """

    paper: str
    title: str
    claims: str
    sections: tuple[Section, ...]

    def __post_init__(self):
        wrong = [type(s).__name__ for s in self.sections if not isinstance(s, Section)]
        if wrong:
            raise TypeError(f"notebook spec of {self.paper}: sections must be Section values (made by "
                            f"training_section, landscape_section, ...); got {', '.join(wrong)}")


def training_section(claims: str, paper_says: str) -> Section:
    """Training curves of the claims ``claims`` (e.g. ``"RN-cifar"``); ``paper_says``: what the paper reports."""
    return Section(f"Training curves ({claims})", f"{_TRAINING}\n{paper_says}", "report.show_training_curves(ctx)")


def landscape_section(text: str = _LANDSCAPES, heading: str = "Loss landscapes") -> Section:
    """Loss landscapes; by default with the text that fits any paper."""
    return Section(heading, text, "report.show_landscapes(ctx)")


def risk_gap_section(runs: str | None = None, *, text: str | None = None,
                     heading: str = "Risk gap per block") -> Section:
    """The per-block risk gap (RN Prop. 2): either of ``runs`` (e.g. ``"identity-ResNet runs"``) in the
    common sentence, or with a ``text`` of its own."""
    if (runs is None) == (text is None):
        raise ValueError("risk_gap_section needs either runs (whose runs) or text; got "
                         + ("neither" if runs is None else "both"))
    if text is None:
        text = f"The ResNEst risk gap (RN Prop. 2) of {runs} analysed with\n`blockaudit risk-gap`."
    return Section(heading, text, "report.show_risk_gaps(ctx)")


def curvature_section(note: str | None = None) -> Section:
    """Hessian spectral density and extreme eigenvalues; ``note``: what to look for in this paper."""
    return Section("Curvature", _CURVATURE + (f";\n{note}" if note else "."), "report.show_curvature(ctx)")


def reproduction_section(heading: str, name: str, text: str) -> Section:
    """A committed reproduction ``REPORTS/<name>/`` (``blockaudit reproduce <name>``)."""
    return Section(heading, text, f"report.show_reproduction(ctx, {json.dumps(name)})")


def fp16_section(heading: str, text: str) -> Section:
    """Float16 runs of Newton-ResNets and the peaks of their second-order term (NRL-fp16)."""
    return Section(heading, text, "report.show_fp16(ctx)")


def _markdown(text: str) -> str:
    return "# %% [markdown]\n" + "\n".join(f"# {line}" if line else "#" for line in text.splitlines())


def render_source(spec: NotebookSpec) -> str:
    """``spec`` on the template, as a notebook in jupytext's percent format."""
    source = f"experiments/report/notebooks/{spec.paper.lower()}.py"
    reproduction = any(s.call.startswith("report.show_reproduction(") for s in spec.sections)
    read_from = "(`blockaudit audit`)" + (", the committed reproduction" if reproduction else "")
    intro = (f"# {spec.title}\n\n"
             f"Built by `blockaudit report` from stored results; do not edit the `.ipynb`: edit this paper's\n"
             f"texts in `{source}` (or the cells all papers share in\n"
             f"`experiments/report/template.py`) and rebuild. Every number below is read from the audit\n"
             f"{read_from} or the results store; a section whose input is absent says `not run`.")
    values = {"PAPER": spec.paper, **_DEFAULTS}
    cells = [_markdown(intro),
             '# %% tags=["parameters"]\n' + "\n".join(f"{k} = {json.dumps(values[k])}" for k in PARAMETER_NAMES),
             "# %%\n" + _SETUP,
             _markdown(f"## Claims and verdicts\n\n{spec.claims}"),
             "# %%\nreport.show_claims(ctx)"]
    for section in spec.sections:
        cells += [_markdown(f"## {section.heading}\n\n{section.text}"), f"# %%\n{section.call}"]
    return "\n\n".join(cells) + "\n"


def load_notebook_spec(path: Path | str) -> NotebookSpec:
    """The ``NOTEBOOK`` that the Python file ``path`` defines (``experiments/report/notebooks/<paper>.py``)."""
    path = Path(path)
    name = f"blockaudit_notebook_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # as an import would: a dataclass defined in the file looks its module up
    spec.loader.exec_module(module)
    notebook = getattr(module, "NOTEBOOK", None)
    if not isinstance(notebook, NotebookSpec):
        raise TypeError(f"{path} must define NOTEBOOK = NotebookSpec(...) (experiments.report.template) or be a "
                        f"jupytext percent-format notebook (cells marked '# %%'); NOTEBOOK is "
                        f"{type(notebook).__name__}")
    return notebook


def read_source(path: Path | str, paper: str) -> str:
    """The jupytext percent-format text of ``paper``'s notebook source ``path``: a jupytext notebook as
    it is, a ``NOTEBOOK`` spec rendered on the template."""
    path = Path(path)
    text = path.read_text()
    if _JUPYTEXT_CELL.search(text):
        return text
    spec = load_notebook_spec(path)
    if spec.paper != paper:
        raise ValueError(f"{path} holds the notebook of {spec.paper!r}, not of {paper!r}; name a paper's "
                         f"source <paper>.py")
    return render_source(spec)
