"""The ``blockaudit`` command line.

Each subcommand is a pair ``_add_NAME(subparsers)`` / ``_cmd_NAME(args)``; the library code it
calls takes typed configs and never parses arguments itself.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_reproduce(sub) -> None:
    from experiments.reproduce import get_reproduction, list_reproductions

    p = sub.add_parser("reproduce", help="re-run a numeric table of a paper and print ours beside theirs")
    rsub = p.add_subparsers(dest="reproduction", metavar="NAME", required=True)
    for name in list_reproductions():
        rep = get_reproduction(name)
        rp = rsub.add_parser(name, help=rep.summary, description=rep.summary)
        rp.add_argument("--out", type=Path, default=Path("reports") / name,
                        help="folder for the CSV and markdown tables (default: %(default)s)")
        rp.add_argument("--no-progress", action="store_true", help="hide progress bars")
        rep.add_arguments(rp)
        rp.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args) -> int:
    from experiments.report.tables import markdown_table
    from experiments.reproduce import get_reproduction

    rep = get_reproduction(args.reproduction)
    config = rep.config_from_args(args)
    result = rep.execute(config, args.out, progress=not args.no_progress)
    print(markdown_table(result.table))
    for note in result.notes:
        print(f"- {note}")
    for v in result.verdicts:
        print(f"{v.claim_id}: {v.status} - {v.evidence}")
    print("wrote " + ", ".join(str(f) for f in result.files))
    return 0


def add_audit(sub) -> None:
    from experiments.audit.run import PROFILES

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
    from experiments.audit.run import EmpiricalOptions, run_audit
    from experiments.claims import VERDICTS
    from experiments.report.tables import markdown_table

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


def add_claims(sub) -> None:
    p = sub.add_parser("claims", help="list the claims registry (id, kind, how it is settled)")
    p.add_argument("--paper", default=None, help="only this paper (NRL, ND, OAI, RN, IM)")
    p.set_defaults(func=_cmd_claims)


def _cmd_claims(args) -> int:
    import pandas as pd

    from analysis.validation import check_choice
    from experiments.claims import CLAIMS, PAPERS
    from experiments.report.tables import markdown_table

    if args.paper is not None:
        check_choice("--paper", args.paper, PAPERS)
    rows = [{"claim": c.id, "kind": c.kind, "settled by": c.settled_by, "where": c.where}
            for c in CLAIMS if args.paper in (None, c.paper)]
    print(markdown_table(pd.DataFrame(rows)))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockaudit",
        description="Audit the claims made for optimization-inspired neural-network blocks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _subcommand_adders():
        add(sub)
    return parser


# Modules that define ``add_subcommand(subparsers)``; each sets ``func`` on its parser.
_SUBCOMMAND_MODULES: list[str] = ["experiments.cli.models", "experiments.cli.train", "experiments.cli.risk_gap",
                                   "experiments.cli.landscape", "experiments.cli.report", "experiments.cli.sweep"]


def _subcommand_adders():
    import importlib

    yield add_audit
    yield add_reproduce
    yield add_claims
    for mod in _SUBCOMMAND_MODULES:
        yield importlib.import_module(mod).add_subcommand


# What a user's input, files or settings cause, as opposed to bugs: the library raises these with a
# message that names the parameter or file and the fix, so the command shows that one line and no
# traceback. ``FloatingPointError`` is a run that diverged (``NonFiniteLoss``: the step, the layer
# and what to change). Any other exception is a bug and keeps its traceback; BLOCKAUDIT_TRACEBACK=1
# shows the traceback of these too.
EXPECTED_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
    FloatingPointError)
# Commands whose work is training runs, each kept once finished (and resumed from its last epoch).
_TRAINING_COMMANDS = ("train", "sweep", "audit")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        what = ("finished runs are kept, re-run the same command to resume" if args.command in _TRAINING_COMMANDS
                else "re-run the same command to start again")
        print(f"blockaudit {args.command}: interrupted; {what}", file=sys.stderr)
        return 130  # 128 + SIGINT, the shell's code for a command stopped by Ctrl-C
    except EXPECTED_ERRORS as exc:
        if os.environ.get("BLOCKAUDIT_TRACEBACK"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"blockaudit {args.command}: error: {msg}", file=sys.stderr)
        # 1: the command ran and failed (a diverged run); 2: it was given something it cannot use.
        return 1 if isinstance(exc, FloatingPointError) else 2


if __name__ == "__main__":
    sys.exit(main())
