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
_SUBCOMMAND_MODULES: list[str] = []


def _subcommand_adders():
    import importlib

    yield add_reproduce
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
