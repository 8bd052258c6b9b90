"""The sections of a report notebook: ``ReportContext`` (what a notebook reads) and the ``show_*``
functions a notebook calls, one per section, each saying ``not run: ...`` when its input is absent.

``setup_notebook``, ``markdown``, ``not_run`` and ``show_figure`` are the display helpers they share;
outside IPython (a script, a test) they print plain text instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from experiments.claims import PAPERS, check_names
from experiments.report.curves import final_epoch_table, plot_training_curves, training_curves
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
from experiments.report.store_index import StoreIndex, paper_id, scan_store
from experiments.report.verdicts import claims_table, comparisons_table, load_audit

__all__ = ["ReportContext", "setup_notebook", "markdown", "not_run", "show_figure", "show_header", "show_claims",
           "show_training_curves", "show_landscapes", "show_risk_gaps", "show_curvature", "show_fp16",
           "show_reproduction"]

_FIG_DPI = 90  # inline PNGs: legible in a browser, ~30-60 KB each, so a notebook stays well under 1 MB


def setup_notebook() -> None:
    """Inline PNG figures at a modest dpi and untruncated table cells; call once at a notebook's top."""
    import matplotlib

    shell = _shell()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")
        shell.run_line_magic("config", "InlineBackend.figure_formats = ['png']")
    else:
        matplotlib.use("Agg")
    # After %matplotlib inline, which resets the rcParams it manages.
    matplotlib.rcParams.update({"figure.dpi": _FIG_DPI, "savefig.dpi": _FIG_DPI})
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", None)
    pd.set_option("display.width", 250)
    pd.set_option("display.precision", 4)


def _shell():
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


def _display(obj) -> None:
    if _shell() is None:  # run as a script or called from a test: plain text
        print(obj)
        return
    from IPython.display import display

    display(obj)


def markdown(text: str) -> None:
    """Show ``text`` as markdown in a notebook (and as plain text anywhere else)."""
    if _shell() is None:
        print(text)
        return
    from IPython.display import display

    display({"text/markdown": text, "text/plain": text}, raw=True)


def not_run(reason: str) -> None:
    """Say that a section's result is absent, and why: the notebook never leaves a silent gap."""
    markdown(f"**not run:** {reason}")


def show_figure(fig) -> None:
    """Display ``fig`` once (closing it, so the inline backend does not draw it again at the cell's end)."""
    import matplotlib.pyplot as plt

    if _shell() is not None:
        _display(fig)
    plt.close(fig)


@dataclass
class ReportContext:
    """What a report notebook reads: the paper, the store, the audit and the reproductions folder."""

    paper: str
    store: Path
    audit_json: Path
    reports: Path
    _index: StoreIndex | None = field(default=None, repr=False)
    _audit: dict | None = field(default=None, repr=False)

    @classmethod
    def from_parameters(cls, paper: str, store, audit_json, reports) -> "ReportContext":
        return cls(paper_id(paper), Path(store), Path(audit_json), Path(reports))

    @property
    def index(self) -> StoreIndex:
        if self._index is None:
            self._index = scan_store(self.store)
        return self._index

    @property
    def audit(self) -> dict:
        if self._audit is None:
            self._audit = load_audit(self.audit_json)
        return self._audit

    def store_absent(self) -> str | None:
        if not self.index.exists:
            return (f"the store {self.store} does not exist (pass `blockaudit report --store DIR`; runs go to "
                    "STORE/runs/<run_id>, sweeps to STORE/sweeps/<name>)")
        return None


def show_header(ctx: ReportContext) -> None:
    """Title, the audit's provenance and verdict counts for the paper, and what the store holds."""
    meta = ctx.audit.get("meta", {}) if isinstance(ctx.audit.get("meta"), dict) else {}
    table = claims_table(ctx.paper, ctx.audit)
    counts = table["verdict"].value_counts()
    index = ctx.index
    lines = [
        f"**{ctx.paper}**: {PAPERS[ctx.paper]}",
        "",
        f"- audit: `{ctx.audit_json}`, profile `{meta.get('profile', '?')}`, run {meta.get('date', '?')} on "
        f"{meta.get('machine', '?')}",
        f"- the audit's code and machine: {meta.get('provenance_line', 'not recorded (an audit older than provenance)')}",
        "- verdicts of this paper's claims: " + ", ".join(f"{n} {v}" for v, n in counts.items()),
        f"- store: `{ctx.store}`" + ("" if index.exists else " (does not exist)")
        + f": {len(index.sweeps)} sweep(s), {len(index.runs)} run(s), {len(index.artefacts)} analysis file(s) in all",
    ]
    if index.problems:
        lines.append(f"- {len(index.problems)} file(s) in the store could not be read:")
        lines += [f"    - `{p}`" for p in index.problems]
    markdown("\n".join(lines))


def show_claims(ctx: ReportContext) -> None:
    """The claims table, then the paired comparisons behind the empirical verdicts (if the audit has any)."""
    _display(claims_table(ctx.paper, ctx.audit))
    comparisons = comparisons_table(ctx.paper, ctx.audit)
    if not comparisons.empty:
        markdown("Paired comparisons behind the empirical verdicts (block - baseline over seeds; the claim "
                 "holds when the CI lies inside the region):")
        _display(comparisons)


def show_training_curves(ctx: ReportContext) -> None:
    """Per sweep (or set of loose runs): the curves with mean +- std bands and the final-epoch table."""
    absent = ctx.store_absent()
    if absent:
        return not_run(absent)
    curves = training_curves(ctx.index, ctx.paper)
    if curves.empty:
        names = ", ".join(sorted(check_names(ctx.paper))) or "none"
        return not_run(f"no training results for {ctx.paper} in `{ctx.store}` (looked for STORE/sweeps/*/results.csv "
                       f"and STORE/runs/*/metrics.csv of {ctx.paper} models; this paper's comparisons: {names})")
    for source, part in curves.groupby("source", sort=True):
        markdown(f"#### {source}")
        show_figure(plot_training_curves(part, title=f"{source}: mean ± std over seeds"))
        _display(final_epoch_table(part))


def _section(ctx: ReportContext, kind: str, what: str, how: str):
    absent = ctx.store_absent()
    if absent:
        not_run(absent)
        return None
    found = ctx.index.artefacts_of(kind, ctx.paper)
    if not found:
        others = len(ctx.index.artefacts) and sum(a.kind == kind for a in ctx.index.artefacts)
        not_run(f"no {what} of {ctx.paper} models in `{ctx.store}`"
                + (f" ({others} of other papers' models)" if others else "") + f"; make one with `{how}`")
        return None
    return found


def show_landscapes(ctx: ReportContext) -> None:
    found = _section(ctx, "landscape", "loss landscape", "blockaudit landscape RUN_DIR")
    if found:
        for fig in plot_landscapes(found):
            show_figure(fig)
        _display(landscape_table(found))


def show_risk_gaps(ctx: ReportContext) -> None:
    found = _section(ctx, "risk_gap", "risk-gap result", "blockaudit risk-gap RUN_DIR")
    if found:
        for fig in plot_risk_gaps(found):
            show_figure(fig)
        _display(risk_gap_table(found))


def show_curvature(ctx: ReportContext) -> None:
    found = _section(ctx, "curvature", "curvature result", "blockaudit curvature RUN_DIR")
    if found:
        show_figure(plot_curvature(found))
        _display(curvature_table(found))


def show_fp16(ctx: ReportContext) -> None:
    absent = ctx.store_absent()
    if absent:
        return not_run(absent)
    table = fp16_table(ctx.index)
    if table.empty:
        return not_run(f"no float16 Newton-ResNet runs in `{ctx.store}` "
                       "(`blockaudit audit --claims NRL-fp16` makes them)")
    if table["peak |N1(s)*f|"].notna().any():
        show_figure(plot_fp16_peaks(table))
    _display(table)


def show_reproduction(ctx: ReportContext, name: str) -> None:
    """A committed reproduction (``REPORTS/<name>/``): its markdown report, and its figures as PNG."""
    folder = ctx.reports / name
    md = folder / f"{name.replace('-', '_')}.md"
    if not md.is_file():
        candidates = sorted(folder.glob("*.md")) if folder.is_dir() else []
        if not candidates:
            return not_run(f"no reproduction in `{folder}`; make it with `blockaudit reproduce {name}`")
        md = candidates[0]
    text = md.read_text()
    # The report's own title is a level-1 heading; inside a section it must not outrank the notebook's.
    markdown(re.sub(r"^# ", "#### ", text, count=1, flags=re.M))
    for png in sorted(folder.glob("*.png")):
        markdown(f"`{png.name}`:")
        if _shell() is not None:
            from IPython.display import Image

            _display(Image(filename=str(png)))
    csvs = ", ".join(f"`{p.name}`" for p in sorted(folder.glob("*.csv")))
    if csvs:
        markdown(f"Raw data beside it in `{folder}`: {csvs}.")
