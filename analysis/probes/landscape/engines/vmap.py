"""The ``"vmap"`` engine: the exact batched path.

Each chunk of K points goes through ONE batched forward: ``torch.func.vmap`` over K parameter vectors
of ``torch.func.functional_call`` on a functional copy of the model (``analysis.probes.batches``:
BatchNorm as an explicit affine form, never the caller's model, in eval mode so dropout is off).
``bn="recalibrate"`` collects every point's batch statistics in the same vmapped pass first.
"""
from __future__ import annotations

import contextlib

import torch
from torch.func import functional_call, vmap

from analysis.probes.batches import functional_copy
from analysis.probes.landscape.engines.base import ChunkFn, Engine, EngineRequest, register_engine
from analysis.probes.landscape.problem import Problem, moved, moved_statistics

__all__ = ["VmapEngine", "vmap_chunk_fn"]


def _autocast(device: torch.device, precision: str):
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=getattr(torch, precision))


def vmap_chunk_fn(model, problem: Problem, precision: str, compile_fn: bool) -> ChunkFn:
    """Chunk evaluator of the vmap engine: coeff (K, ndir) -> (summed loss (K,), correct (K,)).

    ``compile_fn``: ``torch.compile`` the vmapped metrics (the ``"compiled"`` engine).
    """
    clone, bns = functional_copy(model)
    buffers = {k: v.detach() for k, v in clone.named_buffers()}
    names = list(problem.weights)
    ref = next(iter(problem.weights.values()))
    loss = problem.loss

    def batch_metrics(params, bufs, x, y):
        with _autocast(ref.device, precision):
            logits = functional_call(clone, (params, bufs), (x,))
        logits = logits.float() if precision != "float32" else logits
        per_sample = loss(logits, y)
        correct = (logits.argmax(dim=-1) == y).sum()
        return per_sample.sum(), correct

    def collect_stats(params, x):
        functional_call(clone, (params, buffers), (x,))
        stats = [fbn.collected for _, fbn in bns if fbn.tracks]
        return [s[0] for s in stats], [s[1] for s in stats]

    metrics_fn = vmap(batch_metrics, in_dims=(0, None, None, None))
    metrics_point_bufs_fn = vmap(batch_metrics, in_dims=(0, 0, None, None))
    if compile_fn:
        metrics_fn, metrics_point_bufs_fn = torch.compile(metrics_fn), torch.compile(metrics_point_bufs_fn)
    collect_fn = vmap(collect_stats, in_dims=(0, None))
    tracked = [(name, fbn) for name, fbn in bns if fbn.tracks]

    def point_buffers(changed: dict, k: int) -> dict:
        # every buffer needs the point dimension under in_dims=0; the unchanged ones are shared
        return {n: changed.get(n, v.unsqueeze(0).expand(k, *v.shape)) for n, v in buffers.items()}

    def chunk(coeff: torch.Tensor):
        k = coeff.shape[0]
        params = moved(problem.weights, problem.vectors, coeff, names)
        if problem.bn_mode == "recalibrate":
            for _, fbn in bns:
                fbn.mode = "collect"
            sums_m = sums_v = None
            for x, _ in problem.recal:
                means, vars_ = collect_fn(params, x)
                sums_m = means if sums_m is None else [a + b for a, b in zip(sums_m, means)]
                sums_v = vars_ if sums_v is None else [a + b for a, b in zip(sums_v, vars_)]
            for _, fbn in bns:
                fbn.mode = "eval"
                fbn.collected = None
            recalibrated = {}
            for (name, _), m, v in zip(tracked, sums_m, sums_v):
                recalibrated[f"{name}.running_mean"] = m / len(problem.recal)
                recalibrated[f"{name}.running_var"] = v / len(problem.recal)
            bufs, fn = point_buffers(recalibrated, k), metrics_point_bufs_fn
        elif problem.bn_mode == "perturbed":
            bufs, fn = point_buffers(moved_statistics(problem, coeff), k), metrics_point_bufs_fn
        else:
            bufs, fn = buffers, metrics_fn
        tot_loss = torch.zeros(k, dtype=torch.float64, device=ref.device)
        tot_correct = torch.zeros(k, dtype=torch.float64, device=ref.device)
        for x, y in problem.batches:
            l, c = fn(params, bufs, x, y)
            tot_loss += l.double()
            tot_correct += c.double()
        return tot_loss, tot_correct

    return chunk


@register_engine
class VmapEngine(Engine):
    """The exact path in the model's own dtype: float32 only (reduced precision raises before any work)."""

    name = "vmap"

    def check_precision(self, precision: str) -> None:
        if precision != "float32":
            raise ValueError(f"precision={precision!r} needs engine='grouped', 'compiled' or 'auto'; the vmap "
                             "engine is the exact float path (the model's own dtype)")

    def build(self, request: EngineRequest) -> ChunkFn:
        return vmap_chunk_fn(request.model, request.problem, request.precision, False)
