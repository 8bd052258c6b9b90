"""Benchmark: the embedded default audit (``blockaudit audit``, quick profile) from an empty store.

Goal: at most 6 minutes on a 2-core CPU machine. Writes ``<record>/quick-t<threads>.json`` with the
wall time, each stage's time (theory checks, empirical stage with the background reproductions),
the verdict of every claim and the provenance (commit, machine, thread count), so that two runs
with other thread counts can be compared claim by claim (``--compare A.json B.json``).

    python -m experiments.benchmarks.audit_time --out reports --store runs
    OMP_NUM_THREADS=1 python -m experiments.benchmarks.audit_time --out /tmp/a1 --store /tmp/a1/runs
    python -m experiments.benchmarks.audit_time --compare reports/benchmarks/audit-quick/quick-t2.json \
        reports/benchmarks/audit-quick/quick-t1.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from experiments.audit.run import EmpiricalOptions, run_audit
from experiments.runs.provenance import provenance

GOAL_SECONDS = 6 * 60
DEFAULT_RECORD = Path("reports/benchmarks/audit-quick")


def run(out: Path, store: Path, record: Path) -> dict:
    if store.exists():
        other = sorted(p.name for p in store.iterdir() if p.name not in ("runs", "sweeps"))
        if other:
            raise SystemExit(f"--store {store} holds more than a results store ({', '.join(other)}); "
                             "give an empty or a scratch folder: the benchmark deletes it first")
        shutil.rmtree(store)  # "from an empty store" is the measured case
    t0 = time.perf_counter()
    result = run_audit("quick", out, empirical=EmpiricalOptions(store=store), progress=False)
    wall = time.perf_counter() - t0
    payload = {
        "benchmark": "quick audit from an empty store",
        "wall_seconds": round(wall, 1),
        "goal_seconds": GOAL_SECONDS,
        "within_goal": wall <= GOAL_SECONDS,
        "theory_seconds": result.meta["theory_seconds"],
        "empirical_seconds": result.meta["empirical_seconds"],
        "torch_threads": torch.get_num_threads(),
        "counts": result.counts(),
        "verdicts": {v.claim_id: v.status for v in result.verdicts},
        "provenance": provenance("cpu"),
    }
    record.mkdir(parents=True, exist_ok=True)
    path = record / f"quick-t{torch.get_num_threads()}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"quick audit: {wall:.1f} s (goal {GOAL_SECONDS} s), {payload['counts']}; wrote {path}")
    return payload


def compare(a: Path, b: Path) -> int:
    va, vb = (json.loads(Path(p).read_text())["verdicts"] for p in (a, b))
    differ = {k: (va.get(k), vb.get(k)) for k in sorted(set(va) | set(vb)) if va.get(k) != vb.get(k)}
    print(f"{len(va)} claims; {len(differ)} verdict(s) differ" + "".join(f"\n  {k}: {x} vs {y}" for k, (x, y) in
                                                                     differ.items()))
    return 1 if differ else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("reports"), help="audit output folder (default: %(default)s)")
    p.add_argument("--store", type=Path, default=Path("runs"), help="store, emptied first (default: %(default)s)")
    p.add_argument("--record", type=Path, default=DEFAULT_RECORD, help="benchmark JSON folder (default: %(default)s)")
    p.add_argument("--compare", nargs=2, type=Path, metavar="JSON", help="compare two records' verdicts and exit")
    args = p.parse_args(argv)
    if args.compare:
        return compare(*args.compare)
    run(args.out, args.store, args.record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
