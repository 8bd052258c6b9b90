"""How far reduced-precision landscape losses are from float32, point by point (issue 6's 1e-3 goal).

For a trained run directory, a 2-D filter-normalised grid and a batch of its dataset's test
images, every grid point runs the model's own layers three times: float32, float16 autocast and
bfloat16 autocast. The output is the relative error of each reduced precision against float32 per
point (median, 95th percentile, max), over points whose float32 loss is at least ``--min-loss``:
a cross-entropy near 0 (saturated softmax far from the minimum) has no meaningful relative error.
Points where a precision overflowed are counted separately. Slow on CPUs without native 16-bit
arithmetic (~35x float32 per forward on the 2-core machine), so keep ``--images`` small there.

    python -m experiments.benchmarks.precision_probe RUN_DIR --images 64 --points 7 --out DIR
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from analysis.probes.landscape import grid_axis, random_directions
from experiments.runs.data import load_dataset, normalize
from experiments.runs.provenance import provenance
from experiments.runs.store import load_run

PRECISIONS = ("float32", "float16", "bfloat16")


def probe(model, x, y, directions, axis) -> dict[str, np.ndarray]:
    """Mean cross-entropy at every (alpha, beta) of ``axis`` x ``axis`` in each precision."""
    clone = copy.deepcopy(model).eval()
    base = {k: v.detach().clone() for k, v in model.named_parameters()}
    own = dict(clone.named_parameters())
    n = len(axis)
    out = {p: np.zeros((n, n)) for p in PRECISIONS}
    dev = x.device.type
    with torch.no_grad():
        for i, a in enumerate(axis):
            for j, b in enumerate(axis):
                for k in own:
                    own[k].copy_(base[k] + float(a) * directions.vectors[0][k] + float(b) * directions.vectors[1][k])
                for p in PRECISIONS:
                    with torch.autocast(dev, dtype=getattr(torch, p), enabled=p != "float32"):
                        logits = clone(x)
                    out[p][i, j] = float(F.cross_entropy(logits.float(), y))
    return out


def summarize(losses: dict[str, np.ndarray], min_loss: float) -> dict:
    ref = losses["float32"]
    judged = np.isfinite(ref) & (ref >= min_loss)
    rows = {}
    for p in PRECISIONS[1:]:
        v = losses[p]
        ok = judged & np.isfinite(v)
        rel = np.abs(v[ok] / ref[ok] - 1)
        rows[p] = {"overflowed_points": int((judged & ~np.isfinite(v)).sum()), "judged_points": int(ok.sum()),
                   "median_rel_error": float(np.median(rel)), "p95_rel_error": float(np.percentile(rel, 95)),
                   "max_rel_error": float(rel.max()), "share_within_1e-3": float((rel <= 1e-3).mean())}
    return {"min_loss": min_loss, "skipped_small_loss_points": int((np.isfinite(ref) & (ref < min_loss)).sum()),
            "float32_loss_range": [float(np.nanmin(ref)), float(np.nanmax(ref))], "precisions": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--images", type=int, default=64)
    p.add_argument("--points", type=int, default=7)
    p.add_argument("--range", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="direction seed")
    p.add_argument("--min-loss", type=float, default=1e-2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    model, config = load_run(args.run_dir, map_location=args.device)
    data = load_dataset(config.dataset, **config.dataset_options)
    x = normalize(data.test_images[:args.images].to(args.device), data.mean, data.std)
    y = data.test_labels[:args.images].to(args.device)
    directions = random_directions(model, 2, seed=args.seed)
    axis = grid_axis(-args.range, args.range, args.points)
    t0 = time.perf_counter()
    losses = probe(model, x, y, directions, axis)
    summary = {"run_dir": str(args.run_dir), "model": config.model, "dataset": config.dataset,
               "images": int(x.shape[0]), "grid": [args.points, args.points], "range": args.range,
               "device": args.device, "torch": torch.__version__, "seconds": time.perf_counter() - t0,
               **summarize(losses, args.min_loss)}
    args.out.mkdir(parents=True, exist_ok=True)
    summary["provenance"] = provenance(str(args.device))  # commit, packages, machine, command
    (args.out / "precision_probe.json").write_text(json.dumps(summary, indent=2))
    np.savez_compressed(args.out / "precision_probe.npz", alphas=axis, **losses)
    for name, row in summary["precisions"].items():
        print(f"{name}: median rel. error {row['median_rel_error']:.2e}, 95th pct {row['p95_rel_error']:.2e}, "
              f"max {row['max_rel_error']:.2e}, {100 * row['share_within_1e-3']:.0f}% of {row['judged_points']} "
              f"points within 1e-3, {row['overflowed_points']} overflowed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
