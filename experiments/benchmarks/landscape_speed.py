"""Benchmark: loss-landscape grid evaluation and top Hessian eigenvalue of ResNet-20 (issue 6).

What it measures, all in one run on one device (ratios, never absolute targets in tests):

- ``loss_landscapes.random_plane`` (the loss-landscapes package, 3.0.6): on the CPU it runs; on
  CUDA it fails with a device mismatch (it draws its directions on the CPU), which is recorded
  with the error text; skipped with the reason when the package is not installed.
- ``loss_landscape_reference``: our sequential evaluator (one point at a time, the model's own
  layers), on at most ``--reference-points`` points (points/s extrapolates).
- ``loss_landscape`` with ``engine="vmap"`` (float32): the exact batched path, and the float32
  ground truth every other engine's loss is compared with (max relative error).
- the fast engines: ``grouped`` (``GroupedForward``: P points as one grouped-convolution network;
  compiled with ``torch.compile`` on CUDA) in float32 / bfloat16 / float16, and ``compiled``
  (``torch.compile(vmap(functional_call))``) in bfloat16. Points/s is the steady state: the first
  chunk (compilation and warm-up) is left out (``result.meta["timing"]``).
- the best single forward of the batch (CUDA: ``torch.compile``d bfloat16 channels_last under
  autocast, CUDA-event timed after warm-up, minimum of ``--reps``; CPU: eager float32), giving
  efficiency = points/s x single-forward time (1.0: a grid point costs one best forward).
- top Hessian eigenvalue: ``hessian_eigenvalues`` (Lanczos, no host sync in the loop) against
  ``power_iteration_eigenvalues`` (PyHessian's method: one HVP at a time, a ``.item()``-style host
  sync per step), same model, data and loss.

The model is ResNet-20 (``build_model("resnet20")``) after ``--warm-steps`` SGD steps on the
batch (so BatchNorm statistics and biases are not at their initial values; a fresh ResNet-20
makes loss-landscapes' filter normalisation divide by zero). Run:

    # the H100 run (about 3 minutes):
    python -m experiments.benchmarks.landscape_speed --data /path/cifar10-jpeg.zip --out OUT
    # the 2-core CPU comparison with loss-landscapes:
    python -m experiments.benchmarks.landscape_speed --device cpu --points 11 --images 256 \\
        --engines auto grouped --precisions float32 --out reports/benchmarks/landscape-cpu

Writes ``OUT/landscape_speed.json`` (everything), ``OUT/landscape_speed.csv`` (one row per
evaluator) and ``OUT/landscape_speed.md``.
"""
from __future__ import annotations

import argparse
import copy
import csv
import importlib.metadata
import json
import math
import platform
import time
import traceback
from pathlib import Path

import loss_landscapes
import loss_landscapes.metrics
import numpy as np
import torch
import torch.nn.functional as F

from analysis.models import build_model
from analysis.probes.curvature import HessianOperator, hessian_eigenvalues, power_iteration_eigenvalues
from analysis.probes.landscape import grid_axis, loss_landscape, loss_landscape_reference, random_directions
from experiments.runs.data import iterate_batches, load_cifar10, load_cifar10_jpeg, load_synthetic
from experiments.runs.provenance import provenance


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_images(args):
    """The dataset, a seeded subset of ``args.images`` training indices, and a description of the source."""
    if args.synthetic:
        data = load_synthetic(seed=0, n_train=args.images, n_test=16, num_classes=10)
        source = f"synthetic ({args.images} images)"
    else:
        path = Path(args.data) if args.data else None
        if path is not None and path.is_dir() and (path / "data_batch_1").exists():
            data = load_cifar10(path.parent if path.name == "cifar-10-batches-py" else path)
        else:
            per_class = math.ceil(args.images / 10) + 1
            data = load_cifar10_jpeg(path, limit=per_class, progress=False)
        source = f"CIFAR-10 training images from {path or 'the default data roots'}"
    gen = torch.Generator().manual_seed(0)
    idx = torch.randperm(data.train_labels.shape[0], generator=gen)[:args.images]
    return data, idx, source


def _batch(args, device):
    data, idx, source = _load_images(args)
    (x, y), = list(iterate_batches(data.train_images[idx], data.train_labels[idx], args.images, data.mean, data.std))
    return x.to(device), y.to(device), source


def _warm_model(x, y, steps: int, device):
    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=10).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def _best_forward(model, x, device, reps: int) -> tuple[float, str]:
    """Seconds of the best single forward of the batch and how it was run."""
    if device.type == "cuda":
        m = copy.deepcopy(model).to(memory_format=torch.channels_last)
        xc = x.contiguous(memory_format=torch.channels_last)
        fwd = torch.compile(m)
        how = "torch.compile, bfloat16 autocast, channels_last, CUDA events"
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(5):
                fwd(xc)
            _sync(device)
            times = []
            for _ in range(reps):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fwd(xc)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
        return min(times), how
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return min(times), "eager float32 (CPU)"


def _loss_landscapes_row(model, x, y, steps: int, device) -> dict:
    """loss-landscapes' random_plane on the same model and data: time or the reason it did not run."""
    row = {"evaluator": "loss-landscapes random_plane", "points": steps * steps}
    try:
        row["version"] = importlib.metadata.version("loss-landscapes")
    except Exception as exc:  # ImportError or a broken install
        row.update(status="skipped", reason=f"import failed: {type(exc).__name__}: {exc}")
        return row
    metric = loss_landscapes.metrics.Loss(F.cross_entropy, x, y)
    torch.manual_seed(0)
    try:
        t0 = time.perf_counter()
        loss_landscapes.random_plane(copy.deepcopy(model), metric, distance=1, steps=steps,
                                     normalization="filter", deepcopy_model=True)
        _sync(device)
        seconds = time.perf_counter() - t0
        row.update(status="ok", seconds=seconds, points_per_s=steps * steps / seconds)
    except Exception as exc:
        row.update(status="failed", reason=f"{type(exc).__name__}: {exc}".strip()[:500])
    return row


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="cifar10-jpeg.zip (or extracted folder) or cifar-10-batches-py")
    p.add_argument("--synthetic", action="store_true", help="seeded synthetic images instead of CIFAR-10 (smoke)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--images", type=int, default=1024)
    p.add_argument("--points", type=int, default=21, help="grid points per axis (grid is points x points)")
    p.add_argument("--range", type=float, default=1.0)
    p.add_argument("--chunk-size", type=int, default=None, help="grid points per batched forward (default: 48 on "
                                                               "CUDA, 8 on CPU)")
    p.add_argument("--engines", nargs="*", default=["grouped", "compiled"],
                   choices=["auto", "sequential", "grouped", "compiled"],
                   help="engines of loss_landscape to time (auto = the default: sequential on a CPU)")
    p.add_argument("--precisions", nargs="*", default=["float32", "bfloat16", "float16"],
                   choices=["float32", "bfloat16", "float16"], help="precisions of the grouped engine")
    p.add_argument("--reference-points", type=int, default=None,
                   help="points for the sequential reference (default: 441 on CUDA, 25 on CPU)")
    p.add_argument("--skip-loss-landscapes", action="store_true")
    p.add_argument("--warm-steps", type=int, default=30)
    p.add_argument("--reps", type=int, default=20, help="repetitions of the single forward")
    p.add_argument("--eig-steps", type=int, default=10, help="Lanczos steps for the top eigenvalue (0: skip)")
    p.add_argument("--eig-images", type=int, default=None, help="images for the Hessian (default: --images)")
    p.add_argument("--power-iters", type=int, default=100)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
    args.out.mkdir(parents=True, exist_ok=True)
    x, y, source = _batch(args, device)
    model = _warm_model(x, y, args.warm_steps, device)
    dirs = random_directions(model, 2, seed=0)
    axis = grid_axis(-args.range, args.range, args.points)
    npoints = args.points ** 2
    chunk = args.chunk_size or (48 if device.type == "cuda" else 8)
    rows: list[dict] = []
    env = {"torch": torch.__version__, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
           else f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)",
           "python": platform.python_version()}
    print(f"landscape_speed on {env['device']}: ResNet-20, {x.shape[0]} images, {args.points}x{args.points} grid")

    t_fwd, how = _best_forward(model, x, device, args.reps)
    print(f"  best single forward: {t_fwd * 1e3:.3f} ms ({how})")

    def add(row):
        if row.get("points_per_s"):
            row["efficiency"] = row["points_per_s"] * t_fwd
        rows.append(row)
        shown = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}
        print("  " + ", ".join(f"{k}={v}" for k, v in shown.items()))

    # the float32 ground truth: the exact vmap engine on the whole grid
    t0 = time.perf_counter()
    truth = loss_landscape(model, dirs, (x, y), axis, axis, chunk_size=chunk, engine="vmap")
    seconds = time.perf_counter() - t0
    timing = truth.meta["timing"]
    add({"evaluator": "ours vmap float32 (exact path)", "points": npoints, "seconds": seconds,
         "points_per_s": timing["rest_points"] / timing["rest_s"] if timing["rest_s"] > 0 else npoints / seconds,
         "max_rel_error": 0.0, "status": "ok"})

    if not args.skip_loss_landscapes:
        add(_loss_landscapes_row(model, x, y, args.points, device))

    nref = min(npoints, args.reference_points or (npoints if device.type == "cuda" else 25))
    # the reference on the first nref rows-major points: a 1-D slice of alphas x all betas
    rows_needed = math.ceil(nref / args.points)
    t0 = time.perf_counter()
    ref = loss_landscape_reference(model, dirs, (x, y), axis[:rows_needed], axis)
    _sync(device)
    seconds = time.perf_counter() - t0
    err = float(np.max(np.abs(ref.loss / truth.loss[:rows_needed] - 1)))
    add({"evaluator": "ours reference (sequential, eager float32)", "points": ref.loss.size, "seconds": seconds,
         "points_per_s": ref.loss.size / seconds, "max_rel_error": err, "status": "ok"})

    configs = []
    for engine in args.engines:
        if engine == "grouped":
            configs += [("grouped", pr) for pr in args.precisions]
        elif engine in ("auto", "sequential"):
            configs.append((engine, "float32"))
        else:
            configs.append(("compiled", "bfloat16" if device.type == "cuda" else "float32"))
    for engine, precision in configs:
        compiled = engine == "compiled" or (device.type == "cuda" and engine != "sequential")
        name = f"ours {engine} {precision}" + (" (torch.compile)" if compiled else " (eager)")
        try:
            torch._dynamo.reset()
            t0 = time.perf_counter()
            # float32 activations take twice the memory of 16-bit ones (a 48-point float32 chunk ran
            # out of the H100's 80 GB under torch.compile), so float32 chunks are a third as large
            size = chunk if precision != "float32" or engine == "compiled" else max(1, chunk // 3)
            res = loss_landscape(model, dirs, (x, y), axis, axis, chunk_size=size, engine=engine, precision=precision)
            seconds = time.perf_counter() - t0
            timing = res.meta["timing"]
            pps = timing["rest_points"] / timing["rest_s"] if timing["rest_s"] > 0 else npoints / seconds
            add({"evaluator": name, "points": npoints, "seconds": seconds, "first_chunk_s": timing["first_chunk_s"],
                 "points_per_s": pps, "max_rel_error": float(np.max(np.abs(res.loss / truth.loss - 1))),
                 "max_abs_accuracy_diff": float(np.max(np.abs(res.accuracy - truth.accuracy))),
                 "chunk_size": size,
                 # points recomputed in float32 because the reduced precision overflowed there (their
                 # time is in points_per_s)
                 "float32_fallback_points": len(res.meta.get("float32_fallback_points", [])),
                 "engine_used": res.meta["engine"], "status": "ok"})
        except Exception as exc:
            add({"evaluator": name, "status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500],
                 "traceback": traceback.format_exc()[-2000:]})

    eig = {}
    if args.eig_steps > 0:
        n_eig = args.eig_images or x.shape[0]
        op = HessianOperator(model, (x[:n_eig], y[:n_eig]), bn="eval")
        op.matvec(torch.randn(op.dim, device=device))  # warm-up (cuDNN autotuning, allocator)
        _sync(device)
        t0 = time.perf_counter()
        lz = hessian_eigenvalues(op, 1, num_steps=args.eig_steps, seed=0)
        _sync(device)
        t_lz = time.perf_counter() - t0
        t0 = time.perf_counter()
        pw = power_iteration_eigenvalues(op, 1, max_iter=args.power_iters, tol=1e-3, seed=0)
        _sync(device)
        t_pw = time.perf_counter() - t0
        eig = {"images": n_eig, "lanczos": {"value": float(lz.values[0]), "error_bound": float(lz.error_bounds[0]),
                                            "matvecs": lz.num_matvecs, "seconds": t_lz},
               "power_iteration": {"value": float(pw.values[0]), "matvecs": pw.num_matvecs, "seconds": t_pw},
               "speedup": t_pw / t_lz,
               # the methods stop after different numbers of products (Lanczos: a fixed step count;
               # power iteration: a 1e-3 change of the Rayleigh quotient), so the time per product
               # is the like-for-like figure: batched bookkeeping vs a host sync every step
               "per_hvp_speedup": (t_pw / pw.num_matvecs) / (t_lz / lz.num_matvecs)}
        print(f"  top eigenvalue: Lanczos {lz.values[0]:.5g} (+-{lz.error_bounds[0]:.2g}, {lz.num_matvecs} HVPs, "
              f"{t_lz:.2f} s); power iteration {pw.values[0]:.5g} ({pw.num_matvecs} HVPs, {t_pw:.2f} s)")

    ll = next((r for r in rows if r["evaluator"].startswith("loss-landscapes")), None)
    if ll and ll.get("status") == "ok":
        for r in rows:
            if r.get("points_per_s") and r is not ll:
                r["ratio_vs_loss_landscapes"] = r["points_per_s"] / ll["points_per_s"]
    summary = {"env": env, "source": source, "images": int(x.shape[0]), "grid": [args.points, args.points],
               "range": args.range, "chunk_size": chunk, "warm_steps": args.warm_steps,
               "best_forward_s": t_fwd, "best_forward_how": how, "rows": rows, "eigenvalue": eig,
               "loss_range": [float(np.nanmin(truth.loss)), float(np.nanmax(truth.loss))],
               "argv": argv}
    summary["provenance"] = provenance(str(args.device))  # commit, packages, machine, command
    (args.out / "landscape_speed.json").write_text(json.dumps(summary, indent=2))
    cols = ["evaluator", "status", "points", "seconds", "points_per_s", "efficiency", "max_rel_error",
            "ratio_vs_loss_landscapes", "reason"]
    with open(args.out / "landscape_speed.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    (args.out / "landscape_speed.md").write_text(_markdown(summary))
    print(f"wrote {args.out}/landscape_speed.{{json,csv,md}}")
    return summary


def _fmt(v, spec=".4g") -> str:
    return "" if v is None else format(v, spec) if isinstance(v, (int, float)) else str(v)


def _markdown(s: dict) -> str:
    lines = [
        "# Loss-landscape evaluation speed (ResNet-20)",
        "",
        f"Device: {s['env']['device']}; torch {s['env']['torch']}. Data: {s['source']}, {s['images']} images in one "
        f"batch; grid {s['grid'][0]} x {s['grid'][1]} over [-{s['range']:g}, {s['range']:g}]^2, filter-normalised "
        f"seeded Gaussian directions; chunk size {s['chunk_size']}; ResNet-20 after {s['warm_steps']} SGD steps. "
        f"Loss on the grid spans {s['loss_range'][0]:.4g} .. {s['loss_range'][1]:.4g}.",
        "",
        f"Best single forward of the batch: {s['best_forward_s'] * 1e3:.3f} ms ({s['best_forward_how']}). "
        "Efficiency = points/s x that time (1.0: each grid point costs one best forward). Errors: max relative "
        "difference of the loss from the float32 vmap grid. Fast engines' points/s leave out the first chunk "
        "(compilation, warm-up).",
        "",
        "| evaluator | status | points | points/s | efficiency | max rel. error | x loss-landscapes |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        status = r.get("status", "")
        if r.get("reason"):
            status += f": {r['reason'][:160]}"
        lines.append(f"| {r['evaluator']} | {status} | {_fmt(r.get('points'))} | {_fmt(r.get('points_per_s'))} | "
                     f"{_fmt(r.get('efficiency'), '.3f')} | {_fmt(r.get('max_rel_error'), '.2e')} | "
                     f"{_fmt(r.get('ratio_vs_loss_landscapes'), '.2f')} |")
    e = s.get("eigenvalue")
    if e:
        lz, pw = e["lanczos"], e["power_iteration"]
        lines += [
            "",
            f"Top Hessian eigenvalue ({e['images']} images, BatchNorm eval): Lanczos {lz['value']:.6g} "
            f"(bound {lz['error_bound']:.2g}) in {lz['seconds']:.2f} s / {lz['matvecs']} HVPs; PyHessian-style power "
            f"iteration {pw['value']:.6g} in {pw['seconds']:.2f} s / {pw['matvecs']} HVPs; speed-up "
            f"{e['speedup']:.2f}x in total"
            + (f", {e['per_hvp_speedup']:.2f}x per HVP" if "per_hvp_speedup" in e else "") + ".",
        ]
    lines += ["", "Raw numbers: `landscape_speed.json`, `landscape_speed.csv`.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
