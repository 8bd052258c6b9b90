"""``blockaudit sweep``: train a sweep file's runs into a results store (experiments.runs.sweep)."""
from __future__ import annotations

import sys
from pathlib import Path

from experiments.report.tables import markdown_table
from experiments.runs.sweep import DEFAULT_STORE, SweepFailed, load_sweep, run_status, run_sweep


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="train models x seeds (x a grid) from a TOML/YAML sweep file into a results store",
        description="Train every run of a sweep file (skipping finished runs, resuming unfinished ones) and write "
                    "STORE/sweeps/<name>/results.csv, summary.csv and summary.md.")
    p.add_argument("config", metavar="CONFIG", help="sweep file (.toml/.yaml) or the name of a shipped one in "
                                                    "experiments/configs, e.g. digits_smoke")
    p.add_argument("--store", type=Path, default=DEFAULT_STORE, help="results store (default: %(default)s)")
    p.add_argument("--device", default=None, help="run every run on this device, e.g. cuda (default: the file's)")
    p.add_argument("--workers", type=int, default=1, help="runs trained at once in separate processes (default: 1)")
    p.add_argument("--only", nargs="+", action="extend", default=None, metavar="LABEL",
                   help="train only these model labels (the summary still covers the whole sweep)")
    p.add_argument("--max-epochs-this-call", type=int, default=None, metavar="K",
                   help="stop each run after K more epochs (resume later by re-running)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their state; train nothing")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args) -> int:
    spec = load_sweep(args.config)
    if args.dry_run:
        status = run_status(spec, args.store)
        if args.only:
            unknown = [lab for lab in args.only if lab not in spec.labels]
            if unknown:
                raise ValueError(f"--only: unknown label(s) {', '.join(map(repr, unknown))}; labels: "
                                 f"{', '.join(spec.labels)}")
            status = status[status["label"].isin(args.only)]
        print(markdown_table(status))
        print(f"{int((status['status'] == 'done').sum())} of {len(status)} runs already done; "
              f"store {args.store}")
        return 0
    if args.no_progress:
        status = run_status(spec, args.store)
        if args.only:
            status = status[status["label"].isin(args.only)]
        print(f"{int((status['status'] == 'done').sum())} of {len(status)} runs already done")
    code = 0
    try:
        table = run_sweep(spec, args.store, device=args.device, workers=args.workers,
                          progress=not args.no_progress, max_epochs_this_call=args.max_epochs_this_call,
                          only=args.only)
    except SweepFailed as exc:
        print(f"blockaudit sweep: error: {exc}", file=sys.stderr)
        table, code = exc.results, 1
    out = args.store / "sweeps" / spec.name
    print((out / "summary.md").read_text())
    print(f"wrote {out / 'results.csv'} ({len(table)} rows), {out / 'summary.csv'}, {out / 'summary.md'}")
    return code
