"""``blockaudit claims``: list the claims registry (experiments.claims): id, kind, the check that settles it."""
from __future__ import annotations

import pandas as pd

from analysis.validation import check_choice
from experiments.claims import CLAIMS, PAPERS
from experiments.report.tables import markdown_table

__all__ = ["add_subcommand"]


def add_subcommand(sub) -> None:
    p = sub.add_parser("claims", help="list the claims registry (id, kind, how it is settled)")
    p.add_argument("--paper", default=None, help="only this paper (NRL, ND, OAI, RN, IM)")
    p.set_defaults(func=_cmd_claims)


def _cmd_claims(args) -> int:
    if args.paper is not None:
        check_choice("--paper", args.paper, PAPERS)
    rows = [{"claim": c.id, "kind": c.kind, "settled by": c.check_label, "where": c.where}
            for c in CLAIMS if args.paper in (None, c.paper)]
    print(markdown_table(pd.DataFrame(rows)))
    return 0
