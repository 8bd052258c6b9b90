"""Zoo training throughput and torch.compile coverage (issue: the block library and model zoo).

Throughput: forward + backward + SGD step of a model on a batch of random 32x32 images already on
the device (batch 512 by default), images/s timed with CUDA events over ``--steps`` steps after
``--warmup`` steps (which absorb torch.compile's compilation), for each model in each mode:

- ``eager``      bf16 autocast, channels_last;
- ``compiled``   the same under ``torch.compile`` (default mode).

The ratio that the issue sets a target for is Newton-CGNet-56 / ResNet-110 images/s (>= 0.70: the
two have the same 109 3x3 convolutions and nearly the same parameters), measured in the same run;
``newton_cgnet56_unfused`` (``fuse_branches=False``) shows what the branch fusion buys.

Compile check (``--compile-check``): every registered model, compiled, runs one bf16 training step
and one eval forward on a batch of 8; the outcome (ok, or the error's first line) per model, in
parallel worker processes (compilation is CPU-bound), each model bounded by ``--compile-timeout``.

    python -m experiments.benchmarks.zoo_throughput --out reports/benchmarks/zoo-h100 --compile-check
    python -m experiments.benchmarks.zoo_throughput --smoke --out /tmp/zoo   # CPU, tiny, for the tests

Writes ``throughput.csv``, ``compile_check.csv``, ``summary.json`` and ``README.md`` (markdown) to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from analysis.models import build_model, count_parameters, list_models
from experiments.runs.provenance import provenance

DEFAULT_MODELS = ("resnet20", "newton_resnet_2211", "newton_cgnet56", "resnet110", "newton_cgnet56_unfused")
#: benchmark label -> (registered model, options)
VARIANTS = {"newton_cgnet56_unfused": ("newton_cgnet56", {"fuse_branches": False})}


def _resolve(label: str) -> tuple[str, dict]:
    return VARIANTS.get(label, (label, {}))


def _train_step_fn(model, optimizer, device: torch.device, bf16: bool):
    def step(x, y):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()
    return step


def measure_throughput(label: str, *, mode: str, batch: int, steps: int, warmup: int, device: torch.device,
                       channels_last: bool = True, bf16: bool = True) -> dict:
    """Images/s of one model's training step in ``mode`` ("eager" or "compiled")."""
    name, options = _resolve(label)
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, **options).to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    forward_model = torch.compile(model) if mode == "compiled" else model
    step = _train_step_fn(forward_model, optimizer, device, bf16 and device.type == "cuda")
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,), device=device)
    t0 = time.perf_counter()
    for _ in range(warmup):
        loss = step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            loss = step(x, y)
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        t1 = time.perf_counter()
        for _ in range(steps):
            loss = step(x, y)
        seconds = time.perf_counter() - t1
        peak = float("nan")
    if not torch.isfinite(loss):
        raise FloatingPointError(f"{label} ({mode}): non-finite loss {float(loss)} during the benchmark")
    return {"model": label, "mode": mode, "batch": batch, "steps": steps, "images_per_s": batch * steps / seconds,
            "ms_per_step": 1000.0 * seconds / steps, "warmup_s": warm_s, "peak_mib": peak,
            "params": count_parameters(name, **options)}


# --- compile check, one model per subprocess -----------------------------------------------------

def _compile_one(name: str, device: str) -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(name, num_classes=10).to(dev).to(memory_format=torch.channels_last).train()
    compiled = torch.compile(model)
    x = torch.randn(8, 3, 32, 32, device=dev).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (8,), device=dev)
    t0 = time.perf_counter()
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        loss = F.cross_entropy(compiled(x), y)
    loss.backward()
    model.eval()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
        eager_out = model(x).float()
        compiled_out = compiled(x).float()
    # bf16 carries ~3 significant digits; different kernels may round differently, so compare at 5e-2
    # of the logits' scale: a wrong graph (dropped branch, wrong BN mode) is off by O(1).
    scale = float(eager_out.abs().max()) + 1e-6
    err = float((eager_out - compiled_out).abs().max()) / scale
    if not torch.isfinite(loss) or err > 5e-2:
        return {"model": name, "status": "wrong", "detail": f"loss {float(loss):.4g}, eval max rel diff {err:.2e}",
                "seconds": time.perf_counter() - t0}
    return {"model": name, "status": "ok", "detail": f"eval max rel diff vs eager {err:.1e}",
            "seconds": time.perf_counter() - t0}


def _compile_in_subprocess(name: str, device: str, timeout: float) -> dict:
    cmd = [sys.executable, "-m", "experiments.benchmarks.zoo_throughput", "--compile-one", name, "--device", device]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "status": "timeout", "detail": f"no result within {timeout:.0f} s",
                "seconds": time.perf_counter() - t0}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    detail = next((line for line in reversed(err) if "Error" in line or "error" in line), err[-1] if err else "?")
    return {"model": name, "status": "fails", "detail": detail[:300], "seconds": time.perf_counter() - t0}


def compile_check(names, device: str, workers: int, timeout: float, progress: bool = True,
                  log_path: Path | None = None) -> list[dict]:
    """Compile every model in ``names`` (``workers`` at a time); each result is appended to ``log_path``
    (JSON lines) as soon as it is known, so a run stopped early keeps what it finished."""
    bar = None
    if progress:
        bar = tqdm(total=len(names), desc="compile check", unit="model")
    results = []

    def job(n):
        r = _compile_in_subprocess(n, device, timeout)
        if log_path is not None:
            with open(log_path, "a") as f:
                f.write(json.dumps(r) + "\n")
        if bar is not None:
            bar.update(1)
        return r

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(job, names))
    if bar is not None:
        bar.close()
    return results


def _markdown(rows: list[dict], checks: list[dict], env: dict) -> str:
    lines = [f"# Zoo throughput and torch.compile check ({env['device_name']})", "",
             f"torch {env['torch']}, {env['date']}; batch {rows[0]['batch'] if rows else '-'}, bf16 autocast "
             "(CUDA only), channels_last, SGD Nesterov; forward + backward + step on data already on the device; "
             "CUDA-event timing after warm-up.", "",
             "| model | params | mode | images/s | ms/step | peak MiB |", "|---|---:|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params'] / 1e6:.2f}M | {r['mode']} | {r['images_per_s']:,.0f} | "
                     f"{r['ms_per_step']:.2f} | {r['peak_mib']:.0f} |")
    ratios = ratio_summary(rows)
    if ratios:
        lines += ["", "Newton-CGNet-56 / ResNet-110 images/s (target >= 0.70):", ""]
        lines += [f"- {k}: {v:.2f}" for k, v in ratios.items()]
    if checks:
        ok = sum(c["status"] == "ok" for c in checks)
        lines += ["", f"## torch.compile check: {ok} of {len(checks)} models ok", "",
                  "| model | status | detail | s |", "|---|---|---|---:|"]
        for c in checks:
            lines.append(f"| {c['model']} | {c['status']} | {c['detail']} | {c['seconds']:.0f} |")
    return "\n".join(lines) + "\n"


def ratio_summary(rows: list[dict]) -> dict:
    by = {(r["model"], r["mode"]): r["images_per_s"] for r in rows}
    out = {}
    for mode in ("eager", "compiled"):
        for cg in ("newton_cgnet56", "newton_cgnet56_unfused"):
            if (cg, mode) in by and ("resnet110", mode) in by:
                out[f"{cg} / resnet110 ({mode})"] = by[(cg, mode)] / by[("resnet110", mode)]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("reports/benchmarks/zoo"))
    p.add_argument("--models", default=",".join(DEFAULT_MODELS))
    p.add_argument("--modes", default="eager,compiled", help="comma-separated; empty: no throughput runs")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile-check", action="store_true", help="also compile every registered model")
    p.add_argument("--compile-workers", type=int, default=8)
    p.add_argument("--compile-timeout", type=float, default=300.0)
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (batch 4, 1 step, eager only)")
    p.add_argument("--compile-one", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.compile_one:
        print(json.dumps(_compile_one(args.compile_one, args.device)))
        return 0
    device = torch.device(args.device)
    if args.smoke:
        args.batch, args.steps, args.warmup, args.modes = 4, 1, 1, "eager"
        args.models = "resnet20,newton_cgnet10"
    labels = [m for m in args.models.split(",") if m]
    valid = set(list_models()) | set(VARIANTS)
    unknown = [m for m in labels if m not in valid]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; valid: {', '.join(sorted(valid))}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rows = []
    for label in labels:
        for mode in [m for m in args.modes.split(",") if m]:
            r = measure_throughput(label, mode=mode, batch=args.batch, steps=args.steps, warmup=args.warmup,
                                   device=device)
            print(f"{label:24s} {mode:9s} {r['images_per_s']:10,.0f} img/s  ({r['ms_per_step']:.2f} ms/step, "
                  f"warm-up {r['warmup_s']:.1f} s, peak {r['peak_mib']:.0f} MiB)", flush=True)
            rows.append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    # Largest models first: they compile longest, so starting them first shortens the whole check.
    by_size = sorted(list_models(), key=lambda n: -sum(1 for _ in build_model(n).modules()))
    checks = compile_check(by_size, args.device, args.compile_workers, args.compile_timeout,
                           log_path=args.out / "compile_check.jsonl") if args.compile_check else []
    env = {"torch": torch.__version__, "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"),
           "device_name": torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"}
    args.out.mkdir(parents=True, exist_ok=True)

    pd.DataFrame(rows).to_csv(args.out / "throughput.csv", index=False)
    if checks:
        pd.DataFrame(checks).to_csv(args.out / "compile_check.csv", index=False)

    (args.out / "summary.json").write_text(json.dumps({"env": env, "throughput": rows, "ratios": ratio_summary(rows),
                                                       "compile_check": checks,
                                                       "provenance": provenance(str(device))}, indent=2))
    (args.out / "README.md").write_text(_markdown(rows, checks, env))
    print(_markdown(rows, checks, env))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
