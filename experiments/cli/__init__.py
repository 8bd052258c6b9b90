"""The ``blockaudit`` command line: one module per subcommand, each with ``add_subcommand(subparsers)``.

A subcommand module parses arguments into the library's typed configs and calls the library; the
library never parses arguments itself. ``main`` turns the errors a user's input causes into one line.
"""
from __future__ import annotations

import argparse
import os
import sys

from experiments.cli import (audit, audit_block, claims, landscape, models, report, reproduce, risk_gap, sweep,
                             train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blockaudit",
        description="Audit the claims made for optimization-inspired neural-network blocks.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.add_subcommand(sub)
    return parser


# The subcommand modules, in the order ``blockaudit --help`` lists them; each sets ``func`` on its parser.
SUBCOMMANDS = (audit, audit_block, reproduce, claims, models, train, sweep, risk_gap, landscape, report)


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
