"""``blockaudit risk-gap RUN_DIR``: the ResNEst risk gap (RN Prop. 2) of a trained run.

The argparse front of ``experiments.runs.probes.run_risk_gap``, which loads the run and its dataset,
streams the pooled block features of the train and test images through
``analysis.probes.risk_gap.risk_gap`` and writes ``risk_gap.md`` (tables, plot, explanation),
``risk_gap.csv`` (per-block curve), ``risk_gap.json`` (everything) and ``risk_gap.png`` into the run
directory or ``--out``.
"""
from __future__ import annotations

from pathlib import Path

from experiments.report.tables import markdown_table
from experiments.runs.probes import RiskGapConfig, run_risk_gap

__all__ = ["add_subcommand"]


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser("risk-gap", help="ResNEst risk gap eps = R - A* of a trained run (RN Prop. 2)",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run directory written by `blockaudit train`")
    p.add_argument("--loss", choices=("cross_entropy", "squared"), default="cross_entropy")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR)")
    p.add_argument("--max-samples", type=int, default=None, help="use at most N train and N test images")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--tol", type=float, default=1e-5, help="cross-entropy gradient-norm tolerance")
    p.add_argument("--max-iter", type=int, default=500, help="cross-entropy L-BFGS iteration cap per fit")
    p.set_defaults(func=_cmd_risk_gap)


def _cmd_risk_gap(args) -> int:
    result, files = run_risk_gap(RiskGapConfig(run_dir=args.run_dir, loss=args.loss, out=args.out,
                                               max_samples=args.max_samples, batch_size=args.batch_size,
                                               tol=args.tol, max_iter=args.max_iter))
    print(markdown_table(result.summary_frame()))
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
