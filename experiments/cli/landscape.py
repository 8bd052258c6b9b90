"""``blockaudit landscape RUN_DIR`` and ``blockaudit curvature RUN_DIR``: loss landscape and Hessian of a run.

The argparse front of ``experiments.runs.probes`` (``run_landscape``, ``run_curvature``), where the
work and the files it writes are described: ``landscape.npz`` / ``.json`` / ``.png`` / ``.md`` and
``curvature.json`` / ``.png`` / ``.md`` in the run directory or ``--out``. BatchNorm is always an
explicit choice (``--bn``, default ``eval``), so a model is never evaluated in train mode by accident.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.probes.landscape import ENGINES
from experiments.runs.probes import CurvatureConfig, LandscapeConfig, run_curvature, run_landscape

__all__ = ["add_subcommand"]


def add_subcommand(subparsers) -> None:
    p = subparsers.add_parser("landscape", help="loss landscape around a trained run (filled contour or 1-D curve)",
                              description="Evaluate a seeded random-direction loss landscape (Li et al. 2018 "
                                          "filter normalisation) around RUN_DIR's weights; write landscape.npz/"
                                          "json/png/md.")
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run directory written by `blockaudit train`")
    p.add_argument("--dim", type=int, choices=(1, 2), default=2, help="1-D curve or 2-D contour (default: 2)")
    p.add_argument("--points", type=int, default=21, help="grid points per axis, >= 2 (default: %(default)s)")
    p.add_argument("--range", type=float, default=1.0, help="grid covers [-R, R] per axis (default: %(default)s)")
    p.add_argument("--norm", choices=("filter", "layer", "model"), default="filter",
                   help="direction normalisation (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the directions and the image subset")
    p.add_argument("--bn", choices=("eval", "recalibrate", "perturbed"), default="eval",
                   help="BatchNorm: trained running statistics, recomputed at every point, or moved along the "
                        "directions with the weights (default: eval)")
    p.add_argument("--samples", type=int, default=1024, help="training images to evaluate on (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--chunk-size", type=int, default=None,
                   help="grid points per batched forward (default: chosen from free memory)")
    p.add_argument("--levels", choices=("auto", "linear", "log"), default="auto",
                   help="contour level spacing; auto = log when the loss spans > 2 decades (default: auto)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="grid evaluator: auto (sequential on a CPU; on a GPU grouped where the model allows, else "
                        "vmap), sequential (one point at a time), vmap (exact, batched), grouped (P points as one "
                        "grouped-conv network), compiled "
                        "(torch.compile of vmap) (default: %(default)s)")
    p.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="precision of the grouped/compiled engines (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: %(default)s); under torchrun "
                                                   "cuda means cuda:LOCAL_RANK")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_cmd_landscape)

    c = subparsers.add_parser("curvature", help="Hessian eigenvalues, trace and spectral density of a trained run",
                              description="Top-k and most negative Hessian eigenvalues (Lanczos), Hutch++ trace "
                                          "and SLQ spectral density at RUN_DIR's weights; write curvature.json/png/md.")
    c.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="run directory written by `blockaudit train`")
    c.add_argument("--top-k", type=int, default=3, help="largest eigenvalues to report (default: %(default)s)")
    c.add_argument("--lanczos-steps", type=int, default=30, help="Lanczos steps (default: %(default)s)")
    c.add_argument("--probes", type=int, default=10, help="SLQ probe vectors; Hutch++ uses 3 products each")
    c.add_argument("--samples", type=int, default=512, help="training images (default: %(default)s)")
    c.add_argument("--module", default=None, metavar="NAME",
                   help="restrict to the parameters of this submodule (e.g. a block's name)")
    c.add_argument("--bn", choices=("eval", "batch"), default="eval",
                   help="BatchNorm: running statistics fixed, or batch statistics (default: eval)")
    c.add_argument("--seed", type=int, default=0, help="seed of the probes and the image subset")
    c.add_argument("--batch-size", type=int, default=256)
    c.add_argument("--device", default="cpu", help="torch device (default: %(default)s)")
    c.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR)")
    c.set_defaults(func=_cmd_curvature)


def _cmd_landscape(args) -> int:
    cfg = LandscapeConfig(run_dir=args.run_dir, dim=args.dim, points=args.points, range=args.range,
                          norm=args.norm, seed=args.seed, bn=args.bn, samples=args.samples,
                          batch_size=args.batch_size, chunk_size=args.chunk_size, levels=args.levels, engine=args.engine,
                          precision=args.precision, device=args.device,
                          out=args.out, progress=not args.no_progress)
    result, files = run_landscape(cfg)
    if not files:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    m = result.meta
    print(f"{m['model']} on {m['dataset']}: {' x '.join(map(str, result.shape))} grid, bn={result.bn}, "
          f"{result.num_samples} images, {m['seconds']:.2f} s")
    print(f"loss: centre {m['centre_loss']:.4g}, min {np.nanmin(result.loss):.4g}, max {np.nanmax(result.loss):.4g}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0


def _cmd_curvature(args) -> int:
    cfg = CurvatureConfig(run_dir=args.run_dir, top_k=args.top_k, lanczos_steps=args.lanczos_steps,
                          probes=args.probes, samples=args.samples, module=args.module, bn=args.bn,
                          seed=args.seed, batch_size=args.batch_size, device=args.device, out=args.out)
    s, files = run_curvature(cfg)
    print(f"{s['model']}{' / ' + s['module'] if s['module'] else ''}: dim {s['dim']}, loss {s['loss']:.4g}")
    print("top eigenvalues: " + ", ".join(f"{v:.4g}" for v in s["top_eigenvalues"])
          + f"; most negative: {s['min_eigenvalue']:.4g}; trace (Hutch++): {s['trace']['value']:.4g}")
    print("wrote " + ", ".join(str(f) for f in files))
    return 0
