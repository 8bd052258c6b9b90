"""``blockaudit audit``: a verdict for every claim (experiments.audit.run), printed and written to AUDIT.md."""
from __future__ import annotations

import sys
from pathlib import Path

from experiments.audit.run import EmpiricalOptions, run_audit
from experiments.claims import VERDICTS
from experiments.claims.types import PROFILES
from experiments.report.tables import markdown_table

__all__ = ["add_subcommand"]


def add_subcommand(sub) -> None:
    p = sub.add_parser("audit", help="check every claim and write reports/AUDIT.md (+ audit.json, audit.csv)",
                       description="Run the checks of every claim in ../shared/CLAIMS.md (theory checks, numeric "
                                   "reproductions, training comparisons) and print a verdict for each.")
    p.add_argument("--profile", choices=PROFILES, default="quick",
                   help="quick: CPU, minutes, reduced reproductions (default); full: paper-scale settings")
    p.add_argument("--out", type=Path, default=Path("reports"), help="output folder (default: %(default)s)")
    p.add_argument("--claims", default="", help="comma-separated claim ids to check (default: all)")
    p.add_argument("--hypothesis-profile", default="ci", choices=("ci", "dev", "thorough"),
                   help="hypothesis settings for the theory checks (default: %(default)s)")
    p.add_argument("--no-reproductions", action="store_true", help="skip the numeric reproductions")
    p.add_argument("--no-progress", action="store_true", help="hide progress output of the checks")
    p.add_argument("--store", type=Path, default=Path("runs"),
                   help="results store of the training comparisons; finished runs are reused (default: %(default)s)")
    p.add_argument("--device", default=None, help="training device of the empirical checks, e.g. cuda (the full "
                                                  "profile trains only on cuda; default: cpu for quick)")
    p.add_argument("--data", type=Path, default=None, metavar="PATH",
                   help="full profile's CIFAR-10: cifar10-jpeg.zip, a train/+test/ JPEG tree, or the folder with "
                        "cifar-10-batches-py (default: cifar10-jpeg.zip found under the data roots)")
    p.add_argument("--max-minutes", type=float, default=None, metavar="M",
                   help="start no new training runs after M minutes (the next call resumes from the store)")
    p.add_argument("--workers", type=int, default=None,
                   help="training runs at once (processes; default: one per CPU core in the quick profile, whose "
                        "runs take one thread each, so results do not depend on it; 1 in the full profile)")
    p.add_argument("--train-only", action="store_true",
                   help="only the empirical claims: skip pytest and the reproductions (for GPU calls)")
    p.set_defaults(func=_cmd_audit)


def _cmd_audit(args) -> int:
    ids = [c.strip() for c in args.claims.split(",") if c.strip()]
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1; got {args.workers}")
    options = EmpiricalOptions(store=args.store, device=args.device, data=args.data, max_minutes=args.max_minutes,
                               workers=args.workers)
    result = run_audit(args.profile, args.out, ids or None, args.hypothesis_profile,
                       progress=not args.no_progress, reproductions=not args.no_reproductions,
                       empirical=options, train_only=args.train_only)
    frame = result.to_frame()[["claim", "kind", "verdict", "evidence"]]
    frame["evidence"] = [e if len(e) <= 110 else e[:107] + "..." for e in frame.evidence]
    print()
    print(markdown_table(frame))
    counts = result.counts()
    print("\n" + ", ".join(f"{counts[s]} {s}" for s in VERDICTS) + f"  ({result.meta['seconds']} s)")
    print(f"wrote {args.out / 'AUDIT.md'}, {args.out / 'audit.json'}, {args.out / 'audit.csv'}")
    if result.meta["theory_collection_errors"]:
        print("error: theory_checks had collection errors (see AUDIT.md)", file=sys.stderr)
        return 1
    return 0
