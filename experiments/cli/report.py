"""``blockaudit report``: one executed notebook per paper from the audit and the results store.

The argparse front of ``experiments.report``, which builds the notebooks.
"""
from __future__ import annotations

import sys
from pathlib import Path

from experiments.claims import PAPERS
from experiments.report import NotebookExecutionError, build_reports, paper_id

__all__ = ["add_subcommand"]


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "report", help="one executed notebook per paper (.ipynb + HTML) from the audit and the results store",
        description="Build, from stored results, one executed notebook per paper: the claims table, training "
                    "curves (mean +- std), landscape contours on shared levels, risk-gap curves and curvature "
                    "figures. Sources: experiments/report/notebooks/<paper>.py (each paper's texts on one "
                    "template, experiments/report/template.py).")
    p.add_argument("--paper", action="append", default=None, metavar="ID",
                   help=f"paper id ({', '.join(PAPERS)}); repeatable or comma-separated (default: all)")
    p.add_argument("--audit", type=Path, default=Path("reports") / "audit.json",
                   help="audit.json written by `blockaudit audit` (default: %(default)s)")
    p.add_argument("--store", type=Path, default=Path("runs"),
                   help="results store with runs/ and sweeps/ (default: %(default)s)")
    p.add_argument("--reports", type=Path, default=Path("reports"),
                   help="folder holding the reproductions, e.g. nd-table2/ (default: %(default)s)")
    p.add_argument("--out", type=Path, default=Path("reports") / "notebooks",
                   help="output folder (default: %(default)s)")
    p.add_argument("--sources", type=Path, default=None,
                   help="folder of notebook sources <paper>.py, jupytext percent-format notebooks or NOTEBOOK specs "
                        "(default: the ones in experiments/report/notebooks)")
    p.add_argument("--no-html", action="store_true", help="write only the .ipynb files")
    p.add_argument("--timeout", type=int, default=600, help="seconds a cell may run (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    papers = [p.strip() for arg in (args.paper or []) for p in arg.split(",") if p.strip()]
    for p in papers:
        paper_id(p)
    try:
        files = build_reports(papers or None, audit_json=args.audit, store=args.store, reports=args.reports,
                              out=args.out, sources=args.sources, html=not args.no_html, timeout=args.timeout,
                              progress=not args.no_progress)
    except NotebookExecutionError as exc:
        print(f"blockaudit report: error: {exc}", file=sys.stderr)
        return 1
    if not Path(args.store).is_dir():
        print(f"note: the store {args.store} does not exist; the notebooks say 'not run' for its sections")
    for f in files:
        print(f"wrote {f} ({f.stat().st_size / 1024:.0f} KiB)")
    return 0
