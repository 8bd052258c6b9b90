"""``blockaudit report``: one executed notebook per paper (``.ipynb`` with outputs, plus HTML) from stored results.

The notebooks call this package section by section (``from experiments import report``, then
``report.show_claims(ctx)`` ...), so their sources stay short; the work is done in its modules:

- ``store_index``: ``scan_store(store)``, what a results store holds, and the paper each result
  belongs to (an explicit record first: metadata, a run's ``claim.json``, a sweep's ``paper`` column).
- ``verdicts``: ``load_audit``, ``claims_table`` and ``comparisons_table`` from ``audit.json``.
- ``curves``: ``training_curves`` / ``final_epoch_table`` / ``plot_training_curves`` (mean +- std over seeds).
- ``probes``: landscapes, risk gaps (RN Prop. 2), curvature and float16 headroom (NRL-fp16), as
  tables and figures.
- ``context``: ``ReportContext`` and the ``show_*`` notebook sections, each saying ``not run: ...``
  when its input is absent.
- ``template``: the one template of the notebooks; ``notebooks/<paper>.py`` states what each
  paper's notebook says beyond it.
- ``notebook``: ``build_notebook`` / ``build_reports``, executing the notebooks and writing ``.ipynb`` + HTML.
- ``tables``: ``markdown_table`` / ``write_table`` (CSV + markdown), used by the audit and the reproductions.

The command line is ``experiments.cli.report``.
"""
from experiments.report.context import (
    ReportContext,
    markdown,
    not_run,
    setup_notebook,
    show_claims,
    show_curvature,
    show_figure,
    show_fp16,
    show_header,
    show_landscapes,
    show_reproduction,
    show_risk_gaps,
    show_training_curves,
)
from experiments.report.curves import CURVE_METRICS, final_epoch_table, plot_training_curves, training_curves
from experiments.report.notebook import (
    NOTEBOOK_SOURCES,
    NotebookExecutionError,
    build_notebook,
    build_reports,
    notebook_source,
    notebook_text,
)
from experiments.report.probes import (
    curvature_table,
    fp16_table,
    landscape_table,
    plot_curvature,
    plot_fp16_peaks,
    plot_landscapes,
    plot_risk_gaps,
    risk_gap_table,
)
from experiments.report.store_index import Artefact, StoreIndex, paper_id, scan_store
from experiments.report.template import PARAMETER_NAMES
from experiments.report.verdicts import claims_table, comparisons_table, load_audit

__all__ = [
    "NOTEBOOK_SOURCES", "PARAMETER_NAMES", "CURVE_METRICS", "NotebookExecutionError", "ReportContext", "StoreIndex",
    "Artefact", "paper_id", "notebook_source", "notebook_text", "load_audit", "claims_table", "comparisons_table",
    "scan_store", "training_curves", "final_epoch_table", "plot_training_curves", "plot_landscapes",
    "landscape_table", "plot_risk_gaps", "risk_gap_table", "plot_curvature", "curvature_table", "fp16_table",
    "plot_fp16_peaks", "setup_notebook", "markdown", "not_run", "show_figure", "show_header", "show_claims",
    "show_training_curves", "show_landscapes", "show_risk_gaps", "show_curvature", "show_fp16", "show_reproduction",
    "build_notebook", "build_reports",
]
