"""Benchmark: the risk gap of a ResNet-20-sized A-ResNEst on 10,000 images (issue 3's speed target).

Target: under 2 minutes on the 2-core CPU machine, per loss. The model has random weights (the
time is dominated by the forward pass and the (PA_phi) solves, not by what the weights are), the
images are seeded synthetic 32x32 ones. Run:

    python -m experiments.benchmarks.risk_gap_speed [--images 10000] [--loss cross_entropy squared]

It prints one line per loss: seconds, and the forward-pass share measured in the same run.
"""
from __future__ import annotations

import argparse
import time

import torch

from analysis.models import build_model
from analysis.probes.risk_gap import risk_gap
from experiments.runs.data import iterate_batches, load_synthetic


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=10_000)
    p.add_argument("--model", default="a_resnest20")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--loss", nargs="+", default=["squared", "cross_entropy"])
    args = p.parse_args(argv)

    torch.manual_seed(0)
    data = load_synthetic(seed=0, n_train=args.images, n_test=256)
    model = build_model(args.model, num_classes=data.num_classes).eval()

    def batches():
        return iterate_batches(data.train_images, data.train_labels, args.batch_size, data.mean, data.std)

    start = time.perf_counter()
    with torch.no_grad():
        for x, _ in batches():
            model.pooled_block_features(x)
    forward = time.perf_counter() - start
    print(f"{args.model}, {args.images} images, {torch.get_num_threads()} threads: "
          f"forward pass alone {forward:.1f} s")
    for loss in args.loss:
        start = time.perf_counter()
        res = risk_gap(model, batches(), loss=loss)
        took = time.perf_counter() - start
        fits = sum(c.converged for c in res.certificates)
        print(f"  risk gap, {loss}: {took:.1f} s (target < 120 s); A* = {res.a_star_train:.4g}, "
              f"eps = {res.model_risk_train - res.a_star_train:.4g}, {fits}/{len(res.certificates)} fits certified")


if __name__ == "__main__":
    main()
