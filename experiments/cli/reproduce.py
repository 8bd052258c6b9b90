"""``blockaudit reproduce NAME``: re-run a numeric table of a paper (experiments.reproduce) and print ours beside theirs."""
from __future__ import annotations

from pathlib import Path

from experiments.report.tables import markdown_table
from experiments.reproduce import get_reproduction, list_reproductions

__all__ = ["add_subcommand"]


def add_subcommand(sub) -> None:
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
