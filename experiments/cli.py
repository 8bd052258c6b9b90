"""The ``blockaudit`` command line.

Each subcommand is a pair ``_add_NAME(subparsers)`` / ``_cmd_NAME(args)``; the library code it
calls takes typed configs and never parses arguments itself.
"""
from __future__ import annotations

import argparse
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
                        help="folder for the CSV and markdown tables (default: reports/%(default)s)")
        rp.add_argument("--no-progress", action="store_true", help="hide progress bars")
        rep.add_arguments(rp)
        rp.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args) -> int:
    from experiments.reporting import markdown_table
    from experiments.reproduce import get_reproduction

    rep = get_reproduction(args.reproduction)
    config = rep.config_from_args(args)
    result = rep.run(config, args.out, progress=not args.no_progress)
    print(markdown_table(result.table))
    for note in result.notes:
        print(f"- {note}")
    for v in result.verdicts:
        print(f"{v.claim_id}: {v.status} - {v.evidence}")
    print("wrote " + ", ".join(str(f) for f in result.files))
    return 0


def add_audit(sub) -> None:
    from experiments.audit import PROFILES

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
    p.set_defaults(func=_cmd_audit)


def _cmd_audit(args) -> int:
    from experiments.audit import run_audit
    from experiments.claims import VERDICTS
    from experiments.reporting import markdown_table

    ids = [c.strip() for c in args.claims.split(",") if c.strip()]
    result = run_audit(args.profile, args.out, ids or None, args.hypothesis_profile,
                       progress=not args.no_progress, reproductions=not args.no_reproductions)
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
    from experiments.reporting import markdown_table

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
_SUBCOMMAND_MODULES: list[str] = ["experiments.models_cli", "experiments.train", "experiments.risk_gap_cli", "experiments.landscape_cli"]


def _subcommand_adders():
    import importlib

    yield add_audit
    yield add_reproduce
    yield add_claims
    for mod in _SUBCOMMAND_MODULES:
        yield importlib.import_module(mod).add_subcommand


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        # Library errors already name the parameter and the fix; show them without a traceback.
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"blockaudit {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
