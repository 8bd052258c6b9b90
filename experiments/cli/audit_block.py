"""``blockaudit audit-block``: your block against a baseline, generic checks and your claims (experiments.audit.block)."""
from __future__ import annotations

import json
from pathlib import Path

from analysis.models.skeleton import BASELINES
from experiments.audit.block import audit_block
from experiments.claims.types import PROFILES
from experiments.report.tables import markdown_table
from experiments.runs.cluster import EXECUTORS

__all__ = ["add_subcommand"]


def add_subcommand(sub) -> None:
    p = sub.add_parser(
        "audit-block", help="audit your own block against a baseline: accuracy, cost and health checks, your claims",
        description="Put BLOCK into the baseline's skeleton (same stem, stages, widths, head), train block and "
                    "baseline on paired seeds into the results store (finished runs are reused), and print a "
                    "verdict for every claim of the spec (or the measurements, without one).")
    p.add_argument("--block", required=True, metavar="FILE.py:NAME",
                   help="an nn.Module class or factory (in_channels, out_channels, stride), as FILE.py:NAME or "
                        "module:NAME; or a whole-model factory (num_classes[, width, in_channels])")
    p.add_argument("--baseline", default="resnet20", choices=tuple(BASELINES),
                   help="the skeleton and the model to beat (default: %(default)s)")
    p.add_argument("--spec", type=Path, default=None, help="TOML file of claims ([[claims]] id, statement, check, "
                                                           "region); without one every check is measured")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="quick: digits on the CPU, minutes; full: CIFAR-10 on a GPU (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="paired seeds (default: %(default)s)")
    p.add_argument("--width", type=int, default=None,
                   help="the skeleton's first-stage width (default: 8 quick, 16 full, the baselines' own)")
    p.add_argument("--workers", type=int, default=None,
                   help="runs trained at once here (default: 2 quick, 1 full; a GPU fits about 3 of these nets)")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default: 6 quick, 10 full)")
    p.add_argument("--data", type=Path, default=None,
                   help="full profile: cifar10-jpeg.zip, its extracted tree, or torchvision's cifar-10-batches-py "
                        "folder (default: found under the data roots)")
    p.add_argument("--device", default=None,
                   help="where the runs train (default: cpu quick, cuda full; full on cpu works, slowly)")
    p.add_argument("--store", type=Path, default=Path("runs"), help="results store (default: %(default)s)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for BLOCK_AUDIT.md, block_audit.json/.csv/.png and the notebook block_audit.ipynb "
                        "(default: reports/blocks/NAME)")
    p.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="train the runs as submitit jobs: slurm (a cluster) or local (subprocesses); or torchrun: "
                        "each run data-parallel over this machine's GPUs; default: here, a pool of processes")
    p.add_argument("--executor-option", action="append", default=[], metavar="KEY=VALUE",
                   help="a submitit parameter, e.g. slurm_partition=gpu, gpus_per_node=1, timeout_min=120; for "
                        "torchrun nproc_per_node=N (repeatable)")
    p.add_argument("--no-notebook", action="store_true", help="skip the executed notebook (block_audit.ipynb)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_audit_block)


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ValueError(f"--executor-option must look like KEY=VALUE; got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _cmd_audit_block(args) -> int:
    out = args.out or Path("reports") / "blocks" / args.block.rpartition(":")[2]
    result = audit_block(args.block, args.baseline, spec=args.spec, profile=args.profile, seeds=args.seeds,
                         store=args.store, out=out, width=args.width, epochs=args.epochs, data=args.data, workers=args.workers,
                         executor=args.executor, executor_options=dict(_option(o) for o in args.executor_option),
                         notebook=not args.no_notebook, progress=not args.no_progress, device=args.device)
    frame = result.to_pandas()[["check", "effect", "ci_low", "ci_high", "claim", "verdict"]]
    print(markdown_table(frame.round(4)))
    written = [p.name for p in sorted(out.iterdir()) if p.name.startswith(("BLOCK_AUDIT", "block_audit"))]
    print(f"wrote {', '.join(written)} to {out}")
    return 0
